"""Deleting a snapshot gives its space back: in the volume's usage at once, and on the disk
(the data directory, what ``df`` and ``du`` see) after GC."""

from __future__ import annotations

import os
from pathlib import Path

from galleonfs.engine import snapshots
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import check_engine
from galleonfs.storage import disk_bytes
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

MiB = 1 << 20


def test_space_held_by_a_deleted_snapshot_comes_back_after_gc(tmp_path: Path) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=256 * MiB)
    engine = Engine.open(vol)
    try:
        vfs = Vfs(engine)
        ino = vfs.create(1, b"big", 0o644, ROOT_CTX).ino
        vfs.write(ino, 0, os.urandom(16 * MiB))
        vfs.release(ino)
        vfs.forget([(ino, 1)])
        snapshots.create(engine, "keep-it")
        vfs.unlink(1, b"big")
        engine.checkpoint()
        engine.gc(live_fraction_min=1.0)
        held_usage, held_disk = engine.used_bytes, disk_bytes(os.path.join(vol, "data"))
        assert held_usage >= 16 * MiB and held_disk >= 16 * MiB      # the snapshot keeps it

        freed = snapshots.delete(engine, "keep-it")
        assert freed == 16 * MiB
        assert engine.used_bytes == held_usage - 16 * MiB
        engine.checkpoint()
        engine.gc(live_fraction_min=1.0)
        assert disk_bytes(os.path.join(vol, "data")) <= held_disk - 15 * MiB
        assert check_engine(engine).clean
    finally:
        engine.close()
