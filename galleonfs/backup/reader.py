"""Reading one backup back: its records in key order, and the blobs they reference, verified.

The volume side restores a backup into a new volume like this::

    with open_backup(repo, backup_id) as r:
        for records, blobs in r.walk(have=new_volume.has_block):
            for block_id, (kind, data) in blobs.items():   # kind 3: the volume's own frame
                new_volume.put_block(block_id, data)
            for rec in records:
                new_volume.put_record(rec.key, rec.value)

``walk`` streams: a window of records (bounded by the bytes of blobs they need and by a record
count), the blobs of the next window already downloading while this one is handed over.
Every blob is authenticated before it is handed over; a missing, altered or cut object raises
``BlobMissing``, ``ObjectMissing``, ``ObjectCorrupt`` or ``ObjectTruncated`` naming it.

What it must not do: hand over a record before the blobs it references, or unverified bytes.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING

from . import limits
from .errors import BlobMissing
from .layout import BACKUPS
from .locks import Lock
from .manifests import BackupInfo, ChunkRef, Record
from .packs import Entry
from .progress import Meter, ProgressCallback

if TYPE_CHECKING:
    from .repository import Repository

Window = tuple[list[Record], dict[bytes, tuple[int, bytes]]]


def open_backup(repo: Repository, backup_id: str, *, lock: bool = True) -> BackupReader:
    """Read one backup (see ``BackupReader``). With ``lock`` (the default) a shared lock
    keeps GC from moving its blobs while it is read; without, a read-only credential
    suffices."""
    held = repo.lock(exclusive=False, purpose=f"restore of {backup_id}") if lock else None
    try:
        manifest = repo.pool.submit(repo.read_manifest, backup_id)     # while the index loads
        try:
            try:
                repo.load_index()
            except BaseException:
                manifest.result()    # a backup that is not there is answered as such first
                raise
            info, chunks = manifest.result()
        finally:
            manifest.cancel()
    except BaseException:
        if held is not None:
            held.release()
        raise
    return BackupReader(repo, info, chunks, held)


class BackupReader:
    def __init__(self, repo: Repository, info: BackupInfo, chunks: list[ChunkRef], lock: Lock | None) -> None:
        self.repo, self.info, self.chunks, self._lock = repo, info, chunks, lock
        self._name = BACKUPS + info.backup_id
        self._first_keys = [c.first_key for c in chunks]

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self, chunk: ChunkRef) -> list[Record]:
        return self.repo.load_chunk(chunk, self._name)

    def records(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[Record]:
        """Records with ``start <= key < stop`` in key order; chunks are fetched ahead."""
        first = max(0, bisect.bisect_right(self._first_keys, start) - 1)
        last = len(self.chunks) if stop is None else bisect.bisect_left(self._first_keys, stop)
        todo = iter(self.chunks[first:last])
        ahead: deque[Future[list[Record]]] = deque()
        try:
            for chunk in todo:
                ahead.append(self.repo.pool.submit(self._load, chunk))
                if len(ahead) >= limits.chunk_prefetch:
                    break
            while ahead:
                records = ahead.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append(self.repo.pool.submit(self._load, nxt))
                for r in records:
                    if r.key >= start and (stop is None or r.key < stop):
                        yield r
        finally:
            for fut in ahead:
                fut.cancel()

    def get(self, key: bytes) -> Record | None:
        i = bisect.bisect_right(self._first_keys, key) - 1
        if i < 0:
            return None
        for r in self._load(self.chunks[i]):
            if r.key == key:
                return r
        return None

    def blobs(self, ids: Iterator[bytes] | list[bytes], *,
              progress: ProgressCallback | None = None) -> Iterator[tuple[bytes, int, bytes]]:
        """The blobs ``ids`` as ``(id, kind, bytes)``, verified, in no particular order."""
        meter = Meter("restore", progress, limits.progress_interval_s)
        yield from self.repo.read_blobs(ids, meter=meter)
        meter.finish()

    def walk(self, *, have: Callable[[bytes], bool] | None = None,
             progress: ProgressCallback | None = None) -> Iterator[Window]:
        """Windows of ``(records, {blob id: (kind, bytes)})`` in key order, each window's blobs
        being those its records reference that ``have`` says are missing and that no earlier
        window handed over (so every referenced blob is handed over exactly once)."""
        meter = Meter("restore", progress, limits.progress_interval_s)
        blobs = self.repo.index.blobs
        handed: set[bytes] = set()
        previous: tuple[list[Record], list[Future[list[tuple[Entry, bytes]]]]] | None = None
        records: list[Record] = []
        ids: list[bytes] = []
        size = 0
        try:
            for record in self.records():
                records.append(record)
                for ref in record.refs:
                    if ref in handed or (have is not None and have(ref)):
                        continue
                    loc = blobs.get(ref)
                    if loc is None:
                        raise BlobMissing(blob=ref.hex(), target=self.repo.url,
                                          context=f" (backup {self.info.backup_id} references it)")
                    handed.add(ref)
                    ids.append(ref)
                    size += loc[1].stored_len
                if size >= limits.restore_batch_bytes or len(records) >= limits.restore_window_records:
                    current = (records, self.repo.start_reads(ids) if ids else [])
                    if previous is not None:
                        yield self._finish(previous, meter)
                    previous, records, ids, size = current, [], [], 0
            current = (records, self.repo.start_reads(ids) if ids else [])
            if previous is not None:
                yield self._finish(previous, meter)
            previous = None
            if records:
                yield self._finish(current, meter)
        finally:
            if previous is not None:
                for fut in previous[1]:
                    fut.cancel()
        meter.finish()

    def _finish(self, window: tuple[list[Record], list[Future[list[tuple[Entry, bytes]]]]],
                meter: Meter) -> Window:
        records, futures = window
        got = {blob_id: (kind, data) for blob_id, kind, data in self.repo.finish_reads(futures, meter)}
        return records, got
