"""Sparse files, statfs accounting, and the volume quota (ENOSPC, then space back)."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import df, drop_cache, expect_errno, remount, used_bytes, wait_used_bytes

pytestmark = pytest.mark.mount

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def test_sparse_file_holes_read_as_zeros_and_take_no_space(volume: MountedVolume) -> None:
    p = volume / "sparse"
    far = 5 * GiB + 12345                                  # beyond the 1 GiB volume: fine
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"head", 0)
        os.lseek(fd, far, os.SEEK_SET)
        os.write(fd, b"tail")
        os.pwrite(fd, b"middle", 2 * GiB + 65530)          # straddles a block boundary
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        st = os.fstat(fd)
        assert st.st_size == far + 4
        assert st.st_blocks * 512 <= 3 * 64 * KiB         # three blocks at most, no holes
        assert os.pread(fd, 8, 0) == b"head" + bytes(4)
        assert os.pread(fd, 1 * MiB, 1 * GiB) == bytes(MiB)
        assert os.pread(fd, 16, 2 * GiB + 65525) == bytes(5) + b"middle" + bytes(5)
        assert os.pread(fd, 100, far - 4) == bytes(4) + b"tail"
        # No FUSE lseek handler in pyfuse3: the kernel's generic fallback treats the whole
        # file as data (SEEK_HOLE finds only the implicit hole at EOF); ext4 would find the
        # holes. Applications still read correct bytes, they just copy the zeros.
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        assert os.lseek(fd, 0, os.SEEK_HOLE) == far + 4
        expect_errno(errno.ENXIO, os.lseek, fd, far + 4, os.SEEK_DATA)
    finally:
        os.close(fd)
    assert used_bytes(volume) <= df(3 * 64 * KiB)
    remount(volume)
    with open(p, "rb") as f:
        f.seek(far - 4)
        assert f.read() == bytes(4) + b"tail"
    assert os.stat(p).st_size == far + 4


def test_zero_blocks_are_stored_as_holes(volume: MountedVolume) -> None:
    # GalleonFS stores an all-zero block as a hole (ext4 would allocate it): the bytes read
    # back are the same, st_blocks and statfs show no space for them.
    p = volume / "zeros"
    p.write_bytes(bytes(2 * MiB) + b"x")
    drop_cache(p)
    assert p.read_bytes() == bytes(2 * MiB) + b"x"
    assert os.stat(p).st_blocks * 512 <= 64 * KiB
    assert used_bytes(volume) <= df(64 * KiB)


def test_statfs_counts_data(volume: MountedVolume) -> None:
    st = os.statvfs(volume.mountpoint)
    assert st.f_blocks * st.f_frsize == 1 * GiB
    assert st.f_bsize == st.f_frsize == 4096
    assert st.f_bfree == st.f_bavail == st.f_blocks        # a new volume: all free
    assert st.f_namemax == 255
    assert st.f_files > 0 and st.f_ffree == st.f_favail == st.f_files - 1   # the root
    data = os.urandom(4 * MiB)
    (volume / "a").write_bytes(data)
    assert used_bytes(volume) == 4 * MiB
    (volume / "b").write_bytes(data)                       # the same blocks: stored once
    assert used_bytes(volume) == 4 * MiB
    (volume / "c").write_bytes(os.urandom(1 * MiB) + b"x")   # "x": a random 0 would be a hole
    assert used_bytes(volume) == df(5 * MiB + 1)
    assert os.statvfs(volume.mountpoint).f_ffree == st.f_files - 4
    os.unlink(volume / "a")
    assert wait_used_bytes(volume, df(5 * MiB + 1)) == df(5 * MiB + 1)   # b still holds it
    remount(volume)
    assert used_bytes(volume) == df(5 * MiB + 1)
    os.unlink(volume / "b")
    assert wait_used_bytes(volume, df(1 * MiB + 1)) == df(1 * MiB + 1)
    os.truncate(volume / "c", 100 * KiB)
    assert used_bytes(volume) == df(100 * KiB)
    os.unlink(volume / "c")
    assert wait_used_bytes(volume, 0) == 0
    assert os.statvfs(volume.mountpoint).f_ffree == st.f_files - 1


@pytest.mark.volume(size=8 * MiB)
def test_full_volume_gives_enospc_and_recovers(volume: MountedVolume) -> None:
    st = os.statvfs(volume.mountpoint)
    assert st.f_blocks * st.f_frsize == 8 * MiB
    precious = os.urandom(1 * MiB)
    (volume / "precious").write_bytes(precious)
    chunk = os.urandom(1 * MiB)
    written = 0
    # With the writeback cache the worker sees the data after write() returned, so the
    # error may surface from write(), fsync() or close(): any of them, but it must be ENOSPC.
    with pytest.raises(OSError) as info:
        fd = os.open(volume / "fill", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            for i in range(16):                            # twice what the volume holds
                os.write(fd, chunk[i:] + chunk[:i])        # distinct blocks, no dedup
                written += 1
            os.fsync(fd)
        finally:
            os.close(fd)
    assert info.value.errno == errno.ENOSPC, info.value
    assert used_bytes(volume) > 6 * MiB
    assert used_bytes(volume) <= 8 * MiB
    drop_cache(volume / "precious")
    assert (volume / "precious").read_bytes() == precious
    # Overwriting in place needs no new space, as on ext4: a full volume still allows it.
    patch = os.urandom(100 * KiB)
    with open(volume / "precious", "r+b") as f:
        f.seek(10_000)
        f.write(patch)
        f.flush()
        os.fsync(f.fileno())
    precious = precious[:10_000] + patch + precious[10_000 + len(patch):]
    drop_cache(volume / "precious")
    assert (volume / "precious").read_bytes() == precious
    # A new file still fails while the volume is full.
    with pytest.raises(OSError) as info, open(volume / "small", "wb") as f:
        f.write(os.urandom(2 * MiB))
    assert info.value.errno == errno.ENOSPC
    # Shrinking a file on a full volume works too (the cut block is rewritten shorter).
    full = used_bytes(volume)
    os.truncate(volume / "fill", 3 * MiB + 5)
    assert used_bytes(volume) < full
    os.unlink(volume / "fill")
    os.unlink(volume / "small")
    assert wait_used_bytes(volume, df(1 * MiB)) == df(1 * MiB)
    again = os.urandom(5 * MiB)
    with open(volume / "again", "wb") as f:
        f.write(again)
        f.flush()
        os.fsync(f.fileno())
    assert used_bytes(volume) == df(6 * MiB)
    remount(volume)
    assert hashlib.sha256((volume / "precious").read_bytes()).digest() == hashlib.sha256(
        precious).digest()
    assert (volume / "again").read_bytes() == again
    assert sorted(os.listdir(volume.mountpoint)) == ["again", "precious"]
