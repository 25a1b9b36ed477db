"""Regular files through the kernel: create, open flags, read, write, fsync, truncate, mknod."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import socket
import stat

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import current_umask, drop_cache, expect_errno, remount, used_bytes, wait_used_bytes

pytestmark = pytest.mark.mount

KiB = 1024
MiB = 1024 * KiB


def test_create_write_read(volume: MountedVolume) -> None:
    p = volume / "f"
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    assert os.write(fd, b"hello world") == 11
    os.close(fd)
    st = os.stat(p)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~current_umask()
    assert st.st_size == 11
    assert st.st_nlink == 1
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert p.read_bytes() == b"hello world"
    # O_CREAT without O_EXCL opens the existing file and keeps its content.
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
    assert p.read_bytes() == b"hello world"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640 & ~current_umask()
    expect_errno(errno.EEXIST, os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno(errno.ENOENT, os.open, volume / "missing", os.O_RDONLY)
    expect_errno(errno.ENOENT, os.open, volume / "nodir" / "x", os.O_CREAT | os.O_WRONLY)
    expect_errno(errno.ENOTDIR, os.open, p / "x", os.O_CREAT | os.O_WRONLY)
    expect_errno(errno.EISDIR, os.open, volume.mountpoint, os.O_WRONLY)
    remount(volume)
    assert p.read_bytes() == b"hello world"


def test_read_past_eof_and_short_reads(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"0123456789")
    drop_cache(p)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"0123456789"
        assert os.pread(fd, 100, 6) == b"6789"
        assert os.pread(fd, 100, 10) == b""
        assert os.pread(fd, 100, 1 << 40) == b""
        os.lseek(fd, 8, os.SEEK_SET)
        assert os.read(fd, 5) == b"89"
        assert os.read(fd, 5) == b""
        expect_errno(errno.EBADF, os.write, fd, b"x")
    finally:
        os.close(fd)
    dfd = os.open(volume.mountpoint, os.O_RDONLY)
    try:
        expect_errno(errno.EISDIR, os.read, dfd, 1)
    finally:
        os.close(dfd)


def test_o_append(volume: MountedVolume) -> None:
    p = volume / "log"
    p.write_bytes(b"abc")
    a = os.open(p, os.O_WRONLY | os.O_APPEND)
    b = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(a, 0, os.SEEK_SET)
        os.write(a, b"1")
        os.write(b, b"22")
        os.write(a, b"333")
        # Linux ignores the offset of pwrite() on an O_APPEND descriptor (pwrite(2) BUGS).
        os.pwrite(b, b"4", 0)
    finally:
        os.close(a)
        os.close(b)
    assert p.read_bytes() == b"abc1223334"
    drop_cache(p)
    assert p.read_bytes() == b"abc1223334"


def test_o_trunc(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(os.urandom(200 * KiB))
    before = os.stat(p)
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"new")
    finally:
        os.close(fd)
    after = os.stat(p)
    assert after.st_ino == before.st_ino
    assert after.st_size == 3
    assert after.st_mtime_ns > before.st_mtime_ns
    remount(volume)
    assert p.read_bytes() == b"new"
    assert os.stat(p).st_blocks * 512 < 64 * KiB     # the old 200 KiB are released


def _check_pwrites(path: os.PathLike[str], writes: list[tuple[int, int]], flags: int = 0) -> bytes:
    """pwrite random bytes at each (offset, length); compare with a model after each."""
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
    try:
        for offset, length in writes:
            data = os.urandom(length)
            assert os.pwrite(fd, data, offset) == length
            if len(model) < offset + length:
                model.extend(bytes(offset + length - len(model)))
            model[offset:offset + length] = data
            assert os.fstat(fd).st_size == len(model)
            assert os.pread(fd, length + 10, offset) == bytes(model[offset:offset + length + 10])
        os.fsync(fd)
    finally:
        os.close(fd)
    drop_cache(path)
    with open(path, "rb") as f:
        assert f.read() == model
    return bytes(model)


def _boundary_writes(bs: int) -> list[tuple[int, int]]:
    return [
        (0, 10),                      # first bytes of a new file
        (bs - 3, 7),                  # straddles the first block boundary
        (bs * 3 + 5, 2 * bs + 11),    # leaves a hole, spans several blocks, unaligned
        (bs * 2, bs),                 # exactly one block, into the hole
        (1, bs * 2 - 2),              # rewrites inside blocks 0 and 1 without their edges
        (bs * 6 - 1, 1),              # last byte of a block
        (bs * 6, 1),                  # first byte of the next one, growing the file
        (bs * 4 + 100, 50),           # small rewrite in the middle
    ]


@pytest.mark.parametrize("bs", [
    pytest.param(64 * KiB, id="64k-blocks"),
    pytest.param(4 * KiB, id="4k-blocks", marks=pytest.mark.volume(block_size=4 * KiB)),
])
def test_pwrite_across_block_boundaries(volume: MountedVolume, bs: int) -> None:
    model = _check_pwrites(volume / "f", _boundary_writes(bs))
    remount(volume)
    assert (volume / "f").read_bytes() == model


@pytest.mark.parametrize("bs", [
    pytest.param(64 * KiB, id="64k-blocks"),
    pytest.param(4 * KiB, id="4k-blocks", marks=pytest.mark.volume(block_size=4 * KiB)),
])
def test_unaligned_direct_writes(volume: MountedVolume, bs: int) -> None:
    # O_DIRECT bypasses the page cache, so GalleonFS sees these exact unaligned requests
    # (through the cache the kernel would send whole pages).
    model = _check_pwrites(volume / "f", _boundary_writes(bs), os.O_DIRECT)
    remount(volume)
    assert (volume / "f").read_bytes() == model


def test_large_random_writes(volume: MountedVolume) -> None:
    data = os.urandom(7 * MiB + 12345)
    p = volume / "big"
    with open(p, "wb") as f:
        view = memoryview(data)
        step = 1_000_003                    # not a multiple of anything the kernel uses
        for pos in range(0, len(data), step):
            f.write(view[pos:pos + step])
    digest = hashlib.sha256(data).digest()
    assert os.stat(p).st_size == len(data)
    remount(volume)
    assert hashlib.sha256(p.read_bytes()).digest() == digest
    st = os.stat(p)
    assert st.st_size == len(data)
    assert len(data) <= st.st_blocks * 512 < len(data) + 64 * KiB


def test_fsync_and_fdatasync(volume: MountedVolume) -> None:
    p = volume / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"a" * 5000)
        assert os.fsync(fd) is None
        os.pwrite(fd, b"b" * 100, 4950)
        assert os.fdatasync(fd) is None
    finally:
        os.close(fd)
    # Nothing was unmounted cleanly: what fsync made durable must survive a kill -9.
    volume.kill()
    volume.mount()
    assert p.read_bytes() == b"a" * 4950 + b"b" * 100


def test_unlinked_open_file_lives_until_closed(volume: MountedVolume) -> None:
    base = used_bytes(volume)
    p = volume / "f"
    data = os.urandom(1 * MiB)
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        assert used_bytes(volume) == base + len(data)
        os.unlink(p)
        expect_errno(errno.ENOENT, os.stat, p)
        assert os.listdir(volume.mountpoint) == []
        assert os.fstat(fd).st_nlink == 0
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(data), 0) == data
        os.pwrite(fd, b"still writable", 10)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 14, 10) == b"still writable"
        assert used_bytes(volume) >= base + len(data)
    finally:
        os.close(fd)
    assert wait_used_bytes(volume, base) == base


def test_truncate_shrink_then_grow_reads_zeros(volume: MountedVolume) -> None:
    p = volume / "f"
    data = os.urandom(200_000)
    p.write_bytes(data)
    os.truncate(p, 70_000)                       # inside the second 64 KiB block
    assert os.stat(p).st_size == 70_000
    os.truncate(p, 200_000)
    expected = data[:70_000] + bytes(130_000)
    assert p.read_bytes() == expected
    drop_cache(p)
    assert p.read_bytes() == expected
    with open(p, "r+b") as f:
        f.truncate(65_536)                       # exactly on a block boundary
        f.truncate(300_000)
        f.seek(250_000)
        f.write(b"tail")
    expected = data[:65_536] + bytes(250_000 - 65_536) + b"tail" + bytes(300_000 - 250_004)
    assert p.read_bytes() == expected
    os.truncate(p, 0)
    os.truncate(p, 10)
    assert p.read_bytes() == bytes(10)
    remount(volume)
    assert p.read_bytes() == bytes(10)
    expect_errno(errno.EISDIR, os.truncate, volume.mountpoint, 0)
    expect_errno(errno.EINVAL, os.truncate, p, -1)


def test_mknod_types(volume: MountedVolume) -> None:
    os.mknod(volume / "reg", stat.S_IFREG | 0o600)
    os.mkfifo(volume / "fifo", 0o640)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(volume / "sock"))
    finally:
        sock.close()
    os.mknod(volume / "chr", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(volume / "blk", stat.S_IFBLK | 0o660, os.makedev(7, 200))
    expected = {
        "reg": (stat.S_IFREG, 0o600, 0),
        "fifo": (stat.S_IFIFO, 0o640, 0),
        "chr": (stat.S_IFCHR, 0o620, os.makedev(1, 3)),
        "blk": (stat.S_IFBLK, 0o660, os.makedev(7, 200)),
    }
    umask = current_umask()

    def check() -> None:
        for name, (kind, mode, rdev) in expected.items():
            st = os.lstat(volume / name)
            assert stat.S_IFMT(st.st_mode) == kind, name
            assert stat.S_IMODE(st.st_mode) == mode & ~umask, name
            assert st.st_rdev == rdev, name
            assert st.st_size == 0, name
        assert stat.S_ISSOCK(os.lstat(volume / "sock").st_mode)
        assert sorted(os.listdir(volume.mountpoint)) == sorted([*expected, "sock"])
        kinds = {e.name: e for e in os.scandir(volume.mountpoint)}
        assert kinds["reg"].is_file() and not kinds["fifo"].is_file()

    check()
    expect_errno(errno.EEXIST, os.mknod, volume / "reg", stat.S_IFREG | 0o600)
    expect_errno(errno.EEXIST, os.mkfifo, volume / "chr")
    remount(volume)
    check()


def test_mmap_shared_writes(volume: MountedVolume) -> None:
    p = volume / "mapped"
    p.write_bytes(bytes(200_000))
    with open(p, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        m[65_530:65_542] = b"across-block"
        m[199_990:] = b"0123456789"
        m.flush()
    expected = bytes(65_530) + b"across-block" + bytes(199_990 - 65_542) + b"0123456789"
    assert p.read_bytes() == expected
    remount(volume)
    assert p.read_bytes() == expected


def test_copy_file_range(volume: MountedVolume) -> None:
    data = os.urandom(3 * MiB + 7)
    (volume / "src").write_bytes(data)
    src = os.open(volume / "src", os.O_RDONLY)
    dst = os.open(volume / "dst", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        copied = 0
        while copied < len(data):
            n = os.copy_file_range(src, dst, len(data) - copied)
            assert n > 0
            copied += n
    finally:
        os.close(src)
        os.close(dst)
    remount(volume)
    assert (volume / "dst").read_bytes() == data


def test_posix_fallocate(volume: MountedVolume) -> None:
    # pyfuse3 has no fallocate handler, so fallocate(2) itself is EOPNOTSUPP (like tmpfs
    # with unsupported modes); glibc's posix_fallocate then writes zeros instead, which
    # GalleonFS stores as holes: the size is right and the bytes read as zeros, but unlike
    # ext4 no space is reserved, so a later write can still meet ENOSPC.
    p = volume / "f"
    p.write_bytes(b"start")
    fd = os.open(p, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 1 * MiB)
        assert os.fstat(fd).st_size == 1 * MiB
        assert os.pread(fd, 10, 0) == b"start" + bytes(5)
    finally:
        os.close(fd)
    drop_cache(p)
    assert p.read_bytes() == b"start" + bytes(MiB - 5)


def test_unlinked_open_file_is_reclaimed_after_a_crash(volume: MountedVolume) -> None:
    p = volume / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, os.urandom(2 * MiB))
    os.fsync(fd)
    os.unlink(p)
    assert used_bytes(volume) == 2 * MiB
    volume.kill()                              # the worker dies with the file still open
    try:
        os.close(fd)
    except OSError as exc:                     # the connection is gone: ENOTCONN is fine
        assert exc.errno == errno.ENOTCONN, exc
    volume.mount()                             # mount finishes the deletion
    assert os.listdir(volume.mountpoint) == []
    assert used_bytes(volume) == 0
