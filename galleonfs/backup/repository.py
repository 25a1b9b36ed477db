"""A backup repository on one target: open it, list its backups, read and locate its blobs.

``Repository`` is the core of the package: its target, its keys (``config``), its index, its
manifests and its locks. ``init``/``open`` need only the target and the key, so a fresh node
can list and restore every backup from the target alone (disaster recovery): the catalog
*is* the target (``backups/`` manifests, ``index/``).

The operations on a repository are functions of their own modules that take one:
``writer.begin_backup``, ``reader.open_backup``, ``retention.forget``,
``gc.collect_garbage`` and ``verify.verify`` (the package re-exports them). This module
knows none of them, so each depends on the core and never the other way round.

The index (which pack holds which blob) is loaded from the target's ``index/`` objects into
memory when first needed: ~290 bytes per blob, measured (tracemalloc, 200 000 entries), so
16 M blobs of a 1 TiB volume at 64 KiB would take ~4.7 GB; a compact or on-disk index is
future work. It is the dedup oracle of writers and the map of
readers. A writer takes a shared lock, reloads the index, lists ``packs/`` and forgets
entries whose pack is gone (so it never dedups against a blob GC removed), and learns the
packs an interrupted writer stored but never indexed from their own tails (so a resumed
backup does not send them again).

Reads go through a bounded thread pool: blobs are grouped by pack and neighbours are fetched
with one ranged GET, every blob is authenticated (and its id recomputed where the repository
made it) before it is returned, and a missing, damaged or cut object raises an error that
names it.

What it must not do: import an operation, return bytes that did not verify, delete
anything but the manifests ``delete_backups`` is given (packs and index objects are GC's),
or write a manifest except through a ``BackupWriter`` holding a live lock.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import TypeVar

from ..errors import GalleonError, InvalidArgument
from . import limits
from .errors import (
    BackupNotFound,
    BlobMissing,
    NotARepository,
    ObjectCorrupt,
    ObjectMissing,
    RepositoryExists,
    RepositoryKeyRejected,
)
from .index import Index, PackInfo, decode_index, encode_index
from .keys import (
    Config,
    Keys,
    RepositoryKey,
    config_with_slots,
    new_config,
    new_slot,
    open_config,
    reread_config,
    slot_opens,
)
from .layout import BACKUPS, CONFIG_NAME, INDEX, PACKS
from .locks import Lock
from .manifests import (
    BackupInfo,
    ChunkRef,
    Record,
    decode_chunk,
    manifest_header_length,
    open_manifest_body,
    open_manifest_header,
)
from .packs import (
    KIND_META,
    Entry,
    open_blob,
    open_pack_tail,
    pack_id_of,
    pack_name,
    pack_tail_length,
)
from .progress import Meter
from .sealed import MAGIC_INDEX, seal, unseal
from .targets import Target

T = TypeVar("T")
_BACKUP_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
Blob = tuple[bytes, int, bytes]     # (blob id, kind, bytes as given to put_blob)


class Repository:
    """One repository on one target; use as a context manager (it owns a thread pool)."""

    def __init__(self, target: Target, config: Config, keys: Keys, *,
                 pool_threads: int = limits.pool_threads_default,
                 lock_ttl_s: float = limits.lock_ttl_s,
                 lock_refresh_s: float = limits.lock_refresh_s) -> None:
        if not 1 <= pool_threads <= limits.pool_threads_max:
            raise InvalidArgument(f"backup threads must be 1 to {limits.pool_threads_max}, not {pool_threads}")
        self.target, self.config, self.keys = target, config, keys
        self.pool_threads = pool_threads
        self.lock_ttl_s, self.lock_refresh_s = lock_ttl_s, lock_refresh_s
        self._pool: ThreadPoolExecutor | None = None
        self._index: Index | None = None

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def init(cls, target: Target, key: RepositoryKey, *,
             pool_threads: int = limits.pool_threads_default,
             lock_ttl_s: float = limits.lock_ttl_s,
             lock_refresh_s: float = limits.lock_refresh_s) -> Repository:
        """Create a repository on an empty target (it is then opened, which checks the write)."""
        if target.head(CONFIG_NAME) is not None:
            raise RepositoryExists(target=target.url)
        data, _keys = new_config(key)
        target.put(CONFIG_NAME, data)
        return cls.open(target, key, pool_threads=pool_threads, lock_ttl_s=lock_ttl_s,
                        lock_refresh_s=lock_refresh_s)

    @classmethod
    def open(cls, target: Target, key: RepositoryKey, *,
             pool_threads: int = limits.pool_threads_default,
             lock_ttl_s: float = limits.lock_ttl_s,
             lock_refresh_s: float = limits.lock_refresh_s) -> Repository:
        """Open the repository on ``target`` with ``key``: all a fresh node needs."""
        try:
            data = target.get(CONFIG_NAME)
        except ObjectMissing:
            raise NotARepository(target=target.url) from None
        config, keys = open_config(data, key, target.url)
        return cls(target, config, keys, pool_threads=pool_threads, lock_ttl_s=lock_ttl_s,
                   lock_refresh_s=lock_refresh_s)

    def add_key(self, key: RepositoryKey) -> None:
        """Let ``key`` open the repository too (a new passphrase, a new key file): its own
        slot wraps the same master key, so nothing but ``config`` is rewritten."""
        with self.lock(exclusive=True, purpose="key change"):
            config = reread_config(self.target.get(CONFIG_NAME), self.keys, self.url)
            if any(slot_opens(s, key) for s in config.slots):
                raise InvalidArgument(f"this {key.description} opens the backup repository at {self.url} already")
            if len(config.slots) >= limits.key_slots_max:
                raise InvalidArgument(f"the backup repository at {self.url} has {limits.key_slots_max} keys "
                                      "already; remove one first")
            slots = (*config.slots, new_slot(key, self.keys, config.repo_id))
            self.target.put(CONFIG_NAME, config_with_slots(config, self.keys, slots))
            self.config = reread_config(self.target.get(CONFIG_NAME), self.keys, self.url)

    def remove_key(self, key: RepositoryKey) -> None:
        """Stop ``key`` from opening the repository (after ``add_key`` of its successor).
        The master key stays: whoever saw it (or the data) keeps what they saw."""
        with self.lock(exclusive=True, purpose="key change"):
            config = reread_config(self.target.get(CONFIG_NAME), self.keys, self.url)
            slots = tuple(s for s in config.slots if not slot_opens(s, key))
            if len(slots) == len(config.slots):
                raise RepositoryKeyRejected(kind=key.description, target=self.url)
            if not slots:
                raise InvalidArgument(f"this {key.description} is the last one that opens the backup "
                                      f"repository at {self.url}; add another first")
            self.target.put(CONFIG_NAME, config_with_slots(config, self.keys, slots))
            self.config = reread_config(self.target.get(CONFIG_NAME), self.keys, self.url)

    @property
    def url(self) -> str:
        return self.target.url

    @property
    def repo_id(self) -> str:
        return self.config.repo_id.hex()

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.pool_threads, thread_name_prefix="backup-io")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """The repository's keyed id of ``data`` (for callers without ids of their own)."""
        return self.keys.blob_id(data)

    def lock(self, *, exclusive: bool, purpose: str, wait_s: float = limits.lock_wait_default_s) -> Lock:
        return Lock(self, exclusive=exclusive, purpose=purpose, ttl_s=self.lock_ttl_s,
                    refresh_s=self.lock_refresh_s).acquire(wait_s)

    def parallel(self, fn: Callable[[str], T], names: Iterable[str],
                 on_error: Callable[[str, GalleonError], None] | None = None) -> dict[str, T]:
        """``fn`` over ``names`` on the pool; the first error raises unless ``on_error`` takes it."""
        futures = {self.pool.submit(fn, n): n for n in names}
        out: dict[str, T] = {}
        try:
            for fut in as_completed(futures):
                name = futures[fut]
                try:
                    out[name] = fut.result()
                except GalleonError as exc:
                    if on_error is None:
                        raise
                    on_error(name, exc)
        finally:
            for fut in futures:
                fut.cancel()
        return out

    # --- index ---------------------------------------------------------------------------

    @property
    def index(self) -> Index:
        if self._index is None:
            self.load_index()
        assert self._index is not None
        return self._index

    def replace_index(self, index: Index | None) -> None:
        self._index = index

    def read_index_object(self, name: str) -> list[PackInfo]:
        data = unseal(self.keys, MAGIC_INDEX, name, self.target.get(name), self.url)
        return decode_index(data, name, self.url)

    def load_index(self, *, full: bool = False) -> Index:
        """Bring the index up to date with ``index/``: read only objects not read yet, unless
        some disappeared (GC consolidated them) or ``full``; then start over."""
        names = {n for n, _ in self.target.list(INDEX)}
        index = self._index
        if full or index is None or not index.objects <= names:
            index = Index()
        fresh = self.parallel(self.read_index_object, sorted(names - index.objects))
        for name, packs in fresh.items():
            for info in packs:
                index.add(info)
            index.objects.add(name)
        self._index = index
        return index

    def write_index(self, packs: Sequence[PackInfo]) -> str:
        name = f"{INDEX}{os.urandom(16).hex()}"
        self.target.put(name, seal(self.keys, MAGIC_INDEX, name, encode_index(packs)))
        if self._index is not None:
            self._index.objects.add(name)
        return name

    def read_pack_entries(self, pack_id: bytes, size: int) -> list[Entry]:
        """A pack's entries from its own tail (one ranged GET, two for a large index)."""
        name = pack_name(pack_id)
        tail = self.target.get(name, -min(size, limits.pack_tail_read_bytes))
        if len(tail) < min(size, limits.pack_tail_read_bytes):
            raise ObjectCorrupt(name=name, target=self.url, reason="it shrank while being read")
        need = pack_tail_length(tail, size, name, self.url)
        if need > len(tail):
            tail = self.target.get(name, size - need, need)
        return open_pack_tail(self.keys, pack_id, tail, size, name, self.url)

    def list_packs(self) -> dict[bytes, int]:
        out = {}
        for name, size in self.target.list(PACKS):
            pack_id = pack_id_of(name)
            if pack_id is not None:
                out[pack_id] = size
        return out

    def reconcile_packs(self) -> int:
        """Make the index match ``packs/``: forget entries of packs that are gone, index packs
        that are there but in no index object (stored by an interrupted writer). Returns the
        number of packs recovered. Callers hold a lock."""
        index = self.index
        listed = self.list_packs()
        index.drop_packs({p for p, size in index.packs.items() if listed.get(p) != size})
        orphans = {p: s for p, s in listed.items() if p not in index.packs}
        if not orphans:
            return 0
        recovered: list[PackInfo] = []

        def tail(pack_hex: str) -> list[Entry]:
            pack_id = bytes.fromhex(pack_hex)
            return self.read_pack_entries(pack_id, orphans[pack_id])

        # A damaged orphan is skipped: its blobs are simply sent again.
        found = self.parallel(tail, [p.hex() for p in orphans], on_error=lambda name, exc: None)
        for pack_hex, entries in found.items():
            pack_id = bytes.fromhex(pack_hex)
            recovered.append(PackInfo(pack_id, orphans[pack_id], tuple(entries)))
        if recovered:
            self.write_index(recovered)
            for info in recovered:
                index.add(info)
        return len(recovered)

    def rebuild_index(self) -> int:
        """Repair after lost or damaged index objects: index every pack that no readable index
        object names, from the pack's own authenticated tail. Returns the packs recovered."""
        with self.lock(exclusive=False, purpose="index rebuild"):
            names = {n for n, _ in self.target.list(INDEX)}
            index = Index()
            readable = self.parallel(self.read_index_object, sorted(names), on_error=lambda n, e: None)
            for name, packs in readable.items():
                for info in packs:
                    index.add(info)
                index.objects.add(name)
            self._index = index
            return self.reconcile_packs()

    # --- blobs ---------------------------------------------------------------------------

    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.index.blobs

    def _fetch_range(self, pack_id: bytes, start: int, end: int, entries: list[Entry]) -> list[tuple[Entry, bytes]]:
        name = pack_name(pack_id)
        try:
            data = self.target.get(name, start, end - start)
        except ObjectMissing:
            raise ObjectMissing(name=name, target=self.url,
                                context=f" (it holds blob {entries[0].blob_id.hex()})") from None
        view = memoryview(data)
        cipher = self.keys.pack(pack_id)
        out = []
        for e in entries:
            lo = e.offset - start
            plain = open_blob(cipher, pack_id, e, view[lo:lo + e.stored_len], name, self.url)
            if e.kind == KIND_META and self.keys.blob_id(plain) != e.blob_id:
                raise ObjectCorrupt(name=name, target=self.url,
                                    reason=f"metadata blob {e.blob_id.hex()} does not match its id")
            out.append((e, plain))
        return out

    def start_reads(self, batch: list[bytes]) -> list[Future[list[tuple[Entry, bytes]]]]:
        by_pack: dict[bytes, list[Entry]] = defaultdict(list)
        blobs = self.index.blobs
        for blob_id in batch:
            loc = blobs.get(blob_id)
            if loc is None:
                raise BlobMissing(blob=blob_id.hex(), target=self.url, context=" (no index entry names it)")
            by_pack[loc[0]].append(loc[1])
        futures = []
        for pack_id, entries in by_pack.items():
            entries.sort(key=lambda e: e.offset)
            group = [entries[0]]
            start, end = entries[0].offset, entries[0].offset + entries[0].stored_len
            for e in entries[1:]:
                if e.offset - end <= limits.range_gap_bytes and e.offset + e.stored_len - start <= limits.restore_batch_bytes:
                    group.append(e)
                    end = max(end, e.offset + e.stored_len)
                    continue
                futures.append(self.pool.submit(self._fetch_range, pack_id, start, end, group))
                group, start, end = [e], e.offset, e.offset + e.stored_len
            futures.append(self.pool.submit(self._fetch_range, pack_id, start, end, group))
        return futures

    def read_blobs(self, ids: Iterable[bytes], *, meter: Meter | None = None) -> Iterator[Blob]:
        """Every blob of ``ids`` as ``(id, kind, bytes)``, verified, in no particular order.

        Reads ``restore_batch_bytes`` at a time with the next batch already in flight; a blob
        asked for twice in one batch is read once (ask once per id to save reads)."""
        inflight: deque[list[Future[list[tuple[Entry, bytes]]]]] = deque()
        blobs = self.index.blobs
        try:
            batch: list[bytes] = []
            seen: set[bytes] = set()
            size = 0
            for blob_id in ids:
                if blob_id in seen:
                    continue
                seen.add(blob_id)
                batch.append(blob_id)
                loc = blobs.get(blob_id)
                size += loc[1].stored_len if loc else 0
                if size >= limits.restore_batch_bytes:
                    inflight.append(self.start_reads(batch))
                    batch, seen, size = [], set(), 0
                    if len(inflight) >= 2:
                        yield from self.finish_reads(inflight.popleft(), meter)
            if batch:
                inflight.append(self.start_reads(batch))
            while inflight:
                yield from self.finish_reads(inflight.popleft(), meter)
        finally:
            for futures in inflight:
                for fut in futures:
                    fut.cancel()

    @staticmethod
    def finish_reads(futures: list[Future[list[tuple[Entry, bytes]]]], meter: Meter | None) -> Iterator[Blob]:
        try:
            for fut in as_completed(futures):
                for entry, data in fut.result():
                    if meter is not None:
                        meter.add(done=entry.raw_len, transferred=entry.stored_len, items=1)
                    yield entry.blob_id, entry.kind, data
        finally:
            for fut in futures:
                fut.cancel()

    def read_blob(self, blob_id: bytes) -> bytes:
        """One blob, verified, read on the calling thread (safe inside pool tasks)."""
        loc = self.index.blobs.get(blob_id)
        if loc is None:
            raise BlobMissing(blob=blob_id.hex(), target=self.url, context=" (no index entry names it)")
        pack_id, entry = loc
        ((_entry, data),) = self._fetch_range(pack_id, entry.offset, entry.offset + entry.stored_len, [entry])
        return data

    # --- backups -------------------------------------------------------------------------

    @staticmethod
    def new_backup_id(now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        return f"b-{now:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"

    def manifest_name(self, backup_id: str) -> str:
        if not _BACKUP_ID.fullmatch(backup_id):
            raise InvalidArgument(f"{backup_id!r} is not a backup id (like b-20261204T020000Z-3fa9c1)")
        return BACKUPS + backup_id

    def _read_header(self, name: str) -> BackupInfo:
        prefix = self.target.get(name, 0, limits.manifest_head_read_bytes)
        end = manifest_header_length(prefix, name, self.url)
        if end > len(prefix) and len(prefix) == limits.manifest_head_read_bytes:
            prefix += self.target.get(name, len(prefix), end - len(prefix))
        return open_manifest_header(self.keys, name, prefix, self.url)

    def list_backups(self, volume_id: str | None = None,
                     on_error: Callable[[str, GalleonError], None] | None = None) -> list[BackupInfo]:
        """Every backup (of one volume if given), oldest first. A manifest that cannot be read
        raises, naming it, unless ``on_error`` takes it (then it is left out)."""
        names = [n for n, _ in self.target.list(BACKUPS)]
        infos = self.parallel(self._read_header, names, on_error).values()
        out = [i for i in infos if volume_id is None or i.volume_id == volume_id]
        return sorted(out, key=lambda i: (i.time, i.backup_id))

    def backup_info(self, backup_id: str) -> BackupInfo:
        name = self.manifest_name(backup_id)
        try:
            return self._read_header(name)
        except ObjectMissing:
            raise BackupNotFound(backup=backup_id, target=self.url) from None

    def read_manifest(self, backup_id: str) -> tuple[BackupInfo, list[ChunkRef]]:
        name = self.manifest_name(backup_id)
        try:
            data = self.target.get(name)
        except ObjectMissing:
            raise BackupNotFound(backup=backup_id, target=self.url) from None
        info = open_manifest_header(self.keys, name, data, self.url)
        return info, open_manifest_body(self.keys, name, data, self.url)

    def load_chunk(self, chunk: ChunkRef, where: str) -> list[Record]:
        """The records of one table chunk, checked against what the manifest says of it."""
        data = self.read_blob(chunk.blob_id)
        records = decode_chunk(data, where, self.url)
        if not records or records[0].key != chunk.first_key or len(records) != chunk.records:
            raise ObjectCorrupt(name=where, target=self.url,
                                reason=f"table chunk {chunk.blob_id.hex()} does not match its manifest entry")
        return records

    def delete_backups(self, backup_ids: Iterable[str]) -> list[str]:
        """Delete manifests (their blobs go at the next GC); returns the ids deleted."""
        ids = list(backup_ids)
        names = [self.manifest_name(b) for b in ids]
        with self.lock(exclusive=False, purpose="delete backups"):
            for backup_id, name in zip(ids, names, strict=True):
                if self.target.head(name) is None:
                    raise BackupNotFound(backup=backup_id, target=self.url)
            for name in names:
                self.target.delete(name)
        return ids
