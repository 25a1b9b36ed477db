"""Discrepancies the model-based test (test_model.py) found, each shrunk to a small test.

Each test states the behaviour of ext4 and tmpfs (checked on the host where it can be) and
requires the same of GalleonFS. Each failed on the code the model found it in (3526d5b's
parent) and passes since 3526d5b fixed it; they keep the bugs from coming back, and say
in a few lines what the state machine's long reports said.

What it must not do: depend on the state machine, or on timing it does not control.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from galleonfs.testing.clock import wait_for_clock_tick
from galleonfs.testing.mount import MountedVolume


def errno_of(fn: Callable[..., object], *args: Any, **kwargs: Any) -> int | None:
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        return exc.errno
    return None


def remount(volume: MountedVolume) -> None:
    assert volume.unmount() == 0, volume.log()
    volume.mount()


# --- xattr name "user." ------------------------------------------------------------------------
@pytest.mark.mount
def test_xattr_name_that_is_only_a_namespace_prefix_is_invalid(volume: MountedVolume,
                                                               tmp_path: Path) -> None:
    """``setxattr(f, "user.", ...)``: ext4 and tmpfs answer EINVAL (the kernel's xattr
    handler lookup rejects an empty name after the prefix). FUSE registers one catch-all
    handler, so the name reaches GalleonFS, which must reject it the same way; it stored
    it instead (``_check_xattr_name`` only checked the prefix), and get/remove answered
    ENODATA instead of EINVAL.

    Found by the model as: ``getxattr('b', 'user.')``: host EINVAL, galleonfs ENODATA.
    """
    host = tmp_path / "host-file"
    host.write_bytes(b"")
    assert errno_of(os.setxattr, host, "user.", b"1") == errno.EINVAL, "model: ext4 accepted 'user.'"

    f = volume / "f"
    f.write_bytes(b"")
    got = {"setxattr": errno_of(os.setxattr, f, "user.", b"1")}
    listed = os.listxattr(f)
    got["getxattr"] = errno_of(os.getxattr, f, "user.")
    got["removexattr"] = errno_of(os.removexattr, f, "user.")
    assert listed == [], f"'user.' was stored: listxattr gives {listed}"
    expected = dict.fromkeys(got, errno.EINVAL)
    assert got == expected, {k: errno.errorcode.get(v, v) if v else "ok" for k, v in got.items()}


# --- mtime moves across a remount --------------------------------------------------------------
# The kernel stamps inode times from its coarse clock (4 ms ticks with HZ=250). Each case
# runs right after a tick and counts only if it finished before the next one: then the
# kernel's own mtime cannot have changed in between, and the outcome does not depend on
# timing.
CLOCK_REALTIME_COARSE = 5          # <linux/time.h>; Python's time module has no name for it
CASES = 10                         # runs that fitted in one tick
ATTEMPTS_MAX = 200


def in_one_tick(fn: Callable[[], None]) -> bool:
    start = time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
    while (tick := time.clock_gettime_ns(CLOCK_REALTIME_COARSE)) == start:
        pass
    fn()
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE) == tick


def mtimes_moved_by_remount(volume: MountedVolume, case: Callable[[Path], None]) -> dict[str, int]:
    """Run ``case`` on fresh files until CASES of them fitted in one tick; remount; return
    by how much each of those files' mtime moved (empty if none did)."""
    before: dict[str, int] = {}
    for i in range(ATTEMPTS_MAX):
        path = volume / f"f{i}"
        if in_one_tick(functools.partial(case, path)):
            before[path.name] = os.stat(path).st_mtime_ns
            if len(before) == CASES:
                break
    assert len(before) == CASES, f"only {len(before)} of {ATTEMPTS_MAX} runs fitted in one tick"
    remount(volume)
    after = {name: os.stat(volume / name).st_mtime_ns for name in before}
    return {name: after[name] - t for name, t in before.items() if after[name] != t}


@pytest.mark.mount
def test_mtime_after_o_trunc_is_what_a_remount_shows(volume: MountedVolume) -> None:
    """Write a file, close it, open it again with O_TRUNC, close: ``stat`` shows mtime M.
    After a clean remount ``stat`` must still show M (ext4 has nothing to change it).
    GalleonFS showed a later one, in 9 of 10 cases.

    With the writeback cache the kernel owns mtime and ctime of regular files: it keeps its
    own and sends them in a SETATTR when they changed (``fuse_flush_times``). The worker
    must not stamp them with its own clock as well, as ``Vfs.open(truncate=True)`` did
    (``mtime_ns = time.time_ns()``; now only without the writeback cache). When the kernel's clock has not ticked since it last
    flushed, its mtime is not dirty, no SETATTR follows, and the worker's later time is
    what the volume keeps; the user sees the change once the inode leaves the kernel's
    cache (a remount, memory pressure).

    Found by the model as: ``mtimes changed across the remount (before, after)``.
    """
    def case(path: Path) -> None:
        path.write_bytes(b"abc")
        os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))

    moved = mtimes_moved_by_remount(volume, case)
    assert not moved, f"{len(moved)} of {CASES} mtimes moved across the remount (ns): {moved}"


