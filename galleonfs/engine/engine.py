"""``Engine``: one volume's single-node store (DESIGN §3).

Layout of a volume directory::

    LOCK            flock: the process that writes this volume now
    NEEDS_CHECK     present when the volume must be checked before the next read-write use
    meta.lmdb/      metadata (``MetaStore``), committed at checkpoints
    journal/*.wal   write-ahead journal (``journal``)
    data/*.seg      block frames (``segments``, ``frames``)

The life of a change: the VFS calls the engine and ``MetaStore`` (``store_blocks``,
``meta.put`` ...), then ``end_op``, which turns everything it did into one journal record
written with a plain ``write()``. Nothing is synced per operation. ``commit`` (fsync, the
commit interval, unmount) syncs the data segments written since the last commit, then the
journal: one sync covers every record so far (group commit). ``checkpoint`` commits the
LMDB transaction with ``applied_lsn`` and deletes the journal files below it. ``open``
replays the journal after ``applied_lsn`` and stops at the torn tail.

Threading: everything here runs on the one thread that opened the engine, except
``CommitBatch.run``, which only calls ``fdatasync`` and may run in a worker thread.

A full host disk is an errno, not a crash: ``space.py`` says how (admission before an
operation changes anything, a reserve for the writes that must not fail, a deferred
checkpoint rebuilt from the journal).

What it must not do: know POSIX (the VFS does), or serve a block whose frame failed
verification: that raises ``Corrupt`` and puts the volume in failsafe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import limits
from ..crypto import volume_key
from ..crypto.codec import COMPRESSIONS, BlockCodec, VolumeCrypto
from ..crypto.keys import KeyManager
from ..errors import (
    Busy,
    Corrupt,
    FormatError,
    GalleonError,
    InvalidArgument,
    IOFailure,
    NoSpace,
    NotFound,
    ReadOnly,
)
from ..meta import schema
from ..meta.schema import BlockLoc, Db, Inode
from ..meta.sealing import MetaSealing
from ..meta.store import MetaStore
from . import crashpoints, frames, journal
from .frames import BlockHasher
from .journal import FrameRef, JournalWriter
from .segments import Segments, list_segments
from .space import SpaceGuard
from .storage import File, Storage, disk_bytes, no_space

log = logging.getLogger(__name__)

EXTERNAL = 0x8000_0000     # BlockLoc.seg flag: the frame is in the origin volume's segment (clones)
LOCK_FILE = "LOCK"
NEEDS_CHECK_FILE = "NEEDS_CHECK"
JOURNAL_DIR = "journal"
DATA_DIR = "data"
META_DIR = "meta.lmdb"


@dataclass(slots=True)
class CommitBatch:
    """What one group commit must sync; ``run`` is safe in a worker thread."""

    lsn: int
    data_files: list[File]
    journal_files: list[File]

    def run(self) -> None:
        for f in self.data_files:
            f.sync()
        crashpoints.hit("commit.after_data_sync_before_journal_sync")
        for f in self.journal_files:
            f.sync()


@dataclass(slots=True)
class ReplayReport:
    records: int = 0
    last_lsn: int = 0
    torn_tail: str | None = None       # where replay stopped early, if it did


@dataclass(slots=True)
class GcReport:
    segments_compacted: int = 0
    segments_deleted: int = 0
    bytes_copied: int = 0
    bytes_reclaimed: int = 0
    skipped: list[str] = field(default_factory=list)


def newest_snapshot_gen(meta: MetaStore) -> int:
    """The generation of the newest snapshot still needed (0 if none): what versioning keys on."""
    import json

    gens = [json.loads(v)["gen"] for _, v in meta.scan(Db.SNAPSHOTS)
            if json.loads(v).get("state", "ready") == "ready"]
    return max(gens, default=0)


def validate_geometry(size: int, block_size: int) -> None:
    if not limits.block_size_min_bytes <= block_size <= limits.block_size_max_bytes or (
        block_size & (block_size - 1)
    ):
        raise InvalidArgument(
            f"block size {block_size} is not a power of two between "
            f"{limits.block_size_min_bytes // 1024}K and {limits.block_size_max_bytes // 1024}K"
        )
    if not limits.volume_size_min_bytes <= size <= limits.volume_size_max_bytes:
        raise InvalidArgument(
            f"volume size {size} is out of range: use at least 1M and at most 1P"
        )


class Engine:
    """One open volume. Create with ``Engine.create``; open with ``Engine.open``."""

    # --- creation ------------------------------------------------------------------------------
    @classmethod
    def create(cls, volume_dir: str, *, size: int, block_size: int = limits.block_size_default_bytes,
               name: str = "", uid: int | None = None, gid: int | None = None,
               family_key: bytes | None = None, keys: KeyManager | None = None,
               compression: str = "none", dedup: bool = True, key_source_dir: str | None = None) -> str:
        """Make an empty volume in ``volume_dir`` (created if missing, else must be empty).

        ``keys`` makes it encrypted (a new family key, wrapped by that manager), or with
        ``key_source_dir`` a member of that volume's family (a clone). Returns its id.
        """
        validate_geometry(size, block_size)
        if compression not in COMPRESSIONS:
            raise InvalidArgument(f"unknown compression {compression!r}; use none, lz4 or zstd")
        if os.path.exists(volume_dir):
            if not os.path.isdir(volume_dir):
                raise InvalidArgument(f"{volume_dir} exists and is not a directory")
            if os.listdir(volume_dir):
                raise InvalidArgument(
                    f"{volume_dir} is not empty; mkfs needs a new or empty directory"
                )
        # 0700: file names, sizes and (unencrypted) contents are the volume owner's business,
        # not every local user's; an empty directory given to mkfs is narrowed too.
        os.makedirs(volume_dir, mode=0o700, exist_ok=True)
        os.chmod(volume_dir, 0o700)
        os.makedirs(os.path.join(volume_dir, JOURNAL_DIR), mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(volume_dir, DATA_DIR), mode=0o700, exist_ok=True)
        volume_id = str(uuid.uuid4())
        meta = MetaStore(volume_dir)
        try:
            now = time.time_ns()
            ints = {
                b"format_version": schema.FORMAT_VERSION, b"size": size, b"block_size": block_size,
                b"generation": 1, b"applied_lsn": 0, b"next_inode": 2, b"next_segment": 1,
                b"used_bytes": 0, b"inode_count": 1, b"created_ns": now, b"next_slot": 1,
                b"restoring_to": 0, b"dedup": int(dedup),
            }
            for key, value in ints.items():
                meta.put(Db.SUPER, key, schema.encode_super_int(value))
            meta.put(Db.SUPER, b"volume_id", volume_id.encode())
            meta.put(Db.SUPER, b"name", name.encode())
            meta.put(Db.SUPER, b"compression", compression.encode())
            # The block-id key of the volume family: a clone shares its origin's. An encrypted
            # family keeps it wrapped in its KEY file instead.
            if key_source_dir is not None:
                volume_key.copy_for_clone(key_source_dir, volume_dir)
                meta.set_sealing(MetaSealing(volume_key.load(volume_dir, keys).crypto()))
                meta.put(Db.SUPER, b"family_key", b"")
            elif keys is not None:
                meta.set_sealing(MetaSealing(volume_key.create(volume_dir, keys).crypto()))
                meta.put(Db.SUPER, b"family_key", b"")
            else:
                meta.put(Db.SUPER, b"family_key", family_key or os.urandom(32))
            meta.generation = 1
            root = Inode(
                ino=1, mode=stat.S_IFDIR | 0o755, uid=os.getuid() if uid is None else uid,
                gid=os.getgid() if gid is None else gid, nlink=2, size=0, alloc=0, atime_ns=now,
                mtime_ns=now, ctime_ns=now, btime_ns=now, rdev=0, aux=3, parent=1,
            )
            meta.put(Db.INODES, schema.ino_key(1), root.encode())
            meta.take_changes()
        except BaseException:
            # Close the store before the error travels on: an LMDB environment with an open
            # write transaction, left to the garbage collector, crashed galleond (SIGSEGV at
            # shutdown) after a key command refused to wrap a new volume's key.
            meta.close(commit=False)
            raise
        meta.close(commit=True)
        Storage().sync_dir(volume_dir)
        return volume_id

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, volume_dir: str, *, storage: Storage | None = None, read_only: bool = False,
             ignore_needs_check: bool = False, keys: KeyManager | None = None) -> Engine:
        """Lock, open and recover a volume. ``read_only`` replays without writing anything."""
        storage = storage or Storage()
        if not storage.exists(os.path.join(volume_dir, META_DIR)):
            raise NotFound(
                f"{volume_dir} is not a GalleonFS volume (it has no {META_DIR}); "
                f"create one with `galleonfs mkfs`"
            )
        lock_fd = storage.lock(os.path.join(volume_dir, LOCK_FILE))
        if lock_fd is None:
            holder = (storage.read_small_file(os.path.join(volume_dir, LOCK_FILE)) or b"?").decode(
                errors="replace").strip()
            raise Busy(
                f"volume {volume_dir} is in use by process {holder} (mounted, or being checked); "
                f"unmount it first"
            )
        try:
            engine = cls(volume_dir, storage, lock_fd, read_only=read_only, keys=keys)
        except BaseException:
            storage.unlock(lock_fd)
            raise
        try:
            reason = engine.needs_check()
            if reason is not None and not ignore_needs_check and not read_only:
                from ..errors import NeedsCheck
                raise NeedsCheck(volume=volume_dir, reason=reason)
            if not read_only:
                engine.space.open()         # before recovery: its checkpoint may need it
            engine._recover()
            if not read_only:
                # Journal space now, while the disk may still have it: a volume that sits idle
                # while the disk fills can then still take metadata operations.
                with contextlib.suppress(OSError):
                    engine.journal.ensure_headroom(limits.journal_headroom_min_bytes)
                from . import snapshots  # late: snapshots builds on this module

                for done in snapshots.resume(engine):
                    log.info("volume %s: %s", volume_dir, done)
        except BaseException:
            engine.close(checkpoint=False)
            raise
        return engine

    def __init__(self, volume_dir: str, storage: Storage, lock_fd: int, *, read_only: bool,
                 keys: KeyManager | None = None) -> None:
        self.dir = volume_dir
        self.storage = storage
        self.key_manager = keys
        self._lock_fd: int | None = lock_fd
        self.read_only = read_only
        self.failsafe: str | None = None
        self.meta = MetaStore(volume_dir)
        try:
            self._ints = self._read_super_ints()
            self.crypto: VolumeCrypto | None = None
            family_key = self.meta.get(Db.SUPER, b"family_key")
            if volume_key.is_encrypted(volume_dir):
                vkeys = volume_key.load(volume_dir, keys)
                self.crypto, family_key = vkeys.crypto(), vkeys.ids
                self.meta.set_sealing(MetaSealing(self.crypto))
            if family_key is None or len(family_key) != 32:
                raise FormatError(f"{volume_dir}: metadata lacks the block id key")
            compression = (self.meta.get(Db.SUPER, b"compression") or b"none").decode()
            self.codec = BlockCodec(compression, self.crypto)
        except BaseException:
            # No caller will ever close this half-made engine. LMDB allows one environment
            # per file per process, so a leaked one would make every later open of this
            # volume in this process (a daemon, fsck after the error) fail.
            self.meta.close()
            raise
        self._dirty_ints: set[bytes] = set()
        self.volume_id = (self.meta.get(Db.SUPER, b"volume_id") or b"").decode()
        self.name = (self.meta.get(Db.SUPER, b"name") or b"").decode()
        self.space = SpaceGuard(volume_dir, f"volume {self.name or self.volume_id} ({volume_dir})")
        self.family_key = family_key
        self.dedup = bool(self._ints[b"dedup"])
        self.hash_block = BlockHasher(family_key, salted=not self.dedup)
        self._origin_segments: Segments | None = None
        self.block_size = self._ints[b"block_size"]
        self.meta.generation = self._ints[b"generation"]
        self.meta.snap_gen_max = newest_snapshot_gen(self.meta)
        self._segstats: dict[int, list[int]] = {
            schema.seg_of_key(k): list(schema.decode_segstats(v))
            for k, v in self.meta.scan(Db.SEGMENTS)
        }
        self._dirty_segs: set[int] = set()
        self._dead_segments: list[int] = []
        self._pending_frames: list[FrameRef] = []
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_bytes = 0
        self.journal_dir = os.path.join(volume_dir, JOURNAL_DIR)
        self.data_dir = os.path.join(volume_dir, DATA_DIR)
        self.segments = Segments(storage, self.data_dir, self._ints[b"next_segment"])
        self.journal = JournalWriter(storage, self.journal_dir, self._ints[b"applied_lsn"] + 1,
                                     crypto=self.crypto)
        self.durable_lsn = self._ints[b"applied_lsn"]
        self.replay = ReplayReport()
        self.counters = {"blocks_written": 0, "blocks_deduped": 0, "blocks_read": 0,
                         "cache_hits": 0, "commits": 0, "checkpoints": 0, "corrupt_blocks": 0}

    def _read_super_ints(self) -> dict[bytes, int]:
        """The integer super fields, checked: every one present, the format one we read."""
        ints: dict[bytes, int] = {}
        for key in schema.SUPER_INT_FIELDS:
            raw = self.meta.get(Db.SUPER, key)
            if raw is None:
                raise FormatError(f"{self.dir}: metadata lacks the super field {key.decode()}")
            ints[key] = schema.decode_super_int(raw)
        version = ints[b"format_version"]
        if version != schema.FORMAT_VERSION:
            raise FormatError(
                f"{self.dir} has on-disk format version {version}; this GalleonFS reads "
                f"version {schema.FORMAT_VERSION} only"
            )
        return ints

    # --- super fields --------------------------------------------------------------------------
    def get_int(self, key: bytes) -> int:
        return self._ints[key]

    def set_int(self, key: bytes, value: int) -> None:
        assert key in self._ints
        if self._ints[key] != value:
            self._ints[key] = value
            self._dirty_ints.add(key)

    @property
    def size(self) -> int:
        return self._ints[b"size"]

    @property
    def used_bytes(self) -> int:
        return self._ints[b"used_bytes"]

    @property
    def generation(self) -> int:
        return self._ints[b"generation"]

    def allocate_inode(self) -> int:
        ino = self._ints[b"next_inode"]
        self.set_int(b"next_inode", ino + 1)
        self.set_int(b"inode_count", self._ints[b"inode_count"] + 1)
        return ino

    def release_inode(self) -> None:
        self.set_int(b"inode_count", self._ints[b"inode_count"] - 1)

    # --- state ---------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return not self.read_only and self.failsafe is None

    def check_writable(self) -> None:
        """Admission of an operation that will change the volume: before it changes anything.

        Besides failsafe and read-only, makes sure the journal has room allocated for the
        record the operation ends with (``space.py``), so that record cannot meet a full disk.
        """
        if self.failsafe is not None:
            raise ReadOnly(f"volume is in failsafe (read-only) mode: {self.failsafe}")
        if self.read_only:
            raise ReadOnly("volume is open read-only")
        if self.journal.headroom() < limits.journal_headroom_min_bytes:
            self._make_journal_room()

    def _make_journal_room(self) -> None:
        need = limits.journal_headroom_min_bytes
        try:
            self.journal.ensure_headroom(need)
            return
        except OSError as exc:
            if not no_space(exc):
                raise self.io_error("allocate journal space", exc) from None
            self.space.enter_full("the journal", exc)
        # What the reserve is for. Take only what this operation needs, leave the rest of
        # it to the checkpoint that will shorten the journal.
        if self.space.release():
            try:
                self.journal.ensure_headroom(need, chunk=need)
                return
            except OSError as exc:
                if not no_space(exc):
                    raise self.io_error("allocate journal space", exc) from None
        raise self.space.error("the journal")

    def io_error(self, what: str, exc: OSError) -> IOFailure:
        """An I/O error of the host disk (not a full one) while trying to ``what``."""
        return IOFailure(f"volume {self.name or self.volume_id}: cannot {what} in {self.dir} "
                         f"(on {self.space.disk}): {exc.strerror or exc}")

    def needs_check(self) -> str | None:
        raw = self.storage.read_small_file(os.path.join(self.dir, NEEDS_CHECK_FILE))
        return None if raw is None else raw.decode(errors="replace").strip() or "unknown reason"

    def mark_needs_check(self, reason: str) -> None:
        """Record durably that the volume must be checked; never raises."""
        path = os.path.join(self.dir, NEEDS_CHECK_FILE)
        try:
            self.storage.write_file_durably(path, reason.encode() + b"\n")
        except OSError as exc:
            if no_space(exc) and self.space.release():
                try:
                    self.storage.write_file_durably(path, reason.encode() + b"\n")
                    return
                except OSError:
                    pass
            log.exception("could not write the needs-check marker for %s", self.dir)

    def clear_needs_check(self) -> None:
        path = os.path.join(self.dir, NEEDS_CHECK_FILE)
        if self.storage.exists(path):
            self.storage.unlink(path)
            self.storage.sync_dir(self.dir)

    def enter_failsafe(self, reason: str) -> None:
        """After corruption: reads of bad blocks give EIO, writes EROFS, check on next mount."""
        if self.failsafe is None:
            log.error("volume %s enters failsafe: %s", self.dir, reason)
            self.failsafe = reason
            self.mark_needs_check(reason)

    # --- blocks --------------------------------------------------------------------------------
    def store_blocks(self, blocks: Sequence[bytes | bytearray | memoryview],
                     ids: Sequence[bytes] | None = None) -> list[bytes]:
        """Add one reference to a block with each content; return the block ids.

        New contents are appended as frames in one write; known contents only gain a
        reference (dedup). ``ids`` may carry ``hash_block`` of each block if the caller
        already computed them. Part of the current operation: ``end_op`` journals it.
        """
        ids = list(ids) if ids is not None else [self.hash_block(b) for b in blocks]
        new_frames: list[bytes | bytearray | memoryview] = []
        new: list[tuple[bytes, int, int, int]] = []     # (id, raw len, frame len, crc)
        seen: dict[bytes, BlockLoc] = {}
        for bid, data in zip(ids, blocks, strict=True):
            loc = seen.get(bid)
            if loc is None:
                raw = self.meta.get(Db.BLOCKS, bid)
                loc = BlockLoc.decode(raw) if raw is not None else None
            if loc is not None:
                loc.refs += 1
                seen[bid] = loc
                self.counters["blocks_deduped"] += 1
                continue
            header, payload, crc = self._frame(bid, data)
            new_frames.append(header)
            new_frames.append(payload)
            frame_len = len(header) + len(payload)
            new.append((bid, len(data), frame_len, crc))
            seen[bid] = BlockLoc(0, 0, frame_len, len(data), 1)   # placed below
            self._cache_put(bid, bytes(data))
        if new:
            total = sum(n[2] for n in new)
            seg, offset = self.append_frames(new_frames, total)
            stats = self._segstats.setdefault(seg, [0, 0])
            stats[0] += total
            stats[1] += total
            self._dirty_segs.add(seg)
            for bid, raw_len, frame_len, crc in new:
                loc = seen[bid]
                loc.seg, loc.offset = seg, offset
                self._pending_frames.append(FrameRef(seg, offset, frame_len, crc))
                offset += frame_len
                self.set_int(b"used_bytes", self._ints[b"used_bytes"] + raw_len)
            self.counters["blocks_written"] += len(new)
        for bid, loc in seen.items():
            self.meta.put(Db.BLOCKS, bid, loc.encode())
        return ids

    def ref_block(self, bid: bytes) -> None:
        raw = self.meta.get(Db.BLOCKS, bid)
        assert raw is not None, "reference to a block that is not in the index"
        loc = BlockLoc.decode(raw)
        loc.refs += 1
        self.meta.put(Db.BLOCKS, bid, loc.encode())

    def unref_block(self, bid: bytes) -> int:
        """Drop one reference; return the bytes freed (the raw length if it was the last)."""
        raw = self.meta.get(Db.BLOCKS, bid)
        assert raw is not None, "unreference of a block that is not in the index"
        loc = BlockLoc.decode(raw)
        assert loc.refs > 0
        loc.refs -= 1
        if loc.refs > 0:
            self.meta.put(Db.BLOCKS, bid, loc.encode())
            return 0
        self.meta.delete(Db.BLOCKS, bid)
        stats = self._segstats.get(loc.seg)
        if stats is not None:
            stats[1] -= loc.frame_len
            self._dirty_segs.add(loc.seg)
        self.set_int(b"used_bytes", self._ints[b"used_bytes"] - loc.raw_len)
        self._cache_drop(bid)
        return loc.raw_len

    def block_info(self, bid: bytes) -> BlockLoc | None:
        raw = self.meta.get(Db.BLOCKS, bid)
        return None if raw is None else BlockLoc.decode(raw)

    def read_blocks(self, ids: Sequence[bytes]) -> list[bytes]:
        """Return the plaintext of each block, verified. Adjacent frames are read at once."""
        out: list[bytes | None] = [None] * len(ids)
        misses: list[tuple[int, bytes, BlockLoc]] = []
        for i, bid in enumerate(ids):
            data = self._cache.get(bid)
            if data is not None:
                self._cache.move_to_end(bid)
                out[i] = data
                self.counters["cache_hits"] += 1
                continue
            raw = self.meta.get(Db.BLOCKS, bid)
            if raw is None:
                self.enter_failsafe(f"block {bid.hex()[:16]} is referenced but not in the index")
                raise Corrupt(f"block {bid.hex()[:16]} is missing from the block index")
            misses.append((i, bid, BlockLoc.decode(raw)))
        if misses:
            self._read_frames(misses, out)
        return out  # type: ignore[return-value]

    def _read_frames(self, misses: list[tuple[int, bytes, BlockLoc]], out: list[bytes | None]) -> None:
        misses.sort(key=lambda m: (m[2].seg, m[2].offset))
        run: list[tuple[int, bytes, BlockLoc]] = []
        for item in misses:
            if run:
                last = run[-1][2]
                loc = item[2]
                if loc.seg != last.seg or loc.offset != last.offset + last.frame_len:
                    self._read_run(run, out)
                    run = []
            run.append(item)
        self._read_run(run, out)

    def _read_run(self, run: list[tuple[int, bytes, BlockLoc]], out: list[bytes | None]) -> None:
        first = run[0][2]
        length = run[-1][2].offset + run[-1][2].frame_len - first.offset
        try:
            buf = memoryview(self.pread_frames(first.seg, first.offset, length))
        except Corrupt as exc:
            self._corrupt(str(exc))
            raise
        for i, bid, loc in run:
            start = loc.offset - first.offset
            where = f"block {bid.hex()[:16]} in segment {loc.seg}@{loc.offset}"
            try:
                header, payload = frames.verify(buf[start:start + loc.frame_len], where)
                if header.block_id != bid or header.raw_len != loc.raw_len:
                    raise Corrupt(f"{where}: frame holds another block")
                data = self.decode_frame(header, payload, where)
            except Corrupt as exc:
                self._corrupt(str(exc))
                raise
            out[i] = data
            self._cache_put(bid, data)
            self.counters["blocks_read"] += 1

    def read_header(self, loc: BlockLoc) -> frames.FrameHeader:
        """The header of the frame at ``loc`` (not verified: the payload is not read)."""
        return frames.parse_header(self.pread_frames(loc.seg, loc.offset, frames.HEADER_SIZE),
                                   f"segment {loc.seg}@{loc.offset}")

    def account_move(self, old_seg: int, old_len: int, new_seg: int, new_len: int) -> None:
        """A live frame was written again elsewhere (rekey): move its bytes in the segment
        counters; the old copy becomes dead space for GC."""
        old = self._segstats.get(old_seg)
        if old is not None:
            old[1] -= old_len
            self._dirty_segs.add(old_seg)
        new = self._segstats.setdefault(new_seg, [0, 0])
        new[0] += new_len
        new[1] += new_len
        self._dirty_segs.add(new_seg)

    def append_frames(self, bufs: Sequence[bytes | bytearray | memoryview], total: int, *,
                      when_full: bool = False) -> tuple[int, int]:
        """Append frames to the current data segment; return ``(segment, offset)``.

        Called before the operation changes any metadata, so a full disk refuses it whole:
        ``NoSpace`` (ENOSPC), nothing changed, nothing left in the segment. In full mode
        only GC (``when_full``: it checked there is room, and copying gives space back) may.
        """
        if not when_full:
            self.space.refuse("data")
        try:
            return self.segments.append(bufs, total)
        except OSError as exc:
            if not no_space(exc):
                raise self.io_error("write a data segment", exc) from None
            self.space.enter_full("data", exc)
            raise self.space.error("data") from None

    def pending_frame(self, ref: FrameRef) -> None:
        """A frame appended outside ``store_blocks``: synced before the next commit."""
        self._pending_frames.append(ref)

    def frame_for(self, bid: bytes, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes | bytearray | memoryview, int]:
        return self._frame(bid, data)

    def _frame(self, bid: bytes, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes | bytearray | memoryview, int]:
        """A block's frame: ``(header, payload, crc)``, compressed and sealed as configured."""
        if self.codec.plain and self.dedup:
            header, crc = frames.encode(bid, data, len(data))
            return header, data, crc
        salted = 0 if self.dedup else frames.FLAG_SALTED_ID
        flags, payload, nonce, epoch = self.codec.pack(bid, data, extra_flags=salted)
        header, crc = frames.encode(bid, payload, len(data), flags, nonce, epoch)
        return header, payload, crc

    def decode_frame(self, header: frames.FrameHeader, payload: memoryview, where: str) -> bytes:
        """A verified frame's plaintext (decrypted, decompressed, length checked)."""
        if header.flags & ~frames.FLAG_SALTED_ID == 0:
            if header.raw_len != len(payload):
                raise Corrupt(f"{where}: holds {len(payload)} bytes, header says {header.raw_len}")
            return bytes(payload)
        return self.codec.unpack(header, payload, where)

    def pread_frames(self, seg: int, offset: int, length: int) -> bytes:
        """Bytes of this volume's segment ``seg``, or of its origin's if ``seg`` is EXTERNAL."""
        if seg & EXTERNAL:
            return self._origin().pread(seg & ~EXTERNAL, offset, length)
        return self.segments.pread(seg, offset, length)

    def _origin(self) -> Segments:
        """The origin volume's data segments (a clone reads shared blocks there)."""
        if self._origin_segments is None:
            import json

            raw = self.meta.get(Db.SUPER, b"origin")
            if not raw:
                raise Corrupt("a block lives in an origin volume, but this volume has none")
            origin_dir = json.loads(raw)["volume_dir"]
            self._origin_segments = Segments(self.storage, os.path.join(origin_dir, DATA_DIR), 0)
        return self._origin_segments

    def localize_blocks(self, ids: Sequence[bytes], datas: Sequence[bytes]) -> int:
        """Store already-indexed blocks in this volume's own segments (flatten); bytes written."""
        bufs: list[bytes | bytearray | memoryview] = []
        entries = []
        for bid, data in zip(ids, datas, strict=True):
            loc = self.block_info(bid)
            assert loc is not None
            header, payload, crc = self._frame(bid, data)
            bufs += [header, payload]
            entries.append((bid, loc, len(header) + len(payload), crc))
        total = sum(e[2] for e in entries)
        seg, offset = self.append_frames(bufs, total)
        stats = self._segstats.setdefault(seg, [0, 0])
        stats[0] += total
        stats[1] += total
        self._dirty_segs.add(seg)
        for bid, loc, frame_len, crc in entries:
            loc.seg, loc.offset, loc.frame_len = seg, offset, frame_len
            self.meta.put(Db.BLOCKS, bid, loc.encode())
            self._pending_frames.append(FrameRef(seg, offset, frame_len, crc))
            offset += frame_len
        return total

    def _pinned_segment_max(self) -> int:
        """Segments up to this number hold frames clones read directly: GC leaves them alone."""
        import json

        pins = [json.loads(v).get("pin_seg", 0) for _, v in self.meta.scan(Db.SNAPSHOTS)]
        return max(pins, default=0)

    def _corrupt(self, reason: str) -> None:
        self.counters["corrupt_blocks"] += 1
        self.enter_failsafe(reason)

    def _cache_put(self, bid: bytes, data: bytes) -> None:
        if bid in self._cache:
            self._cache.move_to_end(bid)
            return
        self._cache[bid] = data
        self._cache_bytes += len(data)
        while self._cache_bytes > limits.block_cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old)

    def _cache_drop(self, bid: bytes) -> None:
        data = self._cache.pop(bid, None)
        if data is not None:
            self._cache_bytes -= len(data)

    # --- operations, commit, checkpoint --------------------------------------------------------
    def end_op(self) -> int | None:
        """Journal everything the current operation changed, as one record; return its LSN."""
        # A segment created by this operation keeps its number even if the record is lost.
        self.set_int(b"next_segment", self.segments.next_seg)
        for key in self._dirty_ints:
            self.meta.put(Db.SUPER, key, schema.encode_super_int(self._ints[key]))
        self._dirty_ints.clear()
        for seg in self._dirty_segs:
            written, live = self._segstats[seg]
            self.meta.put(Db.SEGMENTS, schema.segment_key(seg), schema.encode_segstats(written, live))
        self._dirty_segs.clear()
        changes = self.meta.take_changes()
        if not changes and not self._pending_frames:
            return None
        assert not self.read_only, "a read-only engine made changes"
        frames_, self._pending_frames = self._pending_frames, []
        try:
            return self.journal.append(frames_, changes)
        except OSError as exc:
            raise self._unjournaled(exc) from None

    def _unjournaled(self, exc: OSError) -> GalleonError:
        """The record of an operation that already changed the metadata could not be
        written (admission made room for it, so this is a huge record, or a write that is
        not admitted, on a disk that filled up meanwhile). Those changes must not stay: a
        later record would build on them and a replay would not have them. Undo them by
        rebuilding the metadata from the journal, then fail the operation."""
        log.error("volume %s: could not journal an operation (%s); undoing it", self.dir, exc)
        self._rebuild_meta()
        if no_space(exc):
            self.space.enter_full("the journal", exc)
            return self.space.error("the journal")
        return self.io_error("append to the journal", exc)

    def _rebuild_meta(self) -> None:
        """Start a new metadata transaction at the last checkpoint and apply every journal
        record after it: the state a restart would recover, without a restart. For a lost
        transaction (a failed LMDB commit) or one holding changes the journal does not."""
        self.meta.restart()
        applied = self._ints[b"applied_lsn"]
        expect = applied + 1
        files = journal.list_files(self.storage, self.journal_dir)
        for index, (first, path) in enumerate(files):
            next_first = files[index + 1][0] if index + 1 < len(files) else None
            if next_first is not None and next_first <= expect:
                continue                            # wholly below the checkpoint
            f = self.storage.open_file(path, writable=False)
            try:
                for _offset, _end, record in journal.read_records(f, first, self.crypto):
                    if record.lsn >= expect:
                        self.meta.apply(record.changes)
                        expect = record.lsn + 1
            finally:
                f.close()
        self._pending_frames = []
        self._dirty_ints.clear()
        self._dirty_segs.clear()
        self._reload_after_replay()
        if expect != self.journal.next_lsn:
            self.enter_failsafe(f"the journal reads back only up to record {expect - 1} of "
                                f"{self.journal.next_lsn - 1} it wrote")

    def in_op(self) -> bool:
        """True while changes wait for ``end_op`` (a bug if an error escapes then)."""
        return bool(self.meta.has_changes() or self._pending_frames or self._dirty_ints
                    or self._dirty_segs)

    @property
    def appended_lsn(self) -> int:
        return self.journal.appended_lsn

    def begin_commit(self) -> CommitBatch:
        return CommitBatch(self.journal.appended_lsn, self.segments.take_unsynced(),
                           self.journal.take_unsynced())

    def end_commit(self, batch: CommitBatch) -> None:
        self.durable_lsn = max(self.durable_lsn, batch.lsn)
        self.segments.close_retired(batch.data_files)
        self.journal.close_retired(batch.journal_files)
        self.counters["commits"] += 1

    def commit(self) -> None:
        """Make every record appended so far durable (blocking; see ``Committer`` for async)."""
        batch = self.begin_commit()
        try:
            batch.run()
        except OSError as exc:
            raise self.sync_failed(exc) from exc
        self.end_commit(batch)

    def sync_failed(self, exc: OSError) -> IOFailure:
        """A commit's fdatasync failed: the error for the caller (EIO), logged once.

        Failsafe even for ENOSPC: after a failed writeback Linux drops the dirty pages, so
        what this sync covered may be gone from the disk while still readable from the
        cache, and a later sync that succeeds would not write it. Only a check can tell.
        (Allocation happens at ``write``, which reports ENOSPC by itself, and journal space
        is allocated ahead: a full disk alone does not get here.)
        """
        self.enter_failsafe(f"a commit could not make the journal and data durable on "
                            f"{self.space.disk} ({exc.strerror or exc}); what was written since "
                            f"the last commit may be lost")
        return IOFailure(f"volume {self.name or self.volume_id}: commit failed on {self.space.disk}: "
                         f"{exc.strerror or exc}")

    def checkpoint(self) -> None:
        """Commit the metadata store at the journal's end; drop what is below it."""
        assert not self.in_op(), "checkpoint inside an operation"
        if self.read_only or self.failsafe is not None:
            return
        self.commit()
        applied = self.journal.appended_lsn
        self._commit_meta(applied)
        self.storage.meta_committed(self.dir)
        crashpoints.hit("checkpoint.after_meta_commit")
        self.journal.roll_after_checkpoint()
        self.journal.delete_files_before(applied + 1)
        for seg in self._dead_segments:
            self.segments.forget(seg)
            path = self.segments.path(seg)
            if self.storage.exists(path):
                self.storage.unlink(path)
        if self._dead_segments:
            self.storage.sync_dir(self.data_dir)
            self._dead_segments = []
        self.counters["checkpoints"] += 1

    def _commit_meta(self, applied: int) -> None:
        """The checkpoint's LMDB commit, which needs new pages on the host disk.

        A failed commit loses the transaction (LMDB aborts it), not a change: the journal was
        just made durable, so the transaction is rebuilt from it. On a full disk the commit is
        tried once more with the reserve released, then deferred (``NoSpace``): the journal
        keeps everything until a later checkpoint, or the next mount's replay, gets through.
        """
        before = self._ints[b"applied_lsn"]
        while True:
            self.meta.put_unjournaled(Db.SUPER, b"applied_lsn", schema.encode_super_int(applied))
            self._ints[b"applied_lsn"] = applied
            crashpoints.hit("checkpoint.before_meta_commit")
            try:
                self.meta.commit()
                return
            except (IOFailure, NoSpace) as exc:
                self._ints[b"applied_lsn"] = before
                self._rebuild_meta()
                if not self.space.nearly_full():
                    self.enter_failsafe(f"a checkpoint could not commit the metadata: {exc}")
                    raise IOFailure(str(exc)) from None
                self.space.enter_full("a checkpoint")
                if not self.space.release():
                    raise NoSpace(f"volume {self.name or self.volume_id}: checkpoint deferred, the host "
                                  f"disk {self.space.disk} is full; the journal keeps every change") from None

    # --- recovery ------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Replay the journal after ``applied_lsn``; stop at the torn tail and cut it off."""
        applied = self._ints[b"applied_lsn"]
        report = self.replay
        report.last_lsn = applied
        files = journal.list_files(self.storage, self.journal_dir)
        touched_segments: set[int] = set()
        expect = applied + 1
        truncate: tuple[str, int] | None = None     # (path, valid length) of the torn file
        drop_from: int | None = None                # first file after the torn tail
        for index, (first, path) in enumerate(files):
            next_first = files[index + 1][0] if index + 1 < len(files) else None
            if next_first is not None and next_first <= expect:
                continue                            # wholly below the checkpoint
            if first > expect:
                report.torn_tail = f"journal gap: record {expect} missing, next file starts at {first}"
                drop_from = index
                break
            f = self.storage.open_file(path, writable=False)
            try:
                valid_end, bad = 0, None
                for _offset, end, record in journal.read_records(f, first, self.crypto):
                    if record.lsn >= expect:
                        bad = self._check_frames(record.frames)
                        if bad is not None:
                            break
                        self.meta.apply(record.changes)
                        touched_segments.update(ref.seg for ref in record.frames)
                        expect = record.lsn + 1
                        report.records += 1
                        report.last_lsn = record.lsn
                    valid_end = end
                size = f.size
            finally:
                f.close()
            if bad is not None or valid_end < size:
                name = os.path.basename(path)
                report.torn_tail = f"{name}@{valid_end}: {bad or 'incomplete record'}"
                truncate = (path, valid_end)
                drop_from = index + 1
                break
            if size == 0:
                # Created by a roll whose first record never reached the disk. Left in place,
                # it would block the next roll, which creates that same name (O_EXCL).
                drop_from = index
                break
        self.journal.next_lsn = expect
        self._reload_after_replay()
        if self.read_only:
            return
        if truncate is not None:
            f = self.storage.open_file(truncate[0])
            f.truncate(truncate[1])
            f.sync()
            f.close()
        if drop_from is not None:
            for _, path in files[drop_from:]:
                self.storage.unlink(path)
            self.storage.sync_dir(self.journal_dir)
        if report.records or truncate is not None or drop_from is not None:
            for seg in touched_segments:
                if seg not in self._segstats:
                    continue        # a later replayed record (GC) dropped it: nothing lives there
                f = self.storage.open_file(self.segments.path(seg), writable=False)
                f.sync()
                f.close()
            try:
                self.checkpoint()
            except NoSpace as exc:
                # The replayed state is in the transaction and the journal keeps it: mount
                # anyway; a later checkpoint commits it.
                log.warning("%s", exc)
                return
        # Only after the checkpoint: a segment that a replayed GC record emptied still holds
        # the frames of the records before it until the metadata that moved them is durable.
        # Deleted earlier, a power cut here would make the next replay stop at the first of
        # those records and lose everything after it, committed or not.
        self._remove_stray_segments()
        if report.torn_tail:
            # What a crash leaves behind, so not a warning: the records after it never completed.
            log.info("volume %s: journal replay stopped at a torn tail: %s", self.dir, report.torn_tail)

    def _check_frames(self, refs: list[FrameRef]) -> str | None:
        for ref in refs:
            try:
                frame = self.segments.pread(ref.seg, ref.offset, ref.length)
                header, _ = frames.verify(frame, f"segment {ref.seg}@{ref.offset}")
            except Corrupt as exc:
                return str(exc)
            except OSError as exc:
                return f"segment {ref.seg}: {exc}"
            if header.crc != ref.crc:
                return f"segment {ref.seg}@{ref.offset} holds another frame than the journal names"
        return None

    def _reload_after_replay(self) -> None:
        for key in schema.SUPER_INT_FIELDS:
            raw = self.meta.get(Db.SUPER, key)
            assert raw is not None
            if key != b"applied_lsn":
                self._ints[key] = schema.decode_super_int(raw)
        self.meta.generation = self._ints[b"generation"]
        self.meta.snap_gen_max = newest_snapshot_gen(self.meta)
        self._segstats = {
            schema.seg_of_key(k): list(schema.decode_segstats(v))
            for k, v in self.meta.scan(Db.SEGMENTS)
        }
        on_disk = list_segments(self.storage, self.data_dir)
        next_seg = max([self._ints[b"next_segment"], *(s + 1 for s in on_disk)])
        self.segments.next_seg = next_seg
        self._ints[b"next_segment"] = next_seg

    def _remove_stray_segments(self) -> None:
        """Delete segment files no journaled frame lives in (left by a crash or by GC)."""
        removed = False
        for seg in list_segments(self.storage, self.data_dir):
            if seg not in self._segstats:
                self.segments.forget(seg)       # replay may have opened it to check a frame
                self.storage.unlink(self.segments.path(seg))
                removed = True
        if removed:
            self.storage.sync_dir(self.data_dir)

    # --- garbage collection --------------------------------------------------------------------
    def roll_mostly_dead_segment(self, live_fraction_min: float = limits.gc_live_fraction_min) -> None:
        """Mostly dead data in the segment being appended to would not be collected until the
        volume wrote enough to fill it: start a new segment so that GC can take this one (a
        volume that deletes what it just wrote gets its disk space back)."""
        current = self.segments.current
        if current is None:
            return
        written, live = self._segstats.get(current, [0, 0])
        if written and live / written < live_fraction_min:
            try:
                self.segments.roll()
            except OSError as exc:
                # Only an optimisation: the segment is collected once it is full instead.
                log.info("volume %s: could not start a new data segment: %s", self.dir, exc)

    @property
    def has_dead_segments(self) -> bool:
        """Segments GC emptied, unlinked at the next checkpoint (their space comes back then)."""
        return bool(self._dead_segments)

    def gc_candidates(self, live_fraction_min: float = limits.gc_live_fraction_min) -> list[int]:
        """Segments (not the one being written) whose live fraction is below the threshold."""
        out = []
        pinned = self._pinned_segment_max()
        for seg, (written, live) in self._segstats.items():
            if seg == self.segments.current or seg in self._dead_segments or seg <= pinned:
                continue
            if written == 0 or live / written < live_fraction_min:
                out.append(seg)
        out.sort(key=lambda s: self._segstats[s][1] / max(1, self._segstats[s][0]))
        return out

    def gc_segment(self, seg: int, report: GcReport) -> None:
        """Copy the live frames of ``seg`` to the current segment, as one journaled operation.

        The old file is deleted at the next checkpoint, once the new locations are durable.
        """
        self.check_writable()
        written, live = self._segstats[seg]
        copied = 0
        if live > 0 and self.space.full and not self.space.room_for(live):
            return           # copying needs space the disk does not have; deleting does not
        if live > 0:
            try:
                for offset, header, frame in self.segments.scan(seg):
                    raw = self.meta.get(Db.BLOCKS, header.block_id)
                    if raw is None:
                        continue
                    loc = BlockLoc.decode(raw)
                    if loc.seg != seg or loc.offset != offset:
                        continue
                    new_seg, new_off = self.append_frames([frame], len(frame), when_full=True)
                    stats = self._segstats.setdefault(new_seg, [0, 0])
                    stats[0] += len(frame)
                    stats[1] += len(frame)
                    self._dirty_segs.add(new_seg)
                    loc.seg, loc.offset = new_seg, new_off
                    self.meta.put(Db.BLOCKS, header.block_id, loc.encode())
                    self._pending_frames.append(FrameRef(new_seg, new_off, len(frame), header.crc))
                    copied += len(frame)
            except Corrupt as exc:
                if copied < live:
                    # Live frames may sit beyond the damage: keep the segment, let fsck judge.
                    report.skipped.append(f"segment {seg}: {exc}")
                    self.end_op()
                    return
            except NoSpace:
                self.end_op()       # the frames moved so far are moved; the segment stays
                return
            except IOFailure:
                self.end_op()
                raise
        if copied != live:
            report.skipped.append(f"segment {seg}: found {copied} live bytes, expected {live}")
            self.end_op()
            return
        del self._segstats[seg]
        self.meta.delete(Db.SEGMENTS, schema.segment_key(seg))
        self._dead_segments.append(seg)
        self.end_op()
        report.bytes_copied += copied
        report.bytes_reclaimed += written - copied
        if copied:
            report.segments_compacted += 1
        else:
            report.segments_deleted += 1

    def gc(self, live_fraction_min: float = limits.gc_live_fraction_min,
           bytes_max: int = limits.gc_pass_bytes_max) -> GcReport:
        """One blocking GC pass, then a checkpoint that deletes the emptied segments."""
        report = GcReport()
        self.roll_mostly_dead_segment(live_fraction_min)
        for seg in self.gc_candidates(live_fraction_min):
            if report.bytes_copied >= bytes_max:
                break
            self.gc_segment(seg, report)
        if self._dead_segments:
            self.checkpoint()
        return report

    # --- reports -------------------------------------------------------------------------------
    def segment_stats(self) -> dict[int, tuple[int, int]]:
        return {seg: (written, live) for seg, (written, live) in self._segstats.items()}

    def disk_usage(self) -> int:
        return disk_bytes(self.dir)

    # --- closing -------------------------------------------------------------------------------
    def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint (unless asked not to, or read-only) and release everything.

        A volume in failsafe is not checkpointed, but what it journaled before it went
        failsafe is still committed: those are operations the application was told had
        happened, and a power cut may take at most one commit interval of them (DESIGN §3).
        """
        try:
            if checkpoint and not self.read_only and not self.in_op():
                if self.failsafe is None:
                    try:
                        self.checkpoint()
                    except NoSpace as exc:
                        # Committed, not checkpointed: the next open replays the journal.
                        log.warning("%s; the next mount applies the journal", exc)
                    except IOFailure:
                        pass                # failsafe now, and said so; close all the same
                elif self.durable_lsn < self.appended_lsn:
                    try:
                        self.commit()
                    except IOFailure:
                        log.exception("volume %s: could not commit the journal at close", self.dir)
        finally:
            self.segments.close()
            if self._origin_segments is not None:
                self._origin_segments.close()
            self.journal.close()
            self.meta.close()
            if self._lock_fd is not None:
                self.storage.unlock(self._lock_fd)
                self._lock_fd = None
