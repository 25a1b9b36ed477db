"""Attributes: getattr, chmod, chown (as root), timestamps and what changes ctime."""

from __future__ import annotations

import os
import stat
import time

import pytest

from galleonfs.testing.clock import wait_for_clock_tick
from galleonfs.testing.mount import MountedVolume

from .util import UTIME_NOW, UTIME_OMIT, remount, utimensat

pytestmark = pytest.mark.mount

# The kernel stamps times from its coarse clock, which may lag time.time_ns() by a tick.
CLOCK_SLACK_NS = 50_000_000


def test_getattr_of_new_objects(volume: MountedVolume) -> None:
    t0 = time.time_ns() - CLOCK_SLACK_NS
    (volume / "f").write_bytes(b"x" * 70_000)
    os.mkdir(volume / "d")
    t1 = time.time_ns() + CLOCK_SLACK_NS
    for name, kind in (("f", stat.S_IFREG), ("d", stat.S_IFDIR)):
        st = os.stat(volume / name)
        assert stat.S_IFMT(st.st_mode) == kind
        for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
            assert t0 <= t <= t1, name
        assert st.st_dev == os.stat(volume.mountpoint).st_dev
        assert st.st_blksize == 64 * 1024                  # the volume's block size
    st = os.stat(volume / "f")
    assert st.st_size == 70_000
    assert st.st_blocks == (70_000 + 511) // 512
    inos = {os.stat(volume / n).st_ino for n in ("f", "d")} | {os.stat(volume.mountpoint).st_ino}
    assert len(inos) == 3
    remount(volume)
    again = os.stat(volume / "f")
    assert (again.st_ino, again.st_size, again.st_blocks, again.st_mtime_ns) == (
        st.st_ino, st.st_size, st.st_blocks, st.st_mtime_ns)


@pytest.mark.volume(block_size=4096)
def test_blksize_follows_the_volume(volume: MountedVolume) -> None:
    (volume / "f").write_bytes(b"x")
    assert os.stat(volume / "f").st_blksize == 4096


def test_chmod_keeps_the_file_type(volume: MountedVolume) -> None:
    root = volume.mountpoint
    (root / "f").write_bytes(b"")
    os.mkdir(root / "d")
    os.mkfifo(root / "p")
    os.mknod(root / "c", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    cases = {"f": (stat.S_IFREG, 0o7777), "d": (stat.S_IFDIR, 0o1777),
             "p": (stat.S_IFIFO, 0o4640), "c": (stat.S_IFCHR, 0o000)}
    wait_for_clock_tick()                     # ctime must move
    for name, (_, mode) in cases.items():
        before = os.stat(root / name)
        os.chmod(root / name, mode)
        after = os.stat(root / name)
        assert after.st_mtime_ns == before.st_mtime_ns, name     # chmod touches ctime only
        assert after.st_ctime_ns > before.st_ctime_ns, name
    fd = os.open(root / "f", os.O_RDONLY)
    try:
        os.fchmod(fd, 0o2751)
    finally:
        os.close(fd)
    cases["f"] = (stat.S_IFREG, 0o2751)

    def check() -> None:
        for name, (kind, mode) in cases.items():
            st = os.lstat(root / name)
            assert st.st_mode == kind | mode, (name, oct(st.st_mode))
        assert os.lstat(root / "c").st_rdev == os.makedev(1, 5)

    check()
    remount(volume)
    check()


def test_chown_as_root(volume: MountedVolume) -> None:
    root = volume.mountpoint
    (root / "f").write_bytes(b"")
    (root / "suid").write_bytes(b"")
    (root / "sgid-noexec").write_bytes(b"")
    os.mkdir(root / "d")
    os.symlink("f", root / "sym")
    os.chown(root / "f", 1234, 5678)
    os.chown(root / "f", -1, 4321)                         # -1: leave the owner alone
    os.chown(root / "d", 2**32 - 2, 0)                     # the largest valid uid
    os.chown(root / "sym", 77, 88, follow_symlinks=False)  # the link, not its target
    os.chmod(root / "suid", 0o6755)
    os.chmod(root / "sgid-noexec", 0o2644)
    os.chmod(root / "d", 0o3755)
    os.chown(root / "suid", 1000, 1000)                    # chown(2) clears set-id bits...
    os.chown(root / "sgid-noexec", 1000, 1000)             # ...set-gid only if group-exec
    os.chown(root / "d", -1, 1000)                         # ...and never on directories

    def check() -> None:
        st = os.stat(root / "f")
        assert (st.st_uid, st.st_gid) == (1234, 4321)
        st = os.lstat(root / "sym")
        assert (st.st_uid, st.st_gid) == (77, 88)
        st = os.stat(root / "d")
        assert (st.st_uid, st.st_gid) == (2**32 - 2, 1000)
        assert stat.S_IMODE(st.st_mode) == 0o3755
        assert stat.S_IMODE(os.stat(root / "suid").st_mode) == 0o755
        assert stat.S_IMODE(os.stat(root / "sgid-noexec").st_mode) == 0o2644

    check()
    remount(volume)
    check()


def test_utimens_explicit_now_and_omit(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"data")
    a_ns, m_ns = 1_000_000_000_123_456_789, 1_500_000_000_987_654_321
    os.utime(p, ns=(a_ns, m_ns))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (a_ns, m_ns)
    # Only atime, mtime omitted.
    utimensat(p, (12345, 678), (0, UTIME_OMIT))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (12345_000_000_678, m_ns)
    # Only mtime, to "now"; atime omitted.
    t0 = time.time_ns() - CLOCK_SLACK_NS
    utimensat(p, (0, UTIME_OMIT), (0, UTIME_NOW))
    t1 = time.time_ns() + CLOCK_SLACK_NS
    st = os.stat(p)
    assert st.st_atime_ns == 12345_000_000_678
    assert t0 <= st.st_mtime_ns <= t1
    os.symlink("f", volume / "sym")
    utimensat(volume / "sym", (5, 0), (6, 0), follow=False)
    # Times before 1970 are valid (ext4 and tmpfs keep them).
    os.utime(volume.mountpoint, ns=(-1_000_000_000, -86_400_000_000_001))
    st = os.stat(volume.mountpoint)
    assert (st.st_atime_ns, st.st_mtime_ns) == (-1_000_000_000, -86_400_000_000_001)
    # times=None: both now, like touch(1).
    t0 = time.time_ns() - CLOCK_SLACK_NS
    os.utime(p, times=None)
    t1 = time.time_ns() + CLOCK_SLACK_NS
    st = os.stat(p)
    assert t0 <= st.st_atime_ns <= t1 and t0 <= st.st_mtime_ns <= t1
    assert st.st_ctime_ns >= st.st_mtime_ns - CLOCK_SLACK_NS
    remount(volume)
    again = os.stat(p)
    assert (again.st_atime_ns, again.st_mtime_ns) == (st.st_atime_ns, st.st_mtime_ns)
    st = os.stat(volume.mountpoint)
    assert (st.st_atime_ns, st.st_mtime_ns) == (-1_000_000_000, -86_400_000_000_001)
    st = os.lstat(volume / "sym")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5_000_000_000, 6_000_000_000)


