"""The trio ``Committer`` with inline frames: no fsync waits for a segment sync.

A run of small appends, each followed by the commit an ``fsync`` waits for: every commit
syncs the journal only, and the segments are synced in the background once inline frames
fill half their window, so the window never fills and a commit never pays two syncs. A
checkpoint in the middle of a flush voids it and loses nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from galleonfs import limits
from galleonfs.engine.committer import Committer
from galleonfs.engine.engine import CommitBatch, Engine
from galleonfs.engine.fsck import fsck
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 4096


def test_fsync_commits_never_sync_segments_and_background_flushes_keep_the_window_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=1 << 30, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    ino = vfs.create(1, b"log", 0o644, ROOT_CTX).ino
    data = os.urandom(BS * 600)
    batches: list[CommitBatch] = []
    begin = engine.begin_commit

    def recording() -> CommitBatch:
        batch = begin()
        batches.append(batch)
        return batch
    monkeypatch.setattr(engine, "begin_commit", recording)
    committer = Committer(engine)

    async def appends() -> None:
        vfs.write(ino, 0, data[:BS])
        await committer.commit()
        batches.clear()                          # the first commit syncs the new segment file
        for i in range(1, 600):
            vfs.write(ino, i * BS, data[i * BS:(i + 1) * BS])
            await committer.commit()
            await trio.sleep(0)                  # let a finished flush report back
        await committer.wait_idle()

    try:
        trio.run(appends)
        assert len(batches) == 599
        assert sum(len(b.data_files) for b in batches) == 0, "an fsync's commit synced a segment"
        assert committer.flushes >= (599 * BS) // limits.journal_inline_window_bytes
        assert engine.journal.inline_unsynced < limits.journal_inline_window_bytes
        vfs.release(ino)
        assert vfs.read(ino, 0, len(data)) == data
    finally:
        engine.close()
    assert fsck(vol).clean


def test_a_checkpoint_during_a_flush_voids_it(tmp_path: Path) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=1 << 30, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    ino = vfs.create(1, b"f", 0o644, ROOT_CTX).ino
    data = os.urandom(BS * 100)
    try:
        vfs.write(ino, 0, data[:BS])
        engine.commit()
        for i in range(1, 100):
            vfs.write(ino, i * BS, data[i * BS:(i + 1) * BS])
            batch = engine.begin_commit()
            batch.run()
            engine.end_commit(batch)
        flush = engine.begin_flush()
        assert flush is not None and flush.data_files
        engine.checkpoint()                       # takes and syncs the segments itself
        assert not engine.flush_current(flush)
        flush.run()
        engine.end_flush(flush)                   # void: counts stay as the checkpoint left them
        assert engine.journal.inline_unsynced == 0 and engine.segments.unsynced_bytes == 0
        vfs.release(ino)
    finally:
        engine.close()
    engine = Engine.open(vol)
    try:
        assert Vfs(engine, atime=False).read(ino, 0, len(data)) == data
    finally:
        engine.close()
