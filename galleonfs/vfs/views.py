"""Views of a volume: the live tree, and each snapshot read at its generation.

FUSE inode numbers carry the view: ``(slot << 40) | inode``. Slot 0 is the live tree; each
snapshot has a slot of its own (never reused, so a kernel cache entry of a deleted
snapshot can never name another). One number of slot 0 is the ``.snapshots`` directory,
which the live root shows to a lookup by name but not to ``readdir``.

What it must not do: write. Snapshot views are read-only; the VFS refuses changes to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..meta.schema import Db
from ..meta.store import MetaStore

SLOT_SHIFT = 40
INO_MASK = (1 << SLOT_SHIFT) - 1
SNAPDIR_INO = INO_MASK                 # in slot 0; live inode numbers stay far below it
SNAPDIR_NAME = b".snapshots"


def split(fino: int) -> tuple[int, int]:
    """``(slot, inode)`` of a FUSE inode number."""
    return fino >> SLOT_SHIFT, fino & INO_MASK


def join(slot: int, ino: int) -> int:
    return (slot << SLOT_SHIFT) | ino


def is_snapshot(fino: int) -> bool:
    return fino >> SLOT_SHIFT != 0 or fino == SNAPDIR_INO


@dataclass(frozen=True, slots=True)
class View:
    slot: int
    gen: int | None                   # None: the live tree

    def get(self, meta: MetaStore, db: Db, key: bytes) -> bytes | None:
        return meta.get(db, key) if self.gen is None else meta.get_at(db, key, self.gen)

    def scan(self, meta: MetaStore, db: Db, prefix: bytes, start: bytes | None = None,
             limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        if self.gen is None:
            return meta.scan(db, prefix=prefix, start=start, limit=limit)
        return meta.scan_at(db, prefix, self.gen, start=start, limit=limit)

    def fuse(self, ino: int) -> int:
        return join(self.slot, ino)


LIVE = View(0, None)
