"""The symlink-free walk under mount targets, with and without ``openat2``.

``openat2`` has been in Linux since 5.6; where it is missing, ``mountapi.walk`` opens one
component at a time with ``O_NOFOLLOW``. Both must refuse the same things: a symlink at
any place (``ELOOP``), a ``..`` out of the starting directory (``EXDEV``), and with
``no_xdev`` a step into another mount (``EXDEV``), and both must open the same directory
otherwise.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.errors import InvalidArgument, NotFound, PermissionDenied
from galleonfs.workers import mountapi, mounts


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """a/b/c (directories), a/link -> b, a/b/flink -> c, m/ with a tmpfs on m/sub."""
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to("b")
    (tmp_path / "a" / "b" / "flink").symlink_to("c")
    (tmp_path / "m" / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "walktest", str(tmp_path / "m" / "sub")], check=True)
    try:
        (tmp_path / "m" / "sub" / "inner").mkdir()
        yield tmp_path
    finally:
        subprocess.run(["umount", str(tmp_path / "m" / "sub")], check=True)


def _walk(base: Path, path: str, use_openat2: bool, **kwargs: bool) -> os.stat_result:
    root = os.open(base, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = mountapi.walk(root, path, os.O_PATH | os.O_DIRECTORY, use_openat2=use_openat2, **kwargs)
    finally:
        os.close(root)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "nofollow-walk"])
def test_walk_refuses_what_openat2_refuses(tree: Path, use_openat2: bool) -> None:
    assert _walk(tree, "a/b/c", use_openat2).st_ino == os.stat(tree / "a" / "b" / "c").st_ino
    assert _walk(tree, "m/sub/inner", use_openat2).st_ino == os.stat(tree / "m" / "sub" / "inner").st_ino
    for path, err in (("a/link/c", errno.ELOOP), ("a/b/flink", errno.ELOOP), ("a/link", errno.ELOOP),
                      ("../x", errno.EXDEV), ("a/../../x", errno.EXDEV), ("a/nope/c", errno.ENOENT)):
        with pytest.raises(OSError) as caught:
            _walk(tree, path, use_openat2)
        assert caught.value.errno == err, (path, caught.value)
    with pytest.raises(OSError) as crossed:
        _walk(tree, "m/sub/inner", use_openat2, no_xdev=True)
    assert crossed.value.errno == errno.EXDEV


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "nofollow-walk"])
def test_open_target_refuses_the_same_with_or_without_openat2(tree: Path, use_openat2: bool) -> None:
    roots = [str(tree)]
    for path, error, phrase in (
            (f"{tree}/a/link/new", InvalidArgument, "symbolic link"),
            (f"{tree}/a/b/flink", InvalidArgument, "symbolic link"),
            (f"{tree}/a/x/y", NotFound, "does not exist"),
            ("/etc/x", PermissionDenied, "outside"),
            (f"{tree}/m/sub", Exception, "already mounted")):
        with pytest.raises(error) as caught:
            mounts.open_target(path, roots, use_openat2=use_openat2)
        assert phrase in str(caught.value), str(caught.value)
    assert not (tree / "a" / "b" / "new").exists() and not (tree / "a" / "x").exists()
    with mounts.open_target(f"{tree}/a/b/new", roots, use_openat2=use_openat2) as target:
        assert target.created and target.path == f"{tree}/a/b/new"
    assert not (tree / "a" / "b" / "new").exists(), "a directory made for a mount that never came stays"
