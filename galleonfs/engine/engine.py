"""``Engine``: one volume's single-node store (DESIGN §3), the facade the layers above use.

Layout of a volume directory::

    LOCK            flock: the process that writes this volume now
    NEEDS_CHECK     present when the volume must be checked before the next read-write use
    KEY             an encrypted volume's keys, wrapped (``crypto/volume_key.py``)
    RESERVE         space held back for the writes that must not fail (``space.py``)
    meta.lmdb/      metadata (``MetaStore``), committed at checkpoints
    journal/*.wal   write-ahead journal (``journal.py``)
    data/*.seg      block frames (``segments.py``, ``frames.py``)

Who does what (each module says more)::

    mkfs.py        create an empty volume
    superblock.py  the super record, typed: identity and counters
    blocks.py      the block index and frames: store, reference, read (dedup, cache)
    ops.py         an operation's changes -> one journal record (``operation()``)
    checkpoint.py  commit (group fsync) and checkpoint (LMDB commit, journal trimmed)
    recovery.py    replay at open, stopping at the torn tail; rebuild after a lost txn
    gc.py          compaction of mostly dead segments
    space.py       a full host disk is an errno, not a crash
    health.py      failsafe and the needs-check marker

The life of a change: the VFS opens ``with engine.operation():`` and changes the metadata
(``engine.meta``) and blocks (``engine.blocks``); the scope's end turns everything into one
journal record written with a plain ``write()``. Nothing is synced per operation.

Threading: everything here runs on the one thread that opened the engine, except
``CommitBatch.run``, which only calls ``fdatasync`` and may run in a worker thread.

What it must not do: know POSIX (the VFS does), or serve a block whose frame failed
verification: that raises ``Corrupt`` and puts the volume in failsafe.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

from .. import limits
from ..crypto import volume_key
from ..crypto.codec import BlockCodec, VolumeCrypto
from ..crypto.keys import KeyManager
from ..errors import (
    Busy,
    Corrupt,
    FormatError,
    InvalidArgument,
    IOFailure,
    NeedsCheck,
    NoSpace,
    NotFound,
    ReadOnly,
)
from ..ids import BlockId, Generation, Lsn
from ..meta import schema
from ..meta.schema import EXTERNAL as EXTERNAL
from ..meta.schema import SUPER_ORIGIN_FIELD, BlockLoc, Db, Origin
from ..meta.sealing import MetaSealing
from ..meta.store import MetaStore
from ..storage import Storage, disk_bytes, no_space
from . import frames, journal, mkfs, snaplist, snapshots
from .blocks import BlockStore, Buffer
from .checkpoint import Checkpointer
from .checkpoint import CommitBatch as CommitBatch
from .checkpoint import FlushBatch as FlushBatch
from .gc import Collector
from .gc import GcReport as GcReport
from .health import NEEDS_CHECK_FILE as NEEDS_CHECK_FILE
from .health import Health
from .journal import JournalWriter
from .mkfs import DATA_DIR as DATA_DIR
from .mkfs import JOURNAL_DIR as JOURNAL_DIR
from .mkfs import META_DIR as META_DIR
from .ops import Operation, OpLog
from .reclaim import Reclaimer
from .reclaim import ReclaimReport as ReclaimReport
from .reclaim import Usage as Usage
from .recovery import Recovery
from .recovery import ReplayReport as ReplayReport
from .segments import Segments
from .segstats import SegmentStats
from .space import SpaceGuard
from .superblock import SuperBlock

log = logging.getLogger(__name__)

LOCK_FILE = "LOCK"


class Engine:
    """One open volume. Create with ``Engine.create``; open with ``Engine.open``."""

    # --- creating and opening ------------------------------------------------------------------
    @classmethod
    def create(cls, volume_dir: str, *, size: int, block_size: int = limits.block_size_default_bytes,
               name: str = "", uid: int | None = None, gid: int | None = None,
               family_key: bytes | None = None, keys: KeyManager | None = None,
               compression: str = "none", dedup: bool = True, key_source_dir: str | None = None) -> str:
        """Make an empty volume (``mkfs.create``); returns its id."""
        return mkfs.create(volume_dir, size=size, block_size=block_size, name=name, uid=uid, gid=gid,
                           family_key=family_key, keys=keys, compression=compression, dedup=dedup,
                           key_source_dir=key_source_dir)

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
            engine._start(ignore_needs_check)
        except BaseException:
            engine.close(checkpoint=False)
            raise
        return engine

    def _start(self, ignore_needs_check: bool) -> None:
        reason = self.needs_check()
        if reason is not None and not ignore_needs_check and not self.read_only:
            raise NeedsCheck(volume=self.dir, reason=reason)
        if not self.read_only:
            self.space.open()         # before recovery: its checkpoint may need it
        self._recovery.recover(self.replay, read_only=self.read_only, checkpoint=self.checkpoint)
        if self.read_only:
            return
        if self.sb.format_version < schema.FORMAT_VERSION:
            # An older volume: its journal was read as it is; from now on records are v2, and
            # the first one says so (an older GalleonFS then refuses the volume, clearly).
            self.sb.format_version = schema.FORMAT_VERSION
            with self.operation():
                pass
        # Journal space now, while the disk may still have it: a volume that sits idle
        # while the disk fills can then still take metadata operations.
        with contextlib.suppress(OSError):
            self.journal.ensure_headroom(limits.journal_headroom_min_bytes)
        for done in snapshots.resume(self):
            log.info("volume %s: %s", self.dir, done)

    def __init__(self, volume_dir: str, storage: Storage, lock_fd: int, *, read_only: bool,
                 keys: KeyManager | None = None) -> None:
        self.dir = volume_dir
        self.storage = storage
        self.key_manager = keys
        self._lock_fd: int | None = lock_fd
        self.read_only = read_only
        self.meta = MetaStore(volume_dir)
        try:
            self.sb = SuperBlock.load(self.meta, volume_dir)
            self.crypto, self.family_key = self._keys(keys)
            self.codec = BlockCodec(self.sb.compression, self.crypto)
        except BaseException:
            # No caller will ever close this half-made engine. LMDB allows one environment
            # per file per process, so a leaked one would make every later open of this
            # volume in this process (a daemon, fsck after the error) fail.
            self.meta.close()
            raise
        self._wire(storage)

    def _keys(self, keys: KeyManager | None) -> tuple[VolumeCrypto | None, bytes]:
        """The volume's cipher (None if it is not encrypted) and its block id key."""
        crypto, family_key = None, self.sb.family_key
        if volume_key.is_encrypted(self.dir):
            vkeys = volume_key.load(self.dir, keys)
            crypto, family_key = vkeys.crypto(), vkeys.ids
            self.meta.set_sealing(MetaSealing(crypto))
        if len(family_key) != 32:
            raise FormatError(f"{self.dir}: metadata lacks the block id key")
        return crypto, family_key

    def _wire(self, storage: Storage) -> None:
        """Build the parts (each module's docstring says what it does) around one store."""
        sb, meta = self.sb, self.meta
        self.volume_id, self.name = sb.volume_id, sb.name
        self.space = SpaceGuard(self.dir, f"volume {self.name or self.volume_id} ({self.dir})")
        self.health = Health(self.dir, storage, self.space, self.name or self.volume_id)
        self.dedup = bool(sb.dedup)
        self.hash_block = frames.BlockHasher(self.family_key, salted=not self.dedup)
        self._origin_segments: Segments | None = None
        meta.generation = sb.generation
        meta.snap_gen_max = snaplist.newest_gen(meta)
        self.segstats = SegmentStats(meta)
        self.journal_dir = os.path.join(self.dir, JOURNAL_DIR)
        self.data_dir = os.path.join(self.dir, DATA_DIR)
        self.segments = Segments(storage, self.data_dir, sb.next_segment)
        self.epoch = 0          # the volume's fencing epoch: 0 on a single node (replication sets it)
        self.journal = JournalWriter(storage, self.journal_dir, sb.applied_lsn + 1, crypto=self.crypto,
                                     tag=journal.volume_tag(sb.volume_id), epoch=self.epoch)
        self.replay = ReplayReport()
        self.counters = {"blocks_written": 0, "blocks_deduped": 0, "blocks_read": 0,
                         "cache_hits": 0, "commits": 0, "checkpoints": 0, "corrupt_blocks": 0}
        self.blocks = BlockStore(meta=meta, sb=sb, segments=self.segments, segstats=self.segstats,
                                 codec=self.codec, hasher=self.hash_block, space=self.space,
                                 health=self.health, counters=self.counters,
                                 origin_segments=self._origin)
        self._recovery = Recovery(volume_dir=self.dir, journal_dir=self.journal_dir, storage=storage,
                                  meta=meta, sb=sb, segments=self.segments, segstats=self.segstats,
                                  journal_writer=self.journal, blocks=self.blocks,
                                  crypto=self.crypto, health=self.health)
        self._oplog = OpLog(meta=meta, sb=sb, segments=self.segments, segstats=self.segstats,
                            blocks=self.blocks, journal_writer=self.journal, space=self.space,
                            health=self.health, read_only=self.read_only,
                            rebuild=self._recovery.rebuild)
        self._operation = self._oplog.scope()
        self._checkpointer = Checkpointer(volume_dir=self.dir, storage=storage, meta=meta, sb=sb,
                                          segments=self.segments, segstats=self.segstats,
                                          journal_writer=self.journal, space=self.space,
                                          health=self.health, counters=self.counters,
                                          rebuild=self._recovery.rebuild)
        self._gc = Collector(meta=meta, blocks=self.blocks, segments=self.segments,
                             segstats=self.segstats, space=self.space, admit=self.check_writable,
                             operation=self.operation)
        self.reclaimer = Reclaimer(meta=meta, blocks=self.blocks, segments=self.segments,
                                   segstats=self.segstats, space=self.space,
                                   admit=self.check_writable, operation=self.operation)

    def _origin(self) -> Segments:
        """The origin volume's data segments (a clone reads shared blocks there)."""
        if self._origin_segments is None:
            raw = self.meta.get(Db.SUPER, SUPER_ORIGIN_FIELD)
            if not raw:
                raise Corrupt("a block lives in an origin volume, but this volume has none")
            origin_dir = Origin.decode(raw).volume_dir
            self._origin_segments = Segments(self.storage, os.path.join(origin_dir, DATA_DIR), 0)
        return self._origin_segments

    # --- the super record ----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.sb.size

    @property
    def used_bytes(self) -> int:
        return self.sb.used_bytes

    @property
    def generation(self) -> Generation:
        return Generation(self.sb.generation)

    @property
    def block_size(self) -> int:
        return self.sb.block_size

    def resize(self, size: int) -> None:
        """Grow the volume's quota to ``size`` bytes (an online expand). Never shrinks."""
        if not isinstance(size, int) or size < self.sb.size:
            raise InvalidArgument(f"cannot shrink the volume from {self.sb.size} to {size} bytes")
        self.check_writable()
        with self.operation():
            self.sb.size = size

    # --- state ---------------------------------------------------------------------------------
    @property
    def failsafe(self) -> str | None:
        return self.health.failsafe

    @property
    def writable(self) -> bool:
        return not self.read_only and self.health.failsafe is None

    def check_writable(self) -> None:
        """Admission of an operation that will change the volume: before it changes anything.

        Besides failsafe and read-only, makes sure the journal has room allocated for the
        record the operation ends with (``space.py``), so that record cannot meet a full disk.
        """
        if self.health.failsafe is not None:
            raise ReadOnly(f"volume is in failsafe (read-only) mode: {self.health.failsafe}")
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
                raise self.health.io_error("allocate journal space", exc) from None
            self.space.enter_full("the journal", exc)
        # What the reserve is for. Take only what this operation needs, leave the rest of
        # it to the checkpoint that will shorten the journal.
        if self.space.release():
            try:
                self.journal.ensure_headroom(need, chunk=need)
                return
            except OSError as exc:
                if not no_space(exc):
                    raise self.health.io_error("allocate journal space", exc) from None
        raise self.space.error("the journal")

    def needs_check(self) -> str | None:
        return self.health.needs_check()

    def mark_needs_check(self, reason: str) -> None:
        self.health.mark_needs_check(reason)

    def clear_needs_check(self) -> None:
        self.health.clear_needs_check()

    def enter_failsafe(self, reason: str) -> None:
        self.health.enter_failsafe(reason)

    # --- blocks (``blocks.py``; these are what tests and tools call) ---------------------------
    def store_blocks(self, blocks: Sequence[Buffer], ids: Sequence[BlockId] | None = None) -> list[BlockId]:
        return self.blocks.store(blocks, ids)

    def ref_block(self, bid: BlockId) -> None:
        self.blocks.ref(bid)

    def unref_block(self, bid: BlockId) -> int:
        return self.blocks.unref(bid)

    def block_info(self, bid: BlockId) -> BlockLoc | None:
        return self.blocks.info(bid)

    def read_blocks(self, ids: Sequence[BlockId]) -> list[bytes]:
        return self.blocks.read(ids)

    # --- operations ----------------------------------------------------------------------------
    def operation(self) -> Operation:
        """``with engine.operation():`` everything changed inside is one journal record
        (``ops.py`` says what happens on an error)."""
        return self._operation

    def end_op(self) -> Lsn | None:
        """Journal what was changed since the last record (the scope calls this)."""
        return self._oplog.end()

    def in_op(self) -> bool:
        """True while changes wait for their record (a bug if an error escapes then)."""
        return self._oplog.pending()

    @property
    def appended_lsn(self) -> Lsn:
        return self.journal.appended_lsn

    # --- commit and checkpoint (``checkpoint.py``) ---------------------------------------------
    @property
    def durable_lsn(self) -> Lsn:
        return self._checkpointer.durable_lsn

    def begin_commit(self) -> CommitBatch:
        return self._checkpointer.begin_commit()

    def end_commit(self, batch: CommitBatch) -> None:
        self._checkpointer.end_commit(batch)

    def begin_flush(self) -> FlushBatch | None:
        """A background sync of the data segments, when inline frames call for one."""
        return self._checkpointer.begin_flush()

    def flush_current(self, batch: FlushBatch) -> bool:
        return self._checkpointer.flush_current(batch)

    def end_flush(self, batch: FlushBatch) -> None:
        self._checkpointer.end_flush(batch)

    def commit(self) -> None:
        """Make every record appended so far durable (blocking; see ``Committer`` for async)."""
        self._checkpointer.commit()

    def sync_failed(self, exc: OSError) -> IOFailure:
        return self._checkpointer.sync_failed(exc)

    def checkpoint(self) -> None:
        """Commit the metadata store at the journal's end; drop what is below it."""
        assert not self.in_op(), "checkpoint inside an operation"
        if self.read_only or self.health.failsafe is not None:
            return
        self._checkpointer.checkpoint()

    # --- garbage collection (``gc.py``) --------------------------------------------------------
    def roll_mostly_dead_segment(self, live_fraction_min: float = limits.gc_live_fraction_min) -> None:
        self._gc.roll_mostly_dead_segment(live_fraction_min)

    @property
    def has_dead_segments(self) -> bool:
        """Segments GC emptied, unlinked at the next checkpoint (their space comes back then)."""
        return bool(self.segstats.dead)

    def gc_steps(self, report: GcReport, live_fraction_min: float = limits.gc_live_fraction_min,
                 bytes_max: int = limits.gc_pass_bytes_max) -> Iterator[int]:
        """A GC pass one segment at a time (``Collector.steps``)."""
        return self._gc.steps(report, live_fraction_min, bytes_max)

    def gc(self, live_fraction_min: float = limits.gc_live_fraction_min,
           bytes_max: int = limits.gc_pass_bytes_max) -> GcReport:
        """One blocking GC pass, then a checkpoint that deletes the emptied segments."""
        report = GcReport()
        self.roll_mostly_dead_segment(live_fraction_min)
        for _ in self.gc_steps(report, live_fraction_min, bytes_max):
            pass
        if self.segstats.dead:
            self.checkpoint()
        return report

    def reclaim(self, ratio: float | None = None, slack: int | None = None) -> ReclaimReport:
        """Reclaim (``reclaim.py``) until the rule holds, then checkpoint to delete the
        emptied segments. Blocking: the mount worker takes ``reclaimer.step`` paced instead."""
        report = ReclaimReport()
        self.roll_mostly_dead_segment()
        while ((self.reclaimer.in_progress or self.reclaimer.needed(ratio, slack))
               and self.reclaimer.step(report)):
            pass
        if self.segstats.dead:
            self.checkpoint()
        return report

    # --- reports -------------------------------------------------------------------------------
    def segment_stats(self) -> dict[int, tuple[int, int]]:
        return self.segstats.snapshot()

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
                self._close_durably()
        finally:
            self.segments.close()
            if self._origin_segments is not None:
                self._origin_segments.close()
            self.journal.close()
            self.meta.close()
            if self._lock_fd is not None:
                self.storage.unlock(self._lock_fd)
                self._lock_fd = None

    def _close_durably(self) -> None:
        if self.health.failsafe is None:
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
