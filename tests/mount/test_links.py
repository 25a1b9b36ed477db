"""Symbolic links (targets, limits, lstat vs stat) and hard links (one inode, many names)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import drop_cache, expect_errno, remount

pytestmark = pytest.mark.mount


def test_symlink_dangling_and_followed(volume: MountedVolume) -> None:
    root = volume.mountpoint
    os.symlink("no/such/target", root / "dangling")
    st = os.lstat(root / "dangling")
    assert stat.S_ISLNK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o777
    assert st.st_size == len("no/such/target")
    assert os.readlink(root / "dangling") == "no/such/target"
    expect_errno(errno.ENOENT, os.stat, root / "dangling")
    expect_errno(errno.ENOENT, os.open, root / "dangling", os.O_RDONLY)
    (root / "file").write_bytes(b"through the link")
    os.mkdir(root / "dir")
    (root / "dir" / "inner").write_bytes(b"inner")
    os.symlink("file", root / "to-file")
    os.symlink(str(root / "dir"), root / "to-dir")          # an absolute target
    assert os.stat(root / "to-file").st_ino == os.stat(root / "file").st_ino
    assert os.lstat(root / "to-file").st_ino != os.stat(root / "file").st_ino
    assert (root / "to-file").read_bytes() == b"through the link"
    assert (root / "to-dir" / "inner").read_bytes() == b"inner"
    expect_errno(errno.EEXIST, os.symlink, "x", root / "file")
    expect_errno(errno.EINVAL, os.readlink, root / "file")
    expect_errno(errno.ENOENT, os.symlink, "", root / "empty-target")   # symlink(2): ENOENT
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    expect_errno(errno.ELOOP, os.stat, root / "loop-a")
    # unlink removes the link, never its target.
    os.unlink(root / "to-file")
    assert (root / "file").read_bytes() == b"through the link"
    remount(volume)
    assert os.readlink(root / "dangling") == "no/such/target"
    assert os.readlink(root / "to-dir") == str(root / "dir")
    assert (root / "to-dir" / "inner").read_bytes() == b"inner"


def test_symlink_target_length(volume: MountedVolume) -> None:
    target = "/".join(["t" * 254] * 17)[:4095]
    assert len(target) == 4095
    os.symlink(target, volume / "long")
    assert os.readlink(volume / "long") == target
    assert os.lstat(volume / "long").st_size == 4095
    # 4096 bytes cannot reach us: the kernel copies at most PATH_MAX bytes including the NUL.
    expect_errno(errno.ENAMETOOLONG, os.symlink, target + "x", volume / "too-long")
    expect_errno(errno.ENOENT, os.lstat, volume / "too-long")
    remount(volume)
    assert os.readlink(volume / "long") == target


def test_hard_links_share_one_inode(volume: MountedVolume) -> None:
    a, b = volume / "a", volume / "b"
    a.write_bytes(b"shared")
    before = os.stat(a)
    os.mkdir(volume / "d")
    os.link(a, b)
    os.link(a, volume / "d" / "c")
    sa, sb = os.stat(a), os.stat(b)
    assert sa.st_ino == sb.st_ino == os.stat(volume / "d" / "c").st_ino
    assert sa.st_nlink == sb.st_nlink == 3
    assert sa.st_ctime_ns > before.st_ctime_ns              # link(2) changes ctime
    with open(b, "r+b") as f:
        f.write(b"SH")
    drop_cache(a)
    assert a.read_bytes() == b"SHared"
    os.unlink(a)
    assert os.stat(b).st_nlink == 2
    assert b.read_bytes() == b"SHared"
    expect_errno(errno.EPERM, os.link, volume / "d", volume / "d2")       # no links to dirs
    expect_errno(errno.EEXIST, os.link, b, volume / "d" / "c")
    expect_errno(errno.ENOENT, os.link, a, volume / "e")
    expect_errno(errno.ENOENT, os.link, b, volume / "nodir" / "e")
    remount(volume)
    assert os.stat(b).st_nlink == 2
    assert os.stat(b).st_ino == os.stat(volume / "d" / "c").st_ino == sa.st_ino
    assert (volume / "d" / "c").read_bytes() == b"SHared"
    os.unlink(b)
    assert os.stat(volume / "d" / "c").st_nlink == 1
    assert (volume / "d" / "c").read_bytes() == b"SHared"


def test_hard_link_to_a_symlink_and_a_fifo(volume: MountedVolume) -> None:
    os.symlink("target", volume / "sym")
    os.link(volume / "sym", volume / "sym2", follow_symlinks=False)
    st = os.lstat(volume / "sym2")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_ino == os.lstat(volume / "sym").st_ino
    assert st.st_nlink == 2
    assert os.readlink(volume / "sym2") == "target"
    os.mkfifo(volume / "fifo")
    os.link(volume / "fifo", volume / "fifo2")
    assert stat.S_ISFIFO(os.lstat(volume / "fifo2").st_mode)
    assert os.lstat(volume / "fifo").st_nlink == 2
    remount(volume)
    assert os.lstat(volume / "sym").st_nlink == 2
    assert os.readlink(volume / "sym2") == "target"
    assert os.lstat(volume / "fifo2").st_nlink == 2
