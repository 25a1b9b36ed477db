"""Extended attributes and the volume's quota on the VFS without a kernel: ext4's limits and
errnos, what ``df`` would show, and that a refused request changes nothing."""

from __future__ import annotations

import errno
import os

import pytest

from galleonfs import limits
from galleonfs.meta.schema import Inode
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

from .util import BS, ROOT, SIZE, USER, Volume, fails, new_file


# --- extended attributes -------------------------------------------------------------------------
def test_xattrs_are_set_read_listed_removed_and_kept(vol: Volume, vfs: Vfs) -> None:
    f = new_file(vfs, b"f")
    vfs.setxattr(f.ino, b"user.colour", b"blue")
    vfs.setxattr(f.ino, b"user.empty", b"")
    vfs.setxattr(f.ino, b"user.colour", b"green")                 # replaced, not added
    assert vfs.getxattr(f.ino, b"user.colour") == b"green"
    assert vfs.getxattr(f.ino, b"user.empty") == b""
    assert sorted(vfs.listxattr(f.ino)) == [b"user.colour", b"user.empty"]
    vfs.removexattr(f.ino, b"user.empty")
    vfs = vol.reopen()
    assert vfs.listxattr(f.ino) == [b"user.colour"]
    assert vfs.getxattr(f.ino, b"user.colour") == b"green"


def test_xattr_failures_have_the_errno_linux_gives(vfs: Vfs) -> None:
    f = new_file(vfs, b"f")
    fails(vfs, errno.ENODATA, vfs.getxattr, f.ino, b"user.missing")
    fails(vfs, errno.ENODATA, vfs.removexattr, f.ino, b"user.missing")
    fails(vfs, errno.EOPNOTSUPP, vfs.setxattr, f.ino, b"nonamespace", b"v")
    fails(vfs, errno.EINVAL, vfs.setxattr, f.ino, b"user.", b"v")
    fails(vfs, errno.ERANGE, vfs.setxattr, f.ino, b"user." + b"n" * 251, b"v")
    fails(vfs, errno.ERANGE, vfs.getxattr, f.ino, b"")
    fails(vfs, errno.E2BIG, vfs.setxattr, f.ino, b"user.big", b"v" * (limits.xattr_value_max_bytes + 1))
    vfs.setxattr(f.ino, b"user." + b"n" * 250, b"v" * limits.xattr_value_max_bytes)   # both at the limit


def test_the_names_of_one_inode_fit_in_a_listxattr_buffer(vfs: Vfs) -> None:
    f = new_file(vfs, b"f")
    name_len = 250
    count = limits.xattr_list_max_bytes // (name_len + 1)
    for i in range(count):
        vfs.setxattr(f.ino, b"user.%05d" % i + b"n" * (name_len - 10), b"")
    fails(vfs, errno.ENOSPC, vfs.setxattr, f.ino, b"user.one-more" + b"n" * (name_len - 13), b"")
    vfs.setxattr(f.ino, b"user.%05d" % 0 + b"n" * (name_len - 10), b"replacing is fine")
    assert len(vfs.listxattr(f.ino)) == count


def test_trusted_names_are_listed_for_root_only(vfs: Vfs) -> None:
    f = new_file(vfs, b"f")
    vfs.setxattr(f.ino, b"trusted.secret", b"1")
    vfs.setxattr(f.ino, b"user.plain", b"2")
    assert sorted(vfs.listxattr(f.ino, ROOT_CTX)) == [b"trusted.secret", b"user.plain"]
    assert vfs.listxattr(f.ino, USER) == [b"user.plain"]


def test_changing_an_xattr_stamps_ctime_only(vfs: Vfs) -> None:
    f = new_file(vfs, b"f")
    vfs.setxattr(f.ino, b"user.a", b"1")
    inode = vfs.getattr(f.ino)
    assert inode.ctime_ns > f.ctime_ns and inode.mtime_ns == f.mtime_ns


# --- the quota -----------------------------------------------------------------------------------
def test_statfs_shows_the_volume_and_what_is_used(vfs: Vfs) -> None:
    fs = vfs.statfs()
    assert fs.blocks * fs.block_size == SIZE and fs.blocks_free == fs.blocks
    assert fs.name_max == 255 and fs.files_free == fs.files - 1     # the root
    new_file(vfs, b"f", os.urandom(10 * BS))
    fs = vfs.statfs()
    assert (fs.blocks - fs.blocks_free) * fs.block_size == 10 * BS
    assert fs.files_free == fs.files - 2
    assert 0 <= fs.blocks_avail <= fs.blocks_free


def fill(v: Vfs, name: bytes, data: bytes) -> Inode:
    """A file with ``data``, written in 1 MiB requests as the kernel sends them."""
    inode = v.create(ROOT, name, 0o644, USER)
    for offset in range(0, len(data), 1 << 20):
        v.write(inode.ino, offset, data[offset:offset + (1 << 20)])
    v.release(inode.ino)
    v.forget([(inode.ino, 1)])
    return v.getattr(inode.ino)


def test_a_write_that_does_not_fit_is_refused_whole(vfs: Vfs) -> None:
    f = fill(vfs, b"f", os.urandom(SIZE - 4 * BS))
    used = vfs.engine.used_bytes
    fh = vfs.open(f.ino, True)
    fails(vfs, errno.ENOSPC, vfs.write, fh, f.size, os.urandom(8 * BS))
    assert vfs.getattr(f.ino).size == f.size and vfs.engine.used_bytes == used
    vfs.write(fh, 0, os.urandom(8 * BS))        # replacing blocks frees as much as it takes
    assert vfs.engine.used_bytes == used
    vfs.write(fh, f.size, os.urandom(4 * BS))   # what is left fits exactly
    assert vfs.engine.used_bytes == SIZE
    vfs.release(fh)
    vfs.unlink(ROOT, b"f")
    assert vfs.engine.used_bytes == 0


def test_a_write_of_blocks_the_volume_holds_already_fits_a_full_volume(vfs: Vfs) -> None:
    block = os.urandom(BS)
    fill(vfs, b"a", block + os.urandom(SIZE - BS))
    g = new_file(vfs, b"b", block * 16)         # deduplicated: needs no space
    assert g.size == 16 * BS and vfs.engine.used_bytes == SIZE
    fh = vfs.open(g.ino, True)
    fails(vfs, errno.ENOSPC, vfs.write, fh, 0, os.urandom(BS))
    vfs.release(fh)


def test_inodes_run_out_at_the_volumes_inode_quota(vfs: Vfs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "inodes_min", 5)
    monkeypatch.setattr(limits, "inodes_per_byte_divisor", SIZE)   # so the minimum decides
    assert vfs.statfs().files == 5
    for i in range(4):                                              # the root is one of the five
        vfs.forget([(vfs.mkdir(ROOT, b"d%d" % i, 0o755, USER).ino, 1)])
    assert vfs.statfs().files_free == 0
    fails(vfs, errno.ENOSPC, vfs.mkdir, ROOT, b"one-more", 0o755, USER)
    fails(vfs, errno.ENOSPC, vfs.symlink, ROOT, b"link", b"t", USER)
    vfs.rmdir(ROOT, b"d0")
    vfs.forget([(vfs.symlink(ROOT, b"link", b"t", USER).ino, 1)])  # a freed inode is usable again
