"""``SegmentStats``: bytes written to and still live in each data segment.

Role: the accounting GC decides by (a segment whose live fraction is low is compacted), kept
in memory and persisted (``segments`` database) with the operation that changed it. Every
change of a segment's counters goes through the four methods here, whoever makes it (a
store, a GC copy, a flatten, a rekey move, an unreference).

What it must not do: touch segment files (``segments.py`` does), or decide what is live
(the block index does).
"""

from __future__ import annotations

from ..meta import schema
from ..meta.schema import Db
from ..meta.store import MetaStore


class SegmentStats:
    def __init__(self, meta: MetaStore) -> None:
        self._stats: dict[int, list[int]] = {}    # segment -> [bytes written, bytes live]
        self._dirty: set[int] = set()
        self.dead: list[int] = []                 # emptied by GC, unlinked at the next checkpoint
        self.reload(meta)

    def reload(self, meta: MetaStore) -> None:
        """The counters as the metadata store has them (at open, after a replay or rebuild)."""
        self._stats = {schema.seg_of_key(k): list(schema.decode_segstats(v))
                       for k, v in meta.scan(Db.SEGMENTS)}
        self._dirty.clear()

    # --- changes -------------------------------------------------------------------------------
    def appended(self, seg: int, nbytes: int) -> None:
        """``nbytes`` of live frames were appended to ``seg``."""
        stats = self._stats.setdefault(seg, [0, 0])
        stats[0] += nbytes
        stats[1] += nbytes
        self._dirty.add(seg)

    def died(self, seg: int, nbytes: int) -> None:
        """``nbytes`` of frames in ``seg`` are no longer referenced (dead space for GC)."""
        stats = self._stats.get(seg)
        if stats is not None:
            stats[1] -= nbytes
            self._dirty.add(seg)

    def emptied(self, seg: int, meta: MetaStore) -> None:
        """GC moved everything out of ``seg``: forget it; its file goes at the next checkpoint."""
        del self._stats[seg]
        self._dirty.discard(seg)
        meta.delete(Db.SEGMENTS, schema.segment_key(seg))
        self.dead.append(seg)

    def recount(self, seg: int, live: int) -> None:
        """fsck --repair: ``seg`` holds ``live`` bytes of referenced frames."""
        written = self._stats.get(seg, [0, 0])[0]
        self._stats[seg] = [max(written, live), live]
        self._dirty.add(seg)

    # --- reading -------------------------------------------------------------------------------
    def get(self, seg: int) -> tuple[int, int]:
        """``(bytes written, bytes live)`` of ``seg`` ((0, 0) if it holds nothing)."""
        written, live = self._stats.get(seg, (0, 0))
        return written, live

    def __contains__(self, seg: int) -> bool:
        return seg in self._stats

    def snapshot(self) -> dict[int, tuple[int, int]]:
        return {seg: (written, live) for seg, (written, live) in self._stats.items()}

    # --- the operation's record ----------------------------------------------------------------
    @property
    def changed(self) -> bool:
        return bool(self._dirty)

    def persist(self, meta: MetaStore) -> None:
        if not self._dirty:
            return
        for seg in self._dirty:
            written, live = self._stats[seg]
            meta.put(Db.SEGMENTS, schema.segment_key(seg), schema.encode_segstats(written, live))
        self._dirty.clear()

    def forget_changes(self) -> None:
        self._dirty.clear()