@pytest.mark.mount
def test_mtime_after_a_second_write_is_what_a_remount_shows(volume: MountedVolume) -> None:
    """The same bug through ``Vfs.write``, which also set ``mtime_ns = time.time_ns()``:
    write and close (the kernel flushes its mtime), open, write again within the same
    tick (the kernel's mtime does not change, so it is not dirty), close: the WRITE
    request stamped the worker's own later time and no SETATTR corrected it (10 of 10
    cases moved)."""
    def case(path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, b"abc", 0)
        os.close(fd)
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"d", 1)
        os.close(fd)

    moved = mtimes_moved_by_remount(volume, case)
    assert not moved, f"{len(moved)} of {CASES} mtimes moved across the remount (ns): {moved}"


@pytest.mark.mount
def test_mtime_after_truncate_to_the_same_size_is_what_a_remount_shows(volume: MountedVolume) -> None:
    """``truncate(path, its current size)``: the kernel (writeback cache, so it owns mtime)
    sends a SETATTR with the size and, because the size does not change, without mtime or
    ctime (``fuse_do_setattr``), and keeps its own mtime: ``stat`` shows the mtime of
    before. ``Vfs.setattr`` stamps ``mtime_ns = ctime_ns = now`` whenever a size comes
    without a mtime, so the volume stores a time the user never saw, and a remount shows
    it. Not timing-dependent: every file moves. 3526d5b stopped the same stamping in
    ``write`` and ``open(O_TRUNC)`` but not here (the fix: under ``kernel_times`` leave
    the times alone when the kernel sends none).

    Found by the model, against 3526d5b's parent, as: populate ``a/a/b`` (empty),
    ``truncate('a/a/b', 0)``, ``remount()``: "mtimes changed across the remount"; still
    there after 3526d5b.
    """
    before = {}
    for i in range(CASES):
        path = volume / f"f{i}"
        path.write_bytes(b"abc" * i)
        os.truncate(path, 3 * i)
        before[path.name] = os.stat(path).st_mtime_ns
    remount(volume)
    after = {name: os.stat(volume / name).st_mtime_ns for name in before}
    moved = {name: after[name] - t for name, t in before.items() if after[name] != t}
    assert not moved, f"{len(moved)} of {CASES} mtimes moved across the remount (ns): {moved}"


# --- symlink atime -----------------------------------------------------------------------------
def symlink_atimes(root: Path) -> tuple[int, int, int]:
    """atime of a symlink set to 1969, then after following it, then after readlink."""
    os.mkdir(root / "dir")
    os.symlink("dir", root / "link")
    os.utime(root / "link", ns=(-1, 5), follow_symlinks=False)
    set_to = os.lstat(root / "link").st_atime_ns
    os.stat(root / "link" / ".")                    # follows the link as a path component
    followed = os.lstat(root / "link").st_atime_ns
    os.utime(root / "link", ns=(-1, 5), follow_symlinks=False)
    os.readlink(root / "link")
    return set_to, followed, os.lstat(root / "link").st_atime_ns


@pytest.mark.mount
def test_following_or_reading_a_symlink_updates_its_atime(volume: MountedVolume,
                                                          tmp_path: Path) -> None:
    """Under relatime (GalleonFS's default, and the host's), following a symlink or
    reading it updates its atime when that is not newer than its mtime: ext4 and tmpfs
    do it in the path walk and in readlink (``touch_atime``). FUSE inodes are
    ``S_NOATIME`` in the kernel, so that is the file system's job on READLINK, which the
    kernel sends each time it follows the link; ``Vfs.readlink`` did not call
    ``_note_access``, so a symlink's atime never moved.

    Found by the model as: ``utime('a/a', ns=(-1, 2147483648000000000), follow=False)``
    followed by ``lstat('a/a')`` where ``a`` is a symlink: host atime = now, galleonfs -1.
    """
    host = tmp_path / "host"
    host.mkdir()
    set_to, followed, read = symlink_atimes(host)
    assert set_to == -1 and followed > 0 and read > 0, f"model: ext4 gave {set_to, followed, read}"

    set_to, followed, read = symlink_atimes(volume.mountpoint)
    assert set_to == -1
    assert (followed > 0, read > 0) == (True, True), (
        f"symlink atime after following it: {followed}, after readlink: {read} (still 1969)")


@pytest.mark.mount
def test_truncate_to_a_new_size_moves_mtime_and_a_remount_keeps_it(volume: MountedVolume) -> None:
    """The other side of the same-size case: a truncate that changes the size moves mtime
    (the kernel sends the new time with the size), and the volume stores that time."""
    path = volume / "grow"
    path.write_bytes(b"abc")
    old = os.stat(path).st_mtime_ns
    wait_for_clock_tick()                                  # the truncate's mtime is later
    os.truncate(path, 1)
    new = os.stat(path).st_mtime_ns
    assert new > old
    remount(volume)
    assert os.stat(path).st_mtime_ns == new
    assert path.read_bytes() == b"a"
