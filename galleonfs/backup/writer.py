"""Writing one backup: blobs into packs on a bounded pool, records into the table, then the manifest.

The volume side drives a ``BackupWriter`` from one thread::

    with begin_backup(repo, volume_name=..., volume_id=..., generation=G, parent=prev) as w:
        for block_id, frame in changed_blocks:          # ids are the volume's keyed ids
            if not w.has_blob(block_id):                # skip reading what is stored
                w.put_blob(block_id, frame, sealed=volume_is_encrypted)
        for key, value, block_ids in changed_records:   # in increasing key order
            w.put_record(key, value, block_ids)         # or w.delete_record(key)
        info = w.commit()

Blobs are gathered into packs on the calling thread; each full pack is sealed (zstd, then
AES-256-GCM) and stored by one task of the pool; at most ``threads + packs_queued_max``
packs wait, so memory is bounded and a slow target slows the caller instead of filling
memory. Every
``index_flush_packs`` stored packs (and at commit) an index object names them.

Order of commit (why an interrupted backup leaves nothing that looks like a backup): the
last pack is stored and every pack is indexed, the lock is checked, and only then the
manifest is put, in one atomic put. Killed before that, the backup does not exist; its
packs are either indexed or found again by the next writer from their own tails
(``Repository.reconcile_packs``), so a rerun stores only what is still missing.

What it must not do: write a manifest that names a blob the repository does not hold, or
after its lock may have lapsed.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import zstandard

from ..errors import InvalidArgument
from . import limits
from .errors import BlobMissing
from .index import PackInfo
from .layout import BACKUPS, ID_BYTES
from .locks import Lock
from .manifests import BackupInfo, ChunkRef, Record, check_record, encode_chunk, encode_manifest
from .packs import KIND_DATA, KIND_META, KIND_SEALED, PackBuilder, pack_name
from .progress import Meter, ProgressCallback
from .table import TableWriter, make_boundary

if TYPE_CHECKING:
    from .repository import Repository


class PackSink:
    """Gathers blobs into packs; each full pack is sealed and stored by one pool task.

    Sealing (zstd, AES-256-GCM) runs on the pool, not on the caller's thread, so a node's
    cores seal packs in parallel while the caller goes on hashing and reading blocks (zstd
    and OpenSSL release the GIL). A pack closes at ``pack_target_bytes`` of raw blob bytes:
    compressible data makes smaller objects, never larger ones.
    """

    def __init__(self, repo: Repository, meter: Meter) -> None:
        self.repo, self.meter = repo, meter
        self._blobs: list[tuple[bytes, int, bytes]] = []
        self._raw = 0
        self._slots = threading.BoundedSemaphore(repo.pool_threads + limits.packs_queued_max)
        self._inflight: deque[Future[PackInfo]] = deque()
        self._local = threading.local()
        self.stored: list[PackInfo] = []        # stored, not yet named by an index object
        self.packs = 0
        self.bytes_stored = 0

    def add(self, blob_id: bytes, kind: int, data: bytes | bytearray | memoryview) -> None:
        # bytes() copies a view or bytearray the caller may reuse; a bytes object is kept as is.
        self._blobs.append((blob_id, kind, bytes(data)))
        self._raw += len(data)
        if self._raw >= limits.pack_target_bytes or len(self._blobs) >= limits.pack_blobs_max:
            self._ship()
        self.reap()

    def _seal_and_store(self, blobs: list[tuple[bytes, int, bytes]]) -> PackInfo:
        zstd = getattr(self._local, "zstd", None)
        if zstd is None:                        # a compressor is not shareable across threads
            zstd = self._local.zstd = zstandard.ZstdCompressor(level=limits.zstd_level)
        builder = PackBuilder(self.repo.keys, zstd)
        for blob_id, kind, data in blobs:
            builder.add(blob_id, kind, data)
        data = builder.finish()
        self.repo.target.put(pack_name(builder.pack_id), data)
        return PackInfo(builder.pack_id, len(data), tuple(builder.entries))

    def _ship(self) -> None:
        blobs, self._blobs, self._raw = self._blobs, [], 0
        assert blobs
        self._slots.acquire()
        fut = self.repo.pool.submit(self._seal_and_store, blobs)
        fut.add_done_callback(lambda _f: self._slots.release())
        self._inflight.append(fut)

    def reap(self, *, block: bool = False) -> None:
        """Account for stored packs; re-raise the first failed store."""
        while self._inflight and (block or self._inflight[0].done()):
            info = self._inflight.popleft().result()
            self.repo.index.add(info)
            self.stored.append(info)
            self.packs += 1
            self.bytes_stored += info.size
            self.meter.add(transferred=info.size)

    def flush(self) -> None:
        if self._blobs:
            self._ship()
        self.reap(block=True)

    def take_stored(self) -> list[PackInfo]:
        out, self.stored = self.stored, []
        return out

    def abandon(self) -> None:
        """Let stores already running finish (their packs are found again later); drop the rest."""
        self._blobs, self._raw = [], 0
        while self._inflight:
            fut = self._inflight.popleft()
            if not fut.cancel():
                with contextlib.suppress(Exception):
                    fut.result()


def begin_backup(repo: Repository, *, volume_name: str, volume_id: str, generation: int,
                 parent: str | None = None, meta: dict[str, str] | None = None,
                 progress: ProgressCallback | None = None,
                 backup_id: str | None = None, time: datetime | None = None) -> BackupWriter:
    """Start a backup of one volume (see ``BackupWriter``); with ``parent``, an incremental
    on top of it. ``time`` is when the backed-up state was taken (the snapshot's time;
    default now): retention buckets use it."""
    meta = meta or {}
    _check_meta(volume_name, volume_id, generation, meta)
    time = time or datetime.now(UTC)
    backup_id = backup_id or repo.new_backup_id(time)
    repo.manifest_name(backup_id)
    lock = repo.lock(exclusive=False, purpose=f"backup of volume {volume_name}")
    try:
        # Independent round trips at once (on S3 each is a request's latency): the parent's
        # manifest and whether the id is free go on the pool while this thread reads the
        # index (whose own reads go on the pool too). Packs are listed after the index, as
        # before: a pack indexed by a concurrent writer is then always in the listing.
        pool = repo.pool
        taken = pool.submit(repo.target.head, BACKUPS + backup_id)
        parent_read = pool.submit(repo.read_manifest, parent) if parent is not None else None
        def checks() -> list[ChunkRef]:
            chunks: list[ChunkRef] = []
            if parent_read is not None:
                parent_info, chunks = parent_read.result()
                if parent_info.volume_id != volume_id:
                    raise InvalidArgument(f"backup {parent} is of volume {parent_info.volume_name}, "
                                          f"not of {volume_name}: it cannot be the parent")
            if taken.result() is not None:
                raise InvalidArgument(f"backup {backup_id} exists already in {repo.url}")
            return chunks

        try:
            try:
                repo.load_index()
            except BaseException:
                checks()            # a bad request is answered as such, before a damaged index
                raise
            chunks = checks()
            recovered = repo.reconcile_packs()
        finally:
            for fut in (taken, parent_read):
                if fut is not None:
                    fut.cancel()
    except BaseException:
        lock.release()
        raise
    info = BackupInfo(backup_id, volume_name, volume_id, generation, time, parent,
                      dict(meta), {}, 0, 0, 0)
    meter = Meter("backup", progress, limits.progress_interval_s)
    return BackupWriter(repo, lock, info, chunks, meter, recovered)


class BackupWriter:
    """One backup being written (see the module docstring). Not thread-safe: one caller thread."""

    def __init__(self, repo: Repository, lock: Lock, info: BackupInfo, parent_chunks: Sequence[ChunkRef],
                 meter: Meter, recovered: int) -> None:
        self.repo, self._lock, self._info = repo, lock, info
        self._meter = meter
        self._sink = PackSink(repo, meter)
        self._added: set[bytes] = set()
        self._closed = False
        parent_name = BACKUPS + (info.parent or "")
        self._table = TableWriter(parent_chunks,
                                  load=lambda c: repo.load_chunk(c, parent_name),
                                  emit=self._emit_chunk,
                                  is_boundary=make_boundary(repo.keys.key_hash32))
        self.stats = {"blobs_new": 0, "blobs_known": 0, "bytes_new": 0, "bytes_known": 0,
                      "chunks_new": 0, "records_put": 0, "records_deleted": 0,
                      "packs_recovered": recovered}

    @property
    def backup_id(self) -> str:
        return self._info.backup_id

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"backup {self.backup_id} is already committed or aborted")

    def has_blob(self, blob_id: bytes) -> bool:
        """Whether the repository holds (or this backup has sent) the blob: ask before
        reading a block from the volume, so stored blocks are never read or sent."""
        return blob_id in self._added or blob_id in self.repo.index.blobs

    def put_blob(self, blob_id: bytes, data: bytes | bytearray | memoryview, *, sealed: bool = False) -> bool:
        """Store a blob under the caller's keyed id; False when it was stored already.

        ``sealed``: the bytes are ciphertext already (an encrypted volume's frame) and are
        stored as given, covered by the pack's authenticated index; otherwise they are
        compressed and encrypted here."""
        self._check_open()
        if len(blob_id) != ID_BYTES:
            raise InvalidArgument(f"a blob id has {ID_BYTES} bytes, not {len(blob_id)}")
        if len(data) > limits.blob_max_bytes:
            raise InvalidArgument(f"a blob has at most {limits.blob_max_bytes} bytes, not {len(data)}")
        if self.has_blob(blob_id):
            self.stats["blobs_known"] += 1
            self.stats["bytes_known"] += len(data)
            self._meter.add(done=len(data), items=1)
            return False
        self._sink.add(blob_id, KIND_SEALED if sealed else KIND_DATA, data)
        self._added.add(blob_id)
        self.stats["blobs_new"] += 1
        self.stats["bytes_new"] += len(data)
        self._meter.add(done=len(data), items=1)
        self._maybe_flush_index()
        return True

    def _maybe_flush_index(self) -> None:
        if len(self._sink.stored) >= limits.index_flush_packs:
            self.repo.write_index(self._sink.take_stored())

    def _emit_chunk(self, records: list[Record]) -> ChunkRef:
        data = encode_chunk(records)
        blob_id = self.repo.keys.blob_id(data)
        if not self.has_blob(blob_id):
            self._sink.add(blob_id, KIND_META, data)
            self._added.add(blob_id)
            self.stats["chunks_new"] += 1
            self._maybe_flush_index()
        return ChunkRef(records[0].key, blob_id, len(records), len(data),
                        sum(len(r.refs) for r in records))

    def put_record(self, key: bytes, value: bytes = b"", refs: Sequence[bytes] = ()) -> None:
        """Add or replace a record (keys strictly increasing across put and delete calls).
        Every blob in ``refs`` must be stored (``put_blob``) before."""
        self._check_open()
        record = Record(bytes(key), bytes(value), tuple(bytes(r) for r in refs))
        check_record(record)
        for ref in record.refs:
            if not self.has_blob(ref):
                raise InvalidArgument(f"record {record.key.hex()} references blob {ref.hex()}, "
                                      "which is not stored: put_blob it first")
        self._table.put(record)
        self.stats["records_put"] += 1

    def delete_record(self, key: bytes) -> bool:
        """Remove a record the parent had (False when it had none: nothing to remove)."""
        self._check_open()
        removed = self._table.delete(bytes(key))
        self.stats["records_deleted"] += removed
        return removed

    def commit(self) -> BackupInfo:
        """Store what is left, index it, and put the manifest: the backup exists from here."""
        self._check_open()
        chunks = self._table.finish()
        self._sink.flush()
        stored = self._sink.take_stored()
        if stored:
            self.repo.write_index(stored)
        blobs = self.repo.index.blobs
        for c in chunks:
            if c.blob_id not in blobs:
                raise BlobMissing(blob=c.blob_id.hex(), target=self.repo.url,
                                  context=f" (a table chunk of parent backup {self._info.parent})")
        stats = dict(self.stats, packs=self._sink.packs, bytes_stored=self._sink.bytes_stored,
                     chunks_carried=self._table.chunks_carried, chunks_loaded=self._table.chunks_loaded,
                     duration_ms=int(self._meter.snapshot().elapsed_s * 1000))
        i = self._info
        info = BackupInfo(i.backup_id, i.volume_name, i.volume_id, i.generation, i.time, i.parent,
                          i.meta, stats, len(chunks), sum(c.records for c in chunks),
                          sum(c.refs for c in chunks))
        name = BACKUPS + info.backup_id
        self._lock.check()
        self.repo.target.put(name, encode_manifest(self.repo.keys, name, info, chunks))
        self._closed = True
        self._lock.release()
        self._meter.finish()
        return info

    def abort(self) -> None:
        """Give up: nothing becomes a backup; stored packs stay for the next run or for GC."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sink.abandon()
        finally:
            self._lock.release()

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _check_meta(volume_name: str, volume_id: str, generation: int, meta: dict[str, str]) -> None:
    if not volume_name or not volume_id or len(volume_name) > 255 or len(volume_id) > 255:
        raise InvalidArgument("a backup needs a volume name and id of 1 to 255 characters")
    if generation < 0:
        raise InvalidArgument(f"a backup's source generation is >= 0, not {generation}")
    if len(meta) > limits.manifest_meta_items_max or any(
            not isinstance(k, str) or not isinstance(v, str)
            or len(k) + len(v) > limits.manifest_meta_chars_max for k, v in meta.items()):
        raise InvalidArgument(f"backup metadata is at most {limits.manifest_meta_items_max} string "
                              f"pairs of {limits.manifest_meta_chars_max} characters")
