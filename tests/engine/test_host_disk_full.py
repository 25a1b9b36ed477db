"""Engine tier: a full host disk is an errno, never a crash (engine/space.py), without FUSE.

The disk is real: a small tmpfs (``SmallDisk``) under the volume, filled by a file outside
the volume, so that data segments, the journal and LMDB all meet the kernel's ENOSPC. Where
one exact write must fail (a journal record after admission, an fdatasync) the
``FailingStorage`` double arms it. Each test ends with the volume reopened and checked.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from test_engine import tree, write_file

from galleonfs import limits
from galleonfs.engine.engine import JOURNAL_DIR, Engine
from galleonfs.engine.fsck import fsck
from galleonfs.engine.space import RESERVE_FILE
from galleonfs.errors import IOFailure, NoSpace, NotFound, ReadOnly
from galleonfs.testing.disk import SmallDisk
from galleonfs.testing.faulty import FailingStorage
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

KiB = 1024
MiB = 1024 * KiB
BS = 64 * KiB


def _data_bytes(vol: str) -> int:
    data = Path(vol) / "data"
    return sum(p.stat().st_size for p in data.iterdir())


def _journal_bytes(vol: str) -> int:
    return sum(p.stat().st_size for p in (Path(vol) / JOURNAL_DIR).iterdir())


def _assert_clean(vol: str) -> None:
    report = fsck(vol)
    assert report.clean, report.render()


@pytest.mark.allow_warnings
def test_a_write_that_needs_space_gets_enospc_changes_nothing_and_works_once_space_is_back(tmp_path: Path) -> None:
    with SmallDisk(tmp_path / "disk", 40 * MiB) as disk:
        vol = str(disk.path / "vol")
        Engine.create(vol, size=1 << 30, block_size=BS)          # 25 times the disk
        engine = Engine.open(vol)
        reserve = Path(vol) / RESERVE_FILE
        assert reserve.stat().st_blocks * 512 >= limits.volume_reserve_bytes
        vfs = Vfs(engine, atime=False)
        keep = os.urandom(MiB)
        write_file(vfs, "keep", keep)
        engine.commit()
        ino = write_file(vfs, "grow", b"")
        filler = disk.fill()
        used, data_before = engine.used_bytes, _data_bytes(vol)

        vfs.open(ino, True)
        with pytest.raises(NoSpace) as refused:
            vfs.write(ino, 0, os.urandom(256 * KiB))
        assert refused.value.errno == errno.ENOSPC
        assert not engine.in_op()
        assert vfs.getattr(ino).size == 0 and engine.used_bytes == used
        assert _data_bytes(vol) == data_before, "the failed append left bytes in the segment"
        assert engine.space.full and engine.space.enospc_total == 1
        assert not engine.space.reserve_released                 # data alone never takes it

        # While full, even a write that would fit is refused up front (the rest is for the
        # journal and checkpoints), metadata goes on in the journal's allocated headroom, and
        # reads are served.
        with pytest.raises(NoSpace):
            vfs.write(ino, 0, b"x" * 100)
        vfs.mkdir(1, b"made-while-full", 0o755, ROOT_CTX)
        assert tree(vfs)["keep"] == keep
        assert vfs.statfs().blocks_avail == 0
        assert engine.space.poll() is False

        disk.unfill(filler)
        assert engine.space.poll() is True
        assert not engine.space.full
        again = os.urandom(256 * KiB)
        vfs.write(ino, 0, again)
        vfs.release(ino)
        vfs.forget([(ino, 1)])
        engine.close()

        engine = Engine.open(vol)
        files = tree(Vfs(engine, atime=False))
        assert files == {"keep": keep, "grow": again, "made-while-full": None}
        engine.close()
        _assert_clean(vol)


@pytest.mark.allow_warnings
def test_a_checkpoint_on_a_full_disk_uses_the_reserve_then_is_deferred_and_loses_nothing(tmp_path: Path) -> None:
    with SmallDisk(tmp_path / "disk", 48 * MiB) as disk:
        vol = str(disk.path / "vol")
        Engine.create(vol, size=1 << 30, block_size=BS)
        engine = Engine.open(vol)
        vfs = Vfs(engine, atime=False)
        first = {f"a{i:04d}": str(i).encode() for i in range(3000)}
        for name, data in first.items():
            write_file(vfs, name, data)
        filler = disk.fill()

        # LMDB needs new pages for 3000 files and the disk has none: the commit fails, the
        # transaction is rebuilt from the journal, and the retry gets the reserve's space.
        engine.checkpoint()
        assert engine.space.reserve_released and engine.space.full
        assert not (Path(vol) / RESERVE_FILE).stat().st_blocks
        assert engine.sb.applied_lsn == engine.appended_lsn
        assert tree(vfs) == first

        second = {f"b{i:04d}": str(i).encode() for i in range(2000)}
        for name, data in second.items():
            write_file(vfs, name, data)
        filler2 = disk.fill("filler2")
        applied = engine.sb.applied_lsn
        with pytest.raises(NoSpace, match="checkpoint deferred"):
            engine.checkpoint()
        # Deferred, not lost: the transaction was rebuilt from the (durable) journal.
        assert engine.sb.applied_lsn == applied and engine.failsafe is None
        assert tree(vfs) == {**first, **second}
        engine.close()                                      # completes; the journal stays
        assert _journal_bytes(vol) > 0

        # Mounting again on the still full disk replays the journal (its checkpoint is
        # deferred again) and refuses what needs space with ENOSPC, before changing anything.
        engine = Engine.open(vol)
        vfs = Vfs(engine, atime=False)
        assert engine.space.full and engine.space.reserve_released
        assert tree(vfs) == {**first, **second}
        with pytest.raises(NoSpace):
            vfs.mkdir(1, b"refused", 0o755, ROOT_CTX)
        assert not engine.in_op()
        with pytest.raises(NotFound):
            vfs.lookup(1, b"refused")

        disk.unfill(filler)
        disk.unfill(filler2)
        assert engine.space.poll() is True
        assert (Path(vol) / RESERVE_FILE).stat().st_blocks * 512 >= limits.volume_reserve_bytes
        engine.checkpoint()
        engine.close()
        assert _journal_bytes(vol) == 0
        _assert_clean(vol)
        engine = Engine.open(vol)
        assert tree(Vfs(engine, atime=False)) == {**first, **second}
        engine.close()


@pytest.mark.allow_warnings
def test_a_journal_record_that_cannot_be_written_undoes_its_operation(tmp_path: Path) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=1 << 30, block_size=BS)
    storage = FailingStorage()
    engine = Engine.open(vol, storage=storage)
    vfs = Vfs(engine, atime=False)
    write_file(vfs, "before", b"kept")
    journal_size = _journal_bytes(vol)

    storage.fail_append["journal"] = errno.ENOSPC
    with pytest.raises(NoSpace) as refused:
        vfs.mkdir(1, b"lost", 0o755, ROOT_CTX)
    assert refused.value.errno == errno.ENOSPC
    assert not engine.in_op()
    with pytest.raises(NotFound):
        vfs.lookup(1, b"lost")
    assert _journal_bytes(vol) == journal_size, "a torn record was left in the journal"

    del storage.fail_append["journal"]
    engine.space.poll()
    vfs.mkdir(1, b"after", 0o755, ROOT_CTX)
    engine.close()
    _assert_clean(vol)
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == {"before": b"kept", "after": None}
    engine.close()


@pytest.mark.allow_warnings
def test_a_failed_commit_answers_eio_says_which_volume_and_disk_and_goes_read_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=1 << 30, block_size=BS)
    storage = FailingStorage()
    engine = Engine.open(vol, storage=storage)
    vfs = Vfs(engine, atime=False)
    write_file(vfs, "f", b"data")

    storage.fail_sync = errno.ENOSPC
    with pytest.raises(IOFailure) as failed:
        engine.commit()
    assert failed.value.errno == errno.EIO
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1, lines
    assert vol in lines[0] and engine.space.disk in lines[0] and "No space left on device" in lines[0]
    # Never acknowledged as durable, and nothing more gets written on top of it.
    assert engine.durable_lsn < engine.appended_lsn
    with pytest.raises(ReadOnly):
        write_file(vfs, "g", b"more")
    storage.fail_sync = None
    engine.close()
    assert engine.needs_check() is not None


def test_a_deleted_file_gives_its_space_back_to_the_host_disk(tmp_path: Path) -> None:
    """GC rolls the mostly dead segment being written and deletes it at the checkpoint: its
    blocks must go back to the disk then, not at unmount (regression: the rolled segment's
    descriptor stayed open, so the deleted file kept its space)."""
    with SmallDisk(tmp_path / "disk", 64 * MiB) as disk:
        vol = str(disk.path / "vol")
        Engine.create(vol, size=1 << 30, block_size=BS)
        engine = Engine.open(vol)
        vfs = Vfs(engine, atime=False)
        keep = os.urandom(MiB)
        write_file(vfs, "keep", keep)
        write_file(vfs, "big", os.urandom(24 * MiB))
        engine.commit()
        low = disk.free_bytes()
        vfs.unlink(1, b"big", ROOT_CTX)
        report = engine.gc()
        assert report.bytes_reclaimed >= 24 * MiB
        assert disk.free_bytes() >= low + 23 * MiB
        assert tree(vfs) == {"keep": keep}
        engine.close()
        _assert_clean(vol)
