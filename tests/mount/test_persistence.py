"""A tree of every kind of object survives a clean remount and a kill -9, exactly."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import RENAME_EXCHANGE, remount, renameat2

pytestmark = pytest.mark.mount

KiB = 1024


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a user can observe about the tree, except atime (reading changes it)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content: object = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                content = sorted(os.listdir(path))
            else:
                content = None
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                n: os.getxattr(path, n) for n in os.listxattr(path)}
            out[os.path.relpath(path, root)] = (
                st.st_mode, st.st_ino, st.st_uid, st.st_gid, st.st_nlink, st.st_size,
                st.st_blocks, st.st_rdev, st.st_mtime_ns, st.st_ctime_ns, content,
                sorted(xattrs.items()))
    return out


def _build(root: Path) -> None:
    os.makedirs(root / "a" / "b" / "c")
    os.makedirs(root / "x")
    (root / "a" / "small").write_bytes(b"small file")
    (root / "a" / "b" / "blocks").write_bytes(os.urandom(3 * 64 * KiB + 17))
    with open(root / "x" / "sparse", "wb") as f:
        f.seek(10 * 1024 * KiB)
        f.write(b"after a hole")
    (root / "empty").write_bytes(b"")
    os.link(root / "a" / "small", root / "x" / "hardlink")
    os.symlink("../a/small", root / "x" / "symlink")
    os.symlink("nowhere", root / "dangling")
    os.mkfifo(root / "x" / "fifo", 0o600)
    os.mknod(root / "x" / "tty", stat.S_IFCHR | 0o620, os.makedev(4, 1))
    os.chmod(root / "a" / "b", 0o2750)
    os.chown(root / "a" / "b" / "blocks", 1000, 2000)
    os.setxattr(root / "a" / "small", "user.note", b"a note")
    os.setxattr(root / "x", "trusted.dir", os.urandom(300))
    os.utime(root / "empty", ns=(123, 456))


def _mutate(root: Path) -> None:
    os.rename(root / "a" / "b" / "c", root / "x" / "c-moved")
    renameat2(root / "a" / "small", root / "x" / "symlink", RENAME_EXCHANGE)
    with open(root / "a" / "b" / "blocks", "r+b") as f:
        f.seek(64 * KiB - 5)
        f.write(b"patched across a block edge")
    os.truncate(root / "x" / "sparse", 5 * KiB)
    os.unlink(root / "x" / "hardlink")
    os.removexattr(root / "x" / "symlink", "user.note")        # the file moved there
    os.rmdir(root / "x" / "c-moved")


def test_tree_survives_remount_and_kill(volume: MountedVolume) -> None:
    root = volume.mountpoint
    _build(root)
    built = _snapshot(root)
    assert len(built) == 13
    remount(volume)
    assert _snapshot(root) == built
    _mutate(root)
    mutated = _snapshot(root)
    assert mutated != built
    assert stat.S_ISLNK(os.lstat(root / "a" / "small").st_mode)
    # kill -9: nothing that reached the worker is lost (DESIGN §3, guarantee 1).
    os.statvfs(root)                                # let the last RELEASE reach the worker
    volume.kill()
    volume.mount()
    assert _snapshot(root) == mutated
    remount(volume)
    assert _snapshot(root) == mutated
