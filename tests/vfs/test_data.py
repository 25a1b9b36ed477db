"""File contents on the VFS without a kernel: sparse files, read-modify-write at block edges,
truncate both ways, O_TRUNC, dedup, and the errno of each misuse."""

from __future__ import annotations

import errno
import os
import stat

from galleonfs import limits
from galleonfs.vfs.vfs import Ctx, SetAttr, Vfs

from .util import BS, ROOT, USER, Volume, fails, new_file


def read_all(v: Vfs, ino: int) -> bytes:
    fh = v.open(ino, False)
    try:
        return v.read(fh, 0, v.getattr(ino).size + BS)
    finally:
        v.release(fh)


def test_a_write_past_the_end_leaves_a_hole_that_reads_as_zeros_and_costs_nothing(vol: Volume, vfs: Vfs) -> None:
    f = vfs.create(ROOT, b"sparse", 0o644, USER)
    vfs.write(f.ino, 1 << 20, b"tail")
    inode = vfs.getattr(f.ino)
    assert inode.size == (1 << 20) + 4
    # One block holds the tail, stored as long as the file reaches into it.
    assert inode.alloc == 4 and vfs.engine.used_bytes == 4
    assert vfs.read(f.ino, 0, 8) == bytes(8)
    assert vfs.read(f.ino, (1 << 20) - 2, 10) == b"\0\0tail"
    vfs.release(f.ino)
    vfs.forget([(f.ino, 1)])
    vfs = vol.reopen()
    assert read_all(vfs, f.ino) == bytes(1 << 20) + b"tail"


def test_zeros_are_stored_as_holes(vfs: Vfs) -> None:
    f = new_file(vfs, b"zeros", bytes(8 * BS))
    assert f.size == 8 * BS and f.alloc == 0 and vfs.engine.used_bytes == 0
    fh = vfs.open(f.ino, True)
    vfs.write(fh, 2 * BS, b"x")                                   # one block stops being a hole
    vfs.write(fh, 2 * BS, b"\0")                                  # and becomes one again
    vfs.release(fh)
    assert vfs.getattr(f.ino).alloc == 0 and vfs.engine.used_bytes == 0
    assert read_all(vfs, f.ino) == bytes(8 * BS)


def test_writes_across_block_edges_keep_the_bytes_around_them(vfs: Vfs) -> None:
    data = bytearray(os.urandom(4 * BS))
    f = new_file(vfs, b"f", bytes(data))
    fh = vfs.open(f.ino, True)
    for offset, patch in ((BS - 3, b"ABCDEF"), (2 * BS + 100, b"Z" * (BS + 1)), (0, b"!")):
        assert vfs.write(fh, offset, patch) == len(patch)
        data[offset:offset + len(patch)] = patch
    vfs.release(fh)
    assert read_all(vfs, f.ino) == bytes(data)
    assert vfs.getattr(f.ino).alloc == 4 * BS


def test_reads_stop_at_the_end_of_the_file(vfs: Vfs) -> None:
    f = new_file(vfs, b"f", b"0123456789")
    fh = vfs.open(f.ino, False)
    assert vfs.read(fh, 5, 100) == b"56789"
    assert vfs.read(fh, 10, 100) == b"" and vfs.read(fh, 1 << 40, 1) == b""
    assert vfs.read(fh, 3, 0) == b""
    fails(vfs, errno.EINVAL, vfs.read, fh, -1, 10)
    vfs.release(fh)


def test_truncate_cuts_the_last_block_and_growing_again_reads_zeros(vol: Volume, vfs: Vfs) -> None:
    data = os.urandom(3 * BS)
    f = new_file(vfs, b"f", data)
    vfs.setattr(f.ino, SetAttr(size=BS + 10))
    assert vfs.getattr(f.ino).size == BS + 10 and vfs.getattr(f.ino).alloc == BS + 10
    assert vfs.engine.used_bytes == BS + 10
    vfs.setattr(f.ino, SetAttr(size=3 * BS))
    assert read_all(vfs, f.ino) == data[:BS + 10] + bytes(2 * BS - 10)
    vfs = vol.reopen()
    assert read_all(vfs, f.ino) == data[:BS + 10] + bytes(2 * BS - 10)


def test_truncate_to_a_block_edge_and_to_zero(vfs: Vfs) -> None:
    f = new_file(vfs, b"f", os.urandom(3 * BS))
    vfs.setattr(f.ino, SetAttr(size=2 * BS))
    assert vfs.engine.used_bytes == 2 * BS
    vfs.setattr(f.ino, SetAttr(size=0))
    assert vfs.getattr(f.ino).alloc == 0 and vfs.engine.used_bytes == 0