def test_utime_after_unflushed_write_wins(volume: MountedVolume) -> None:
    # tar and cp -p write, then set mtime; with the writeback cache the data may reach the
    # worker after the utime, and must not stamp its own mtime over the one set.
    p = volume / "f"
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, os.urandom(300_000))
        os.utime(fd, ns=(1_000_000_000, 2_000_000_000))
    finally:
        os.close(fd)
    assert os.stat(p).st_mtime_ns == 2_000_000_000
    remount(volume)
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns, st.st_size) == (1_000_000_000, 2_000_000_000, 300_000)


def test_what_changes_ctime(volume: MountedVolume) -> None:
    root = volume.mountpoint
    ops = {
        "chmod": lambda p: os.chmod(p, 0o600),
        "chown": lambda p: os.chown(p, 1000, 1000),
        "link": lambda p: os.link(p, root / "link-of-link"),
        "unlink-one-link": lambda p: os.unlink(root / "second"),
        "rename": lambda p: os.rename(p, root / "renamed"),
        "setxattr": lambda p: os.setxattr(p, "user.k", b"v"),
        "removexattr": lambda p: os.removexattr(p, "user.gone"),
        "truncate": lambda p: os.truncate(p, 100),
        "write": lambda p: p.write_bytes(b"new"),
        "utime": lambda p: os.utime(p, ns=(1, 1)),
    }
    for name in ops:
        (root / name).write_bytes(b"content")
    os.link(root / "unlink-one-link", root / "second")
    os.setxattr(root / "removexattr", "user.gone", b"x")
    before = {name: os.stat(root / name).st_ctime_ns for name in ops}
    wait_for_clock_tick()                                 # each op's ctime is later
    after = {}
    for name, op in ops.items():
        op(root / name)
        path = root / ("renamed" if name == "rename" else name)
        after[name] = os.stat(path).st_ctime_ns
        assert after[name] > before[name], name
    remount(volume)
    for name in ops:
        path = root / ("renamed" if name == "rename" else name)
        assert os.stat(path).st_ctime_ns > before[name], name


def _age(path: os.PathLike[str]) -> tuple[int, int]:
    """Set atime a day and a second before mtime, as an old file has; return both."""
    st = os.stat(path)
    old = st.st_mtime_ns - 86_401 * 10**9
    os.utime(path, ns=(old, st.st_mtime_ns))
    return old, st.st_mtime_ns


def test_relatime_on_read_and_readdir(volume: MountedVolume) -> None:
    (volume / "f").write_bytes(b"data")
    os.mkdir(volume / "d")
    (volume / "d" / "entry").write_bytes(b"")
    _, mtime_f = _age(volume / "f")
    _age(volume / "d")
    remount(volume)                                  # nothing cached: reads reach GalleonFS
    t0 = time.time_ns() - CLOCK_SLACK_NS
    assert (volume / "f").read_bytes() == b"data"
    assert os.listdir(volume / "d") == ["entry"]
    t1 = time.time_ns() + CLOCK_SLACK_NS
    # relatime (the Linux default): an atime older than mtime is brought up to date.
    for path in (volume / "f", volume / "d"):
        st = os.stat(path)
        assert t0 <= st.st_atime_ns <= t1, path
    assert os.stat(volume / "f").st_mtime_ns == mtime_f          # reading changes no mtime
    seen = os.stat(volume / "f").st_atime_ns
    remount(volume)
    assert os.stat(volume / "f").st_atime_ns == seen
    # ...and then left alone: it is newer than mtime and less than a day old.
    assert (volume / "f").read_bytes() == b"data"
    assert os.stat(volume / "f").st_atime_ns == seen


@pytest.mark.volume(options="noatime")
def test_noatime_mount_keeps_access_times(volume: MountedVolume) -> None:
    (volume / "f").write_bytes(b"data")
    old, _ = _age(volume / "f")
    remount(volume)
    assert (volume / "f").read_bytes() == b"data"
    assert os.listdir(volume.mountpoint) == ["f"]
    assert os.stat(volume / "f").st_atime_ns == old
    remount(volume)
    assert os.stat(volume / "f").st_atime_ns == old
