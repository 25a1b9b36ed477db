"""rename(2) and renameat2(2): replacement rules, directories, NOREPLACE and EXCHANGE."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    df,
    drop_cache,
    expect_errno,
    remount,
    renameat2,
    used_bytes,
    wait_used_bytes,
)

pytestmark = pytest.mark.mount

MiB = 1 << 20


def test_rename_plain_keeps_inode_and_content(volume: MountedVolume) -> None:
    a, b = volume / "a", volume / "b"
    a.write_bytes(b"payload")
    before = os.stat(a)
    root_before = os.stat(volume.mountpoint)
    os.rename(a, b)
    expect_errno(errno.ENOENT, os.stat, a)
    after = os.stat(b)
    assert after.st_ino == before.st_ino
    assert after.st_nlink == 1
    assert after.st_ctime_ns > before.st_ctime_ns          # ext4 and tmpfs touch ctime
    assert os.stat(volume.mountpoint).st_mtime_ns > root_before.st_mtime_ns
    assert b.read_bytes() == b"payload"
    assert os.listdir(volume.mountpoint) == ["b"]
    os.rename(b, b)                                         # onto itself: nothing happens
    assert b.read_bytes() == b"payload"
    expect_errno(errno.ENOENT, os.rename, a, volume / "c")
    expect_errno(errno.ENOENT, os.rename, b, volume / "nodir" / "c")
    expect_errno(errno.ENOTDIR, os.rename, b, b / "c")
    remount(volume)
    assert os.listdir(volume.mountpoint) == ["b"]
    st = os.stat(b)
    assert (st.st_ino, st.st_ctime_ns) == (after.st_ino, after.st_ctime_ns)
    assert b.read_bytes() == b"payload"


def test_rename_over_file_releases_the_old_inode(volume: MountedVolume) -> None:
    base = used_bytes(volume)
    src, dst = volume / "src", volume / "dst"
    src.write_bytes(b"new content")
    old = os.urandom(MiB)
    dst.write_bytes(old)
    drop_cache(dst)
    src_ino = os.stat(src).st_ino
    assert base == 0
    assert used_bytes(volume) == df(MiB + len(b"new content"))
    fd = os.open(dst, os.O_RDONLY)                   # an open file outlives its last name
    try:
        os.rename(src, dst)
        assert os.stat(dst).st_ino == src_ino
        assert dst.read_bytes() == b"new content"
        assert os.fstat(fd).st_nlink == 0
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, MiB, 0) == old
    finally:
        os.close(fd)
    assert sorted(os.listdir(volume.mountpoint)) == ["dst"]
    assert wait_used_bytes(volume, df(len(b"new content"))) == df(len(b"new content"))
    remount(volume)
    assert dst.read_bytes() == b"new content"


def test_rename_over_a_hard_link(volume: MountedVolume) -> None:
    a, b, c = volume / "a", volume / "b", volume / "c"
    a.write_bytes(b"A")
    c.write_bytes(b"C")
    os.link(c, b)
    assert os.stat(c).st_nlink == 2
    os.rename(a, b)                  # b's old inode still has c
    assert b.read_bytes() == b"A"
    assert c.read_bytes() == b"C"
    assert os.stat(c).st_nlink == 1
    os.link(b, volume / "b2")
    os.rename(b, volume / "b2")      # two names of one inode: POSIX says do nothing
    assert sorted(os.listdir(volume.mountpoint)) == ["b", "b2", "c"]
    assert os.stat(b).st_nlink == 2
    remount(volume)
    assert os.stat(c).st_nlink == 1
    assert os.stat(b).st_nlink == 2
    assert os.stat(b).st_ino == os.stat(volume / "b2").st_ino


def test_rename_across_directories(volume: MountedVolume) -> None:
    root = volume.mountpoint
    os.mkdir(root / "x")
    os.mkdir(root / "y")
    (root / "x" / "f").write_bytes(b"file")
    os.mkdir(root / "x" / "sub")
    (root / "x" / "sub" / "inner").write_bytes(b"inner")
    os.mkdir(root / "x" / "sub2")
    os.mkdir(root / "y" / "empty")
    os.rename(root / "x" / "f", root / "y" / "f2")
    os.rename(root / "x" / "sub", root / "y" / "sub")
    os.rename(root / "x" / "sub2", root / "y" / "empty")    # replaces an empty directory

    def check() -> None:
        assert os.listdir(root / "x") == []
        assert sorted(os.listdir(root / "y")) == ["empty", "f2", "sub"]
        assert (root / "y" / "f2").read_bytes() == b"file"
        assert (root / "y" / "sub" / "inner").read_bytes() == b"inner"
        assert os.stat(root / "x").st_nlink == 2
        assert os.stat(root / "y").st_nlink == 4
        assert os.stat(root / "y" / "sub" / "..").st_ino == os.stat(root / "y").st_ino
        assert os.stat(root / "y" / "empty" / "..").st_ino == os.stat(root / "y").st_ino

    check()
    remount(volume)
    check()


def test_rename_directory_rules(volume: MountedVolume) -> None:
    root = volume.mountpoint
    for d in ("a", "a/b", "a/b/c", "empty", "full", "full/x"):
        os.mkdir(root / d)
    (root / "file").write_bytes(b"f")
    expect_errno(errno.ENOTEMPTY, os.rename, root / "a", root / "full")
    expect_errno(errno.EISDIR, os.rename, root / "file", root / "empty")
    expect_errno(errno.ENOTDIR, os.rename, root / "a", root / "file")
    expect_errno(errno.EINVAL, os.rename, root / "a", root / "a" / "b" / "c" / "a")
    expect_errno(errno.EINVAL, os.rename, root / "a", root / "a" / "inside")
    expect_errno(errno.ENOTEMPTY, os.rename, root / "a" / "b", root / "a")  # onto its ancestor
    assert os.stat(root).st_nlink == 5
    empty_ino = os.stat(root / "empty").st_ino
    a_ino = os.stat(root / "a").st_ino
    os.rename(root / "a", root / "empty")           # a directory may replace an empty one
    assert os.stat(root / "empty").st_ino == a_ino
    assert os.stat(root / "empty" / "b" / "..").st_ino == a_ino
    expect_errno(errno.ENOENT, os.stat, root / "a")
    assert os.stat(root).st_nlink == 4
    assert sorted(os.listdir(root)) == ["empty", "file", "full"]
    remount(volume)
    assert os.stat(root).st_nlink == 4
    assert os.stat(root / "empty").st_ino == a_ino != empty_ino
    assert os.listdir(root / "empty" / "b") == ["c"]


def test_rename_noreplace(volume: MountedVolume) -> None:
    a, b = volume / "a", volume / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    expect_errno(errno.EEXIST, renameat2, a, b, RENAME_NOREPLACE)
    assert (a.read_bytes(), b.read_bytes()) == (b"A", b"B")
    os.mkdir(volume / "d")
    expect_errno(errno.EEXIST, renameat2, a, volume / "d", RENAME_NOREPLACE)
    renameat2(a, volume / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(volume.mountpoint)) == ["b", "c", "d"]
    assert (volume / "c").read_bytes() == b"A"
    expect_errno(errno.EINVAL, renameat2, b, volume / "c", RENAME_NOREPLACE | RENAME_EXCHANGE)
    expect_errno(errno.EINVAL, renameat2, b, volume / "e", 1 << 7)


def test_rename_exchange(volume: MountedVolume) -> None:
    root = volume.mountpoint
    os.mkdir(root / "p")
    os.mkdir(root / "q")
    (root / "p" / "f").write_bytes(b"file")
    (root / "q" / "g").write_bytes(b"other")
    os.mkdir(root / "q" / "dir")
    (root / "q" / "dir" / "inside").write_bytes(b"inside")
    f_ino = os.stat(root / "p" / "f").st_ino
    dir_ino = os.stat(root / "q" / "dir").st_ino
    renameat2(root / "p" / "f", root / "q" / "g", RENAME_EXCHANGE)
    assert (root / "p" / "f").read_bytes() == b"other"
    assert (root / "q" / "g").read_bytes() == b"file"
    assert os.stat(root / "q" / "g").st_ino == f_ino
    # A file and a directory in different directories: the link counts move with them.
    renameat2(root / "q" / "g", root / "p" / "f", RENAME_EXCHANGE)
    renameat2(root / "p" / "f", root / "q" / "dir", RENAME_EXCHANGE)

    def check() -> None:
        assert os.stat(root / "p" / "f").st_ino == dir_ino
        assert stat.S_ISDIR(os.stat(root / "p" / "f").st_mode)
        assert (root / "p" / "f" / "inside").read_bytes() == b"inside"
        assert os.stat(root / "p" / "f" / "..").st_ino == os.stat(root / "p").st_ino
        assert (root / "q" / "dir").read_bytes() == b"file"
        assert os.stat(root / "q" / "dir").st_ino == f_ino
        assert os.stat(root / "p").st_nlink == 3
        assert os.stat(root / "q").st_nlink == 2
        assert sorted(os.listdir(root / "q")) == ["dir", "g"]

    check()
    expect_errno(errno.ENOENT, renameat2, root / "p" / "f", root / "q" / "missing", RENAME_EXCHANGE)
    expect_errno(errno.ENOENT, renameat2, root / "p" / "missing", root / "q" / "g", RENAME_EXCHANGE)
    # Exchanging a directory with its own ancestor would detach a subtree.
    expect_errno(errno.EINVAL, renameat2, root / "p" / "f", root / "p", RENAME_EXCHANGE)
    expect_errno(errno.EINVAL, renameat2, root / "p", root / "p" / "f", RENAME_EXCHANGE)
    check()
    remount(volume)
    check()


def test_rename_exchange_two_directories(volume: MountedVolume) -> None:
    root = volume.mountpoint
    os.makedirs(root / "p" / "d1" / "under-d1")
    os.makedirs(root / "q" / "d2")
    (root / "q" / "d2" / "f").write_bytes(b"in d2")
    d1, d2 = os.stat(root / "p" / "d1").st_ino, os.stat(root / "q" / "d2").st_ino
    renameat2(root / "p" / "d1", root / "q" / "d2", RENAME_EXCHANGE)

    def check() -> None:
        assert os.stat(root / "p" / "d1").st_ino == d2
        assert os.stat(root / "q" / "d2").st_ino == d1
        assert os.stat(root / "p" / "d1" / "..").st_ino == os.stat(root / "p").st_ino
        assert os.stat(root / "q" / "d2" / "..").st_ino == os.stat(root / "q").st_ino
        assert (root / "p" / "d1" / "f").read_bytes() == b"in d2"
        assert os.listdir(root / "q" / "d2") == ["under-d1"]
        assert os.stat(root / "p").st_nlink == os.stat(root / "q").st_nlink == 3
        assert os.stat(root / "q" / "d2").st_nlink == 3

    check()
    remount(volume)
    check()
