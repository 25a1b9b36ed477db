"""Commit and checkpoint: when what the journal says becomes durable (DESIGN §3).

*Commit* (fsync, the commit interval, unmount): fdatasync the data segments written since
the last commit, then the journal; one sync covers every record appended so far (group
commit). ``CommitBatch.run`` only syncs file descriptors, so ``Committer`` runs it in a
worker thread while FUSE requests go on.

*Checkpoint*: commit, then commit the LMDB transaction with ``applied_lsn`` in it (full
sync), then delete the journal files wholly below it and the segments GC emptied.

What it must not do: run inside an operation (its changes are not journaled yet), or
touch the metadata store from another thread than the one that opened it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .. import limits
from ..errors import IOFailure, NoSpace
from ..ids import Lsn
from ..meta.store import MetaStore
from ..storage import File, Storage
from . import crashpoints
from .health import Health
from .journal import JournalWriter
from .segments import Segments
from .segstats import SegmentStats
from .space import SpaceGuard
from .superblock import SuperBlock

Counters = dict[str, int]


@dataclass(slots=True)
class CommitBatch:
    """What one group commit must sync; ``run`` is safe in a worker thread."""

    lsn: Lsn
    data_files: list[File]
    journal_files: list[File]

    def run(self) -> None:
        for f in self.data_files:
            f.sync()
        crashpoints.hit("commit.after_data_sync_before_journal_sync")
        for f in self.journal_files:
            f.sync()


@dataclass(slots=True)
class FlushBatch:
    """A background sync of the data segments (``Checkpointer.begin_flush``); ``run`` is
    safe in a worker thread."""

    takes: int
    data_files: list[tuple[File, int]]
    data_bytes: int
    inline_bytes: int

    def run(self) -> None:
        for f, _size in self.data_files:
            f.sync()


class Checkpointer:
    def __init__(self, *, volume_dir: str, storage: Storage, meta: MetaStore, sb: SuperBlock,
                 segments: Segments, segstats: SegmentStats, journal_writer: JournalWriter,
                 space: SpaceGuard, health: Health, counters: Counters,
                 rebuild: Callable[[], None]) -> None:
        self.dir = volume_dir
        self._data_dir = os.path.join(volume_dir, "data")
        self._storage = storage
        self._meta = meta
        self._sb = sb
        self._segments = segments
        self._segstats = segstats
        self._journal = journal_writer
        self._space = space
        self._health = health
        self._counters = counters
        self._rebuild = rebuild
        self.durable_lsn = Lsn(sb.applied_lsn)

    # --- commit --------------------------------------------------------------------------------
    def begin_commit(self, *, full: bool = False) -> CommitBatch:
        """What to sync for every record appended so far. The data segments are left out
        when every byte appended to them since their last sync is an inline frame of a
        record (the journal sync covers it; recovery writes it back); ``full`` syncs them
        anyway (checkpoint, blocking commits: others may read the segments)."""
        journal = self._journal
        covered = self._segments.unsynced_bytes == journal.inline_unsynced
        if covered and not full:
            data: list[File] = []
        else:
            data = self._segments.take_unsynced()
            journal.inline_unsynced = 0
        return CommitBatch(Lsn(journal.appended_lsn), data, journal.take_unsynced())

    def begin_flush(self) -> FlushBatch | None:
        """Sync the segments off an fsync's path once inline frames fill half their window
        (else the commit after a full window pays a second sync). None if not due, or if
        the segments hold bytes no record carries (the next commit syncs them anyway)."""
        journal, segs = self._journal, self._segments
        if (journal.inline_unsynced < limits.journal_inline_window_bytes // 2
                or segs.unsynced_bytes != journal.inline_unsynced):
            return None
        return FlushBatch(segs.takes, segs.peek_unsynced(), segs.unsynced_bytes, journal.inline_unsynced)

    def flush_current(self, batch: FlushBatch) -> bool:
        """False once a commit took the segments after the flush began (its own sync covers
        them; an error of the flush, e.g. a file closed under it, then means nothing)."""
        return batch.takes == self._segments.takes

    def end_flush(self, batch: FlushBatch) -> None:
        if self.flush_current(batch):
            self._segments.flushed(batch.data_files, batch.data_bytes)
            self._journal.inline_unsynced -= batch.inline_bytes

    def end_commit(self, batch: CommitBatch) -> None:
        self.durable_lsn = max(self.durable_lsn, batch.lsn)
        self._segments.close_retired(batch.data_files)
        self._journal.close_retired(batch.journal_files)
        self._counters["commits"] += 1

    def commit(self) -> None:
        """Make every record appended so far, and every frame, durable (blocking; see
        ``Committer`` for async)."""
        batch = self.begin_commit(full=True)
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
        self._health.enter_failsafe(f"a commit could not make the journal and data durable on "
                                    f"{self._space.disk} ({exc.strerror or exc}); what was written "
                                    f"since the last commit may be lost")
        return IOFailure(f"volume {self._health.label}: commit failed on {self._space.disk}: "
                         f"{exc.strerror or exc}")

    # --- checkpoint ----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Commit the metadata store at the journal's end; drop what is below it."""
        self.commit()
        applied = self._journal.appended_lsn
        self._commit_meta(applied)
        self._storage.meta_committed(self.dir)
        crashpoints.hit("checkpoint.after_meta_commit")
        self._journal.roll_after_checkpoint()
        self._journal.delete_files_before(applied + 1)
        self._delete_dead_segments()
        self._counters["checkpoints"] += 1

    def _delete_dead_segments(self) -> None:
        dead = self._segstats.dead
        for seg in dead:
            self._segments.forget(seg)
            path = self._segments.path(seg)
            if self._storage.exists(path):
                self._storage.unlink(path)
        if dead:
            self._storage.sync_dir(self._data_dir)
            dead.clear()

    def _commit_meta(self, applied: int) -> None:
        """The checkpoint's LMDB commit, which needs new pages on the host disk.

        A failed commit loses the transaction (LMDB aborts it), not a change: the journal was
        just made durable, so the transaction is rebuilt from it. On a full disk the commit is
        tried once more with the reserve released, then deferred (``NoSpace``): the journal
        keeps everything until a later checkpoint, or the next mount's replay, gets through.
        """
        before = self._sb.applied_lsn
        while True:
            self._sb.set_applied(self._meta, applied)
            crashpoints.hit("checkpoint.before_meta_commit")
            try:
                self._meta.commit()
                return
            except (IOFailure, NoSpace) as exc:
                self._sb.applied_lsn = before
                self._rebuild()
                if not self._space.nearly_full():
                    self._health.enter_failsafe(f"a checkpoint could not commit the metadata: {exc}")
                    raise IOFailure(str(exc)) from None
                self._space.enter_full("a checkpoint")
                if not self._space.release():
                    raise NoSpace(f"volume {self._health.label}: checkpoint deferred, the host "
                                  f"disk {self._space.disk} is full; the journal keeps every "
                                  f"change") from None
