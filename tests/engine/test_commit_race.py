"""A group commit running in a thread while the writer goes on appending and rolling files.

Regression: a rolled file that a running sync covered was closed when that sync ended,
although appends made during the sync had queued it for the next one, which then synced
a closed descriptor and crashed the mount worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from galleonfs import limits
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck


def test_files_rolled_during_a_sync_stay_open_until_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "segment_size_max_bytes", 256 * 1024)
    monkeypatch.setattr(limits, "journal_file_size_max_bytes", 4096)
    Engine.create(str(tmp_path / "v"), size=1 << 30, block_size=64 * 1024)
    engine = Engine.open(str(tmp_path / "v"))
    blocks = [os.urandom(64 * 1024) for _ in range(12)]
    try:
        engine.store_blocks(blocks[:2])
        engine.end_op()
        running = engine.begin_commit()            # taken, as if its thread were still syncing
        for block in blocks[2:]:                   # meanwhile: appends that roll both files
            engine.store_blocks([block])
            engine.end_op()
        running.run()
        engine.end_commit(running)
        engine.commit()                            # crashed with "negative file descriptor"
        assert engine.durable_lsn == engine.appended_lsn
        ids = [engine.hash_block(b) for b in blocks]
        engine.blocks.cache.clear()
        assert engine.read_blocks(ids) == blocks
        for bid in ids:                            # no file refers to them: release them
            engine.unref_block(bid)
        engine.end_op()
    finally:
        engine.close()
    assert fsck(str(tmp_path / "v")).clean
