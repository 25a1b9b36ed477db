"""File times and the kernel's writeback cache: the VFS stamps times from the kernel's own
clock, and a setattr that hands back times it already has writes nothing.

With the writeback cache the kernel owns a regular file's mtime and ctime: it sends them in
a SETATTR whenever its "now" differs from the times it holds. Stamped from the same coarse
clock, a file created and written within one tick needs no SETATTR at close, and the one
the kernel sends after an unlink, link, rename or setxattr hands back what the volume
already has, which must cost no journal record (``vfs/common.now_ns``, ``vfs/attrs.py``).
Directories, and every file without the writeback cache, keep the fine clock: the kernel
never sends their times back.
"""

from __future__ import annotations

import time

import pytest

from galleonfs.testing.clock import CLOCK_REALTIME_COARSE, wait_for_clock_tick
from galleonfs.vfs.vfs import SetAttr, Vfs

from .util import ROOT, USER, Volume


@pytest.fixture
def vfs(vol: Volume) -> Vfs:
    """The volume as a mount with the writeback cache serves it (the kernel owns times)."""
    return Vfs(vol.vfs.engine, kernel_times=True)


def coarse_ns() -> int:
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


def kernel_flush(v: Vfs, ino: int) -> SetAttr:
    """The SETATTR ``fuse_flush_times`` sends: the mtime and ctime the kernel holds, which
    are the ones the volume last replied with when nothing changed since."""
    inode = v.getattr(ino)
    return SetAttr(mtime_ns=inode.mtime_ns, ctime_ns=inode.ctime_ns)


def test_new_files_are_stamped_from_the_kernels_coarse_clock(vfs: Vfs) -> None:
    before = coarse_ns()
    f = vfs.create(ROOT, b"f", 0o644, USER)
    after = coarse_ns()
    # The coarse clock's values, not the fine clock's: a write by the kernel in the same
    # tick finds mtime == ctime == its "now" and leaves the inode clean.
    assert f.mtime_ns == f.ctime_ns == f.atime_ns
    assert f.mtime_ns in (before, after)
    linked = vfs.link(f.ino, ROOT, b"g", USER)
    assert linked.ctime_ns in range(after, coarse_ns() + 1)


def test_directories_keep_the_fine_clock(vfs: Vfs) -> None:
    """The kernel never sends a directory's times back (FUSE directories are S_NOCMTIME),
    so they keep the finer clock, and a change after a create always moves them."""
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)
    vfs.create(d.ino, b"f", 0o644, USER)
    again = vfs.getattr(d.ino)
    assert again.mtime_ns > d.mtime_ns


def test_a_setattr_that_changes_nothing_journals_nothing(vfs: Vfs) -> None:
    f = vfs.create(ROOT, b"f", 0o644, USER)
    vfs.release(f.ino)
    lsn = vfs.engine.appended_lsn
    for changes in (kernel_flush(vfs, f.ino),
                    SetAttr(mode=0o644, ctime_ns=f.ctime_ns),        # tar's chmod to what it is
                    SetAttr(uid=USER.uid, gid=USER.gid, ctime_ns=f.ctime_ns),
                    SetAttr(size=0, mtime_ns=f.mtime_ns, ctime_ns=f.ctime_ns)):
        got = vfs.setattr(f.ino, changes)
        assert (got.mode, got.uid, got.gid, got.size, got.mtime_ns, got.ctime_ns) == (
            f.mode, f.uid, f.gid, 0, f.mtime_ns, f.ctime_ns)
    assert vfs.engine.appended_lsn == lsn


def test_a_setattr_that_changes_a_time_is_journaled_and_kept(vol: Volume, vfs: Vfs) -> None:
    f = vfs.create(ROOT, b"f", 0o644, USER)
    vfs.release(f.ino)
    lsn = vfs.engine.appended_lsn
    got = vfs.setattr(f.ino, SetAttr(mtime_ns=f.mtime_ns, ctime_ns=f.ctime_ns + 1))
    assert got.ctime_ns == f.ctime_ns + 1
    assert vfs.engine.appended_lsn > lsn
    vfs.forget([(f.ino, 1)])
    assert vol.reopen().getattr(f.ino).ctime_ns == f.ctime_ns + 1


def test_a_chmod_without_a_kernel_ctime_still_moves_ctime(vol: Volume, vfs: Vfs) -> None:
    """A SETATTR without a ctime: the volume stamps its own, and once the clock has ticked
    that is a change, journaled like any other."""
    f = vfs.create(ROOT, b"f", 0o644, USER)
    vfs.release(f.ino)
    wait_for_clock_tick()
    lsn = vfs.engine.appended_lsn
    got = vfs.setattr(f.ino, SetAttr(mode=0o644))
    assert got.ctime_ns > f.ctime_ns
    assert vfs.engine.appended_lsn > lsn
    vfs.forget([(f.ino, 1)])
    assert vol.reopen().getattr(f.ino).ctime_ns == got.ctime_ns


def test_the_kernels_ctime_flush_after_an_unlink_is_free(vfs: Vfs) -> None:
    """UNLINK, then the kernel's SETATTR of the ctime it stamped in the same tick, then FORGET:
    the SETATTR writes no record and the file is gone after the FORGET."""
    f = vfs.create(ROOT, b"f", 0o644, USER)
    vfs.write(f.ino, 0, b"x" * 5000)
    vfs.release(f.ino)
    vfs.unlink(ROOT, b"f", USER)
    orphan = vfs.getattr(f.ino)
    assert orphan.nlink == 0
    lsn = vfs.engine.appended_lsn
    vfs.setattr(f.ino, SetAttr(mtime_ns=orphan.mtime_ns, ctime_ns=orphan.ctime_ns))
    assert vfs.engine.appended_lsn == lsn
    vfs.forget([(f.ino, 1)])
    assert vfs.engine.used_bytes == 0
    assert vfs.statfs().files_free == vfs.statfs().files - 1        # only the root is left