def test_open_with_o_trunc_empties_the_file_and_stamps_it(vfs: Vfs) -> None:
    f = new_file(vfs, b"f", os.urandom(2 * BS))
    before = vfs.getattr(f.ino)
    fh = vfs.open(f.ino, True, truncate=True)
    after = vfs.getattr(f.ino)
    assert after.size == 0 and after.alloc == 0 and vfs.engine.used_bytes == 0
    assert after.mtime_ns > before.mtime_ns and after.ctime_ns == after.mtime_ns
    vfs.release(fh)


def test_misuse_of_files_and_directories_has_linuxs_errno(vfs: Vfs) -> None:
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)
    link = vfs.symlink(ROOT, b"l", b"d", USER)
    f = new_file(vfs, b"f", b"x")
    fails(vfs, errno.EISDIR, vfs.open, d.ino, True)
    fails(vfs, errno.EISDIR, vfs.read, d.ino, 0, 10)
    fails(vfs, errno.EINVAL, vfs.write, d.ino, 0, b"x")
    fails(vfs, errno.EISDIR, vfs.setattr, d.ino, SetAttr(size=0))
    fails(vfs, errno.EINVAL, vfs.setattr, link.ino, SetAttr(size=0))
    fails(vfs, errno.EINVAL, vfs.setattr, f.ino, SetAttr(size=-1))
    fails(vfs, errno.EFBIG, vfs.setattr, f.ino, SetAttr(size=limits.file_size_max_bytes + 1))
    fails(vfs, errno.EINVAL, vfs.write, f.ino, -5, b"x")
    fails(vfs, errno.EFBIG, vfs.write, f.ino, limits.file_size_max_bytes, b"x")
    fails(vfs, errno.EBADF, vfs.release, f.ino)                   # not open
    assert vfs.write(f.ino, 0, b"") == 0
    vfs.forget([(d.ino, 1), (link.ino, 1)])


def test_equal_blocks_are_stored_once_across_files(vfs: Vfs) -> None:
    block = os.urandom(BS)
    a = new_file(vfs, b"a", block * 3)
    b = new_file(vfs, b"b", block)
    assert vfs.engine.used_bytes == BS
    assert a.alloc == 3 * BS and b.alloc == BS                    # each file counts what it uses
    vfs.unlink(ROOT, b"a")
    assert vfs.engine.used_bytes == BS                            # b still uses the block
    vfs.unlink(ROOT, b"b")
    assert vfs.engine.used_bytes == 0


def test_chmod_chown_and_times(vfs: Vfs) -> None:
    f = new_file(vfs, b"f", b"x")
    vfs.setattr(f.ino, SetAttr(mode=0o4755))
    assert stat.S_IMODE(vfs.getattr(f.ino).mode) == 0o4755 and stat.S_ISREG(vfs.getattr(f.ino).mode)
    vfs.setattr(f.ino, SetAttr(uid=2000))                         # chown clears set-user-id
    inode = vfs.getattr(f.ino)
    assert inode.uid == 2000 and stat.S_IMODE(inode.mode) == 0o0755
    vfs.setattr(f.ino, SetAttr(atime_ns=1_000, mtime_ns=2_000, ctime_ns=3_000))
    inode = vfs.getattr(f.ino)
    assert (inode.atime_ns, inode.mtime_ns, inode.ctime_ns) == (1_000, 2_000, 3_000)
    vfs.setattr(f.ino, SetAttr(mode=0o600))
    assert vfs.getattr(f.ino).ctime_ns > 3_000                    # any change stamps ctime


def test_access_checks_owner_group_and_others_bits(vfs: Vfs) -> None:
    f = vfs.create(ROOT, b"f", 0o640, USER)
    vfs.release(f.ino)
    vfs.access(f.ino, 6, USER)                                    # owner: rw
    vfs.access(f.ino, 4, Ctx(2000, 1000))                         # group: r
    fails(vfs, errno.EACCES, vfs.access, f.ino, 2, Ctx(2000, 1000))
    fails(vfs, errno.EACCES, vfs.access, f.ino, 4, Ctx(2000, 2000))
    fails(vfs, errno.EACCES, vfs.access, f.ino, 1, Ctx(0, 0))     # root: x only if someone has it
    vfs.access(f.ino, 6, Ctx(0, 0))
    vfs.forget([(f.ino, 1)])
