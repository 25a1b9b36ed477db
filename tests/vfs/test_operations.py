"""Operation scopes (``engine.operation()``) and the write path's index lookups, on a real
engine without a kernel.

What a user relies on: an operation that fails leaves nothing of itself, on disk or in the
running volume, and the next one works; one that succeeds is one journal record; a write
reads each block's index entry once.
"""

from __future__ import annotations

import errno
import os

import pytest

from galleonfs.engine import crashpoints
from galleonfs.engine.engine import Engine
from galleonfs.errors import InvalidArgument
from galleonfs.meta import schema
from galleonfs.meta.schema import Db
from galleonfs.vfs.vfs import Vfs

from .util import BS, ROOT, Volume, fails, new_file


def test_a_successful_operation_is_one_record(vfs: Vfs) -> None:
    engine = vfs.engine
    before = engine.appended_lsn
    with engine.operation():
        engine.meta.put(Db.XATTRS, schema.xattr_key(ROOT, b"user.a"), b"1")
        engine.meta.put(Db.XATTRS, schema.xattr_key(ROOT, b"user.b"), b"2")
    assert engine.appended_lsn == before + 1 and not engine.in_op()


def test_record_splits_an_operation_into_consistent_steps(vfs: Vfs) -> None:
    engine = vfs.engine
    before = engine.appended_lsn
    with engine.operation() as op:
        engine.meta.put(Db.XATTRS, schema.xattr_key(ROOT, b"user.a"), b"1")
        assert op.record() == before + 1
        assert op.record() is None                   # nothing new: no empty record
        engine.meta.put(Db.XATTRS, schema.xattr_key(ROOT, b"user.b"), b"2")
    assert engine.appended_lsn == before + 2


@pytest.mark.allow_warnings
def test_an_error_after_a_change_undoes_the_change_and_the_volume_goes_on(
        vol: Volume, vfs: Vfs, caplog: pytest.LogCaptureFixture) -> None:
    engine = vfs.engine
    new_file(vfs, b"kept", b"journaled before")
    before = engine.appended_lsn
    key = schema.xattr_key(ROOT, b"user.half")
    with pytest.raises(InvalidArgument, match="half way"), engine.operation():
        engine.meta.put(Db.XATTRS, key, b"done")
        engine.sb.inode_count += 7
        raise InvalidArgument("failed half way")
    assert not engine.in_op() and engine.appended_lsn == before
    assert engine.meta.get(Db.XATTRS, key) is None and engine.sb.inode_count == 2
    assert "failed half way); undoing its changes" in caplog.text
    new_file(vfs, b"after", b"works")                # the next operation is whole
    vfs = vol.reopen()
    assert vfs.lookup(ROOT, b"after").size == 5 and vfs.lookup(ROOT, b"kept").size == 16
    assert vfs.engine.meta.get(Db.XATTRS, key) is None and vfs.engine.sb.inode_count == 3


def test_a_simulated_crash_journals_nothing_of_the_operation(vol: Volume, vfs: Vfs) -> None:
    f = new_file(vfs, b"f", b"before")
    fh = vfs.open(f.ino, True)
    lsn = vfs.engine.appended_lsn
    crashpoints.arm("segment.after_append")
    with pytest.raises(crashpoints.SimulatedCrash):
        vfs.write(fh, 0, os.urandom(BS))             # frames written; the record never is
    assert vfs.engine.appended_lsn == lsn
    vfs.engine.close(checkpoint=False)               # as the dying process would: no more writes
    vol.vfs = v = Vfs(Engine.open(vol.path))
    fh = v.open(f.ino, False)
    assert v.read(fh, 0, 100) == b"before"
    v.release(fh)


def test_operations_do_not_nest(vfs: Vfs) -> None:
    engine = vfs.engine
    with engine.operation():
        engine.meta.put(Db.XATTRS, schema.xattr_key(ROOT, b"user.a"), b"1")
        with pytest.raises(AssertionError, match="began inside another"):
            engine.operation().__enter__()
    assert engine.meta.get(Db.XATTRS, schema.xattr_key(ROOT, b"user.a")) == b"1"


def test_a_write_into_a_snapshot_view_is_refused_before_anything(vfs: Vfs) -> None:
    f = new_file(vfs, b"f")
    fails(vfs, errno.EROFS, vfs.write, (1 << 40) | f.ino, 0, b"x")   # a snapshot view's number


def test_a_write_looks_up_each_block_index_entry_once(vfs: Vfs, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [os.urandom(BS) for _ in range(8)]
    f = new_file(vfs, b"f", b"".join(old))
    meta = vfs.engine.meta
    real_get = meta.get
    lookups: list[bytes] = []

    def counting_get(db: Db, key: bytes) -> bytes | None:
        if db == Db.BLOCKS:
            lookups.append(bytes(key))
        return real_get(db, key)

    monkeypatch.setattr(meta, "get", counting_get)   # a spy: the real store answers
    fh = vfs.open(f.ino, True)
    new = [os.urandom(BS) for _ in range(8)]
    vfs.write(fh, 0, b"".join(new))                  # 8 blocks replaced by 8 new ones
    vfs.release(fh)
    monkeypatch.undo()
    ids = {vfs.engine.hash_block(b) for b in old + new}
    assert len(ids) == 16 and sorted(lookups) == sorted(ids)    # each entry once, not 2-3 times
    assert vfs.engine.used_bytes == 8 * BS
