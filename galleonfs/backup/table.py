"""A backup's table of records, cut into content-defined chunks, and rewritten incrementally.

A backup's metadata is one sorted table of records (opaque key, opaque value, the blob ids
the record references). It is stored as a list of chunks (metadata blobs) in the manifest.
A chunk ends after a record whose keyed hash is small enough (``is_boundary``), so where
chunks are cut depends on the records near the cut, not on where the table starts.

``TableWriter`` builds the table of a new backup from its parent's chunks plus changes
(``put``/``delete`` in increasing key order): chunks the changes do not touch are carried by
reference (nothing read, nothing written), a touched chunk is read, patched and cut again,
and the cutting falls back onto the parent's cuts within a chunk or two. An incremental
backup that changes k records therefore reads and writes O(k) chunks, whatever the table's
size; a backup without a parent is the same code with an empty parent.

What it must not do: any I/O itself (``load`` and ``emit`` do it), or accept keys out of order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from ..errors import InvalidArgument
from . import limits
from .manifests import ChunkRef, Record


def make_boundary(key_hash32: Callable[[bytes], int]) -> Callable[[Record, int], bool]:
    """The cut rule: after ``record`` when the chunk holds ``pending`` bytes (record included)."""
    def is_boundary(record: Record, pending: int) -> bool:
        if pending >= limits.chunk_max_bytes:
            return True
        if pending < limits.chunk_min_bytes:
            return False
        # A record of s bytes cuts with probability s / chunk_avg_extra_bytes, so chunks
        # average min + avg_extra bytes whether records are 40-byte extents or 60 KiB xattrs.
        return key_hash32(record.key) * limits.chunk_avg_extra_bytes < record.encoded_size << 32
    return is_boundary


class TableWriter:
    def __init__(self, parent: Sequence[ChunkRef], *, load: Callable[[ChunkRef], list[Record]],
                 emit: Callable[[list[Record]], ChunkRef],
                 is_boundary: Callable[[Record, int], bool]) -> None:
        self._parent = list(parent)
        self._next = 0                          # first parent chunk neither carried nor loaded
        self._loaded: deque[Record] = deque()   # records of loaded parent chunks, not yet passed
        self._pending: list[Record] = []        # the chunk being built
        self._pending_bytes = 0
        self._out: list[ChunkRef] = []
        self._last: bytes | None = None
        self._load, self._emit, self._is_boundary = load, emit, is_boundary
        self.chunks_carried = 0
        self.chunks_loaded = 0

    def _order(self, key: bytes) -> None:
        if self._last is not None and key <= self._last:
            raise InvalidArgument("backup records must come in strictly increasing key order "
                                  f"({key.hex()} after {self._last.hex()})")
        self._last = key

    def _add(self, record: Record) -> None:
        self._pending.append(record)
        self._pending_bytes += record.encoded_size
        if self._is_boundary(record, self._pending_bytes):
            self._out.append(self._emit(self._pending))
            self._pending, self._pending_bytes = [], 0

    def _advance(self, key: bytes | None) -> None:
        """Pass every parent record below ``key`` (all of them when None) to the output."""
        parent = self._parent
        while True:
            while self._loaded and (key is None or self._loaded[0].key < key):
                self._add(self._loaded.popleft())
            if self._loaded or self._next == len(parent):
                return
            nxt = parent[self._next]
            if key is not None and nxt.first_key > key:
                return                          # key falls before the next parent chunk
            whole = key is None or (self._next + 1 < len(parent) and parent[self._next + 1].first_key <= key)
            if whole and not self._pending:
                self._out.append(nxt)           # untouched and at a cut: carried by reference
                self.chunks_carried += 1
            else:
                self._loaded.extend(self._load(nxt))
                self.chunks_loaded += 1
            self._next += 1

    def put(self, record: Record) -> None:
        self._order(record.key)
        self._advance(record.key)
        if self._loaded and self._loaded[0].key == record.key:
            self._loaded.popleft()              # replaced
        self._add(record)

    def delete(self, key: bytes) -> bool:
        """Drop ``key``; False when the parent did not have it (nothing to drop)."""
        self._order(key)
        self._advance(key)
        if self._loaded and self._loaded[0].key == key:
            self._loaded.popleft()
            return True
        return False

    def finish(self) -> list[ChunkRef]:
        self._advance(None)
        if self._pending:
            self._out.append(self._emit(self._pending))
            self._pending, self._pending_bytes = [], 0
        return self._out
