"""The snapshot records as the metadata store holds them, for the layers below snapshots.

Opening a volume, replaying its journal and collecting garbage each need a fact about the
snapshots (the newest generation, which versioning keys on; the segments a clone pins)
without the snapshot operations themselves (``snapshots.py``, which is built on the engine).

What it must not do: change a snapshot record.
"""

from __future__ import annotations

from ..meta.schema import Db, Snapshot
from ..meta.store import MetaStore


def all_snapshots(meta: MetaStore) -> list[Snapshot]:
    """Every snapshot record, ready or being deleted, oldest first."""
    return sorted((Snapshot.decode(v) for _, v in meta.scan(Db.SNAPSHOTS)), key=lambda s: s.gen)


def newest_gen(meta: MetaStore) -> int:
    """The generation of the newest snapshot still needed (0 if none): what versioning keys on."""
    return max((s.gen for s in all_snapshots(meta) if s.ready), default=0)


def pinned_segment_max(meta: MetaStore) -> int:
    """Segments up to this number hold frames clones read directly: GC leaves them alone."""
    return max((s.pin_seg for s in all_snapshots(meta)), default=0)
