"""Recovery: bring the metadata store up to the end of the journal (DESIGN §3).

At open, the store holds the state of the last checkpoint (``applied_lsn``). ``recover``
applies every journal record after it, in LSN order, and stops at the first one that is
torn: short, failing its CRC, out of sequence, or naming a block frame that does not read
back as the one it wrote (frames and journal are synced apart). What follows the torn
record never completed, so it is cut off: the file is truncated there and later files are
removed. Replay is idempotent (records are physical puts and deletes), so a crash during
recovery only means recovering again.

``rebuild`` is the same walk without the checks, for a running volume whose metadata
transaction was lost (a failed LMDB commit) or holds changes the journal does not (an
operation undone, or one whose record could not be written).

What it must not do: write a journal record, or trust a record it has not checked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..crypto.codec import VolumeCrypto
from ..errors import Corrupt, NoSpace
from ..meta.store import MetaStore
from ..storage import File, Storage
from . import crashpoints, frames, journal, snaplist
from .blocks import BlockStore
from .health import Health
from .journal import JournalWriter, Record
from .segments import Segments, list_segments
from .segstats import SegmentStats
from .superblock import SuperBlock

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayReport:
    records: int = 0
    last_lsn: int = 0
    torn_tail: str | None = None       # where replay stopped early, if it did
    frames_restored: int = 0           # inline frames written back to segments a crash cut


@dataclass(slots=True)
class _Walk:
    """Where a replay got to: the next LSN it wants, and what it found at the end."""

    expect: int
    files: list[tuple[int, str]]
    touched: set[int]                          # segments the replayed records wrote to
    truncate: tuple[str, int] | None = None    # (path, valid length) of the torn file
    drop_from: int | None = None               # first file after the torn tail

    @property
    def cut(self) -> bool:
        return self.truncate is not None or self.drop_from is not None


class Recovery:
    def __init__(self, *, volume_dir: str, journal_dir: str, storage: Storage, meta: MetaStore, sb: SuperBlock,
                 segments: Segments, segstats: SegmentStats, journal_writer: JournalWriter,
                 blocks: BlockStore, crypto: VolumeCrypto | None, health: Health) -> None:
        self.dir = volume_dir
        self._storage = storage
        self._meta = meta
        self._sb = sb
        self._segments = segments
        self._segstats = segstats
        self._journal = journal_writer
        self._blocks = blocks
        self._crypto = crypto
        self._health = health
        self.journal_dir = journal_dir
        self.data_dir = os.path.join(volume_dir, "data")
        self._read_only = False
        self.repaired_frames = 0          # inline frames written back to their segments

    # --- at open -------------------------------------------------------------------------------
    def recover(self, report: ReplayReport, *, read_only: bool, checkpoint: Callable[[], None]) -> None:
        """Replay the journal after ``applied_lsn``; stop at the torn tail and cut it off."""
        report.last_lsn = self._sb.applied_lsn
        self._read_only = read_only
        walk = self._replay(report)
        report.frames_restored = self.repaired_frames
        if self.repaired_frames:
            crashpoints.hit("recovery.after_restoring_inline_frames")
        self._journal.next_lsn = walk.expect
        self.reload()
        if read_only:
            return
        self._cut_tail(walk)
        if report.records or walk.cut:
            self._sync_segments(walk.touched)
            try:
                checkpoint()
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

    def _replay(self, report: ReplayReport) -> _Walk:
        walk = _Walk(expect=self._sb.applied_lsn + 1,
                     files=journal.list_files(self._storage, self.journal_dir), touched=set())
        for index, first, path in _files_after_checkpoint(walk.files, walk.expect):
            if first > walk.expect:
                report.torn_tail = f"journal gap: record {walk.expect} missing, next file starts at {first}"
                walk.drop_from = index
                return walk
            valid_end, size, bad, zero_tail = self._replay_file(path, first, walk, report)
            if bad is not None or (valid_end < size and not zero_tail):
                report.torn_tail = bad if bad is not None else f"{os.path.basename(path)}@{valid_end}: incomplete record"
                walk.truncate = (path, valid_end)
                walk.drop_from = index + 1
                return walk
            if valid_end == 0:
                # Created by a roll whose first record never reached the disk. Left in place,
                # it would block the next roll, which creates that same name (O_EXCL).
                walk.drop_from = index
                return walk
            if zero_tail and index == len(walk.files) - 1:
                # The zeros the writer keeps ahead of its next record: the journal's end.
                walk.truncate = (path, valid_end)
            # Zeros ahead in a file that was rolled are not a tear: the next file must go on
            # at the next LSN (checked above), or replay stops there.
        return walk

    def _replay_file(self, path: str, first: int, walk: _Walk,
                     report: ReplayReport) -> tuple[int, int, str | None, bool]:
        """Apply the file's records from ``walk.expect`` on: ``(valid end, size, why it
        stopped early or None, whether only zeros follow the last record)``."""
        f = self._storage.open_file(path, writable=False)
        try:
            valid_end, bad, stop = 0, None, journal.Stop()
            for offset, end, record in self._records(f, first, stop):
                if record.lsn >= walk.expect:
                    why = self._check_frames(record)
                    if why is not None:
                        bad = f"{os.path.basename(path)}@{offset}: record {record.lsn}: {why}"
                        break
                    self._apply(record, walk)
                    report.records += 1
                    report.last_lsn = record.lsn
                valid_end = end
            zero_tail = False
            if bad is None and stop.reason is not None:
                zero_tail = _only_zeros(f, valid_end)
                if not zero_tail:
                    bad = stop.reason
            return valid_end, f.size, bad, zero_tail
        finally:
            f.close()

    def _records(self, f: File, first: int, stop: journal.Stop) -> Iterator[tuple[int, int, Record]]:
        """The file's records as ``read_records`` checks them for this volume; a whole record
        of another volume is an error, not a torn tail: nothing is cut, the open fails."""
        yield from journal.read_records(f, first, self._crypto, tag=self._journal.tag,
                                        epoch_max=self._journal.epoch, stop=stop)
        if stop.foreign:
            raise Corrupt(f"volume {self.dir}: journal {stop.reason}; a journal file was copied "
                          f"or moved here from another volume: move it out of "
                          f"{self.journal_dir} and open the volume again")

    def _apply(self, record: Record, walk: _Walk) -> None:
        self._meta.apply(record.changes)
        walk.touched.update(ref.seg for ref in record.frames)
        walk.expect = record.lsn + 1

    def _check_frames(self, record: Record) -> str | None:
        """Why a record's frames do not read back as written, or None if they do. Inline
        frames are checked in the record and written back where the segment lost them."""
        if record.inline is not None:
            return self._restore_inline(record)
        for ref in record.frames:
            try:
                frame = self._segments.pread(ref.seg, ref.offset, ref.length)
                header, _ = frames.verify(frame, f"segment {ref.seg}@{ref.offset}")
            except Corrupt as exc:
                return str(exc)
            except OSError as exc:
                return f"segment {ref.seg}: {exc}"
            if header.crc != ref.crc:
                return f"segment {ref.seg}@{ref.offset} holds another frame than the journal names"
        return None

    def _restore_inline(self, record: Record) -> str | None:
        for ref, frame in record.inline_frames():
            where = f"inline frame for segment {ref.seg}@{ref.offset}"
            try:
                header, _ = frames.verify(frame, where)
            except Corrupt as exc:
                return str(exc)
            if header.crc != ref.crc:
                return f"{where}: another frame than the record names"
            try:
                on_disk = self._segments.pread(ref.seg, ref.offset, ref.length)
            except Corrupt:
                on_disk = b""
            except OSError as exc:
                return f"segment {ref.seg}: {exc}"
            if on_disk != frame:
                try:
                    self._segments.repair(ref.seg, ref.offset, frame, in_memory=self._read_only)
                except OSError as exc:
                    return f"segment {ref.seg}: cannot write back an inline frame: {exc}"
                self.repaired_frames += 1
        return None

    def _cut_tail(self, walk: _Walk) -> None:
        if walk.truncate is not None:
            path, length = walk.truncate
            f = self._storage.open_file(path)
            try:
                f.truncate(length)
                f.sync()
            finally:
                f.close()
        if walk.drop_from is not None:
            for _, path in walk.files[walk.drop_from:]:
                self._storage.unlink(path)
            self._storage.sync_dir(self.journal_dir)

    def _sync_segments(self, touched: set[int]) -> None:
        """The replayed records' frames are durable before a checkpoint makes them part of
        the committed state (the crash may have come before their commit's sync)."""
        for seg in touched:
            if seg not in self._segstats:
                continue        # a later replayed record (GC) dropped it: nothing lives there
            f: File = self._storage.open_file(self._segments.path(seg), writable=False)
            try:
                f.sync()
            finally:
                f.close()

    def _remove_stray_segments(self) -> None:
        """Delete segment files no journaled frame lives in (left by a crash or by GC)."""
        removed = False
        for seg in list_segments(self._storage, self.data_dir):
            if seg not in self._segstats:
                self._segments.forget(seg)       # replay may have opened it to check a frame
                self._storage.unlink(self._segments.path(seg))
                removed = True
        if removed:
            self._storage.sync_dir(self.data_dir)

    # --- a running volume ----------------------------------------------------------------------
    def rebuild(self) -> None:
        """Start a new metadata transaction at the last checkpoint and apply every journal
        record after it: the state a restart would recover, without a restart. What the
        current operation changed and did not journal is gone."""
        self._blocks.forget_changes()
        self._meta.restart()
        expect = self._sb.applied_lsn + 1
        files = journal.list_files(self._storage, self.journal_dir)
        for _, first, path in _files_after_checkpoint(files, expect):
            f = self._storage.open_file(path, writable=False)
            try:
                for _offset, _end, record in journal.read_records(
                        f, first, self._crypto, tag=self._journal.tag, epoch_max=self._journal.epoch):
                    if record.lsn >= expect:
                        self._meta.apply(record.changes)
                        expect = record.lsn + 1
            finally:
                f.close()
        self.reload()
        if expect != self._journal.next_lsn:
            self._health.enter_failsafe(f"the journal reads back only up to record {expect - 1} of "
                                        f"{self._journal.next_lsn - 1} it wrote")

    def reload(self) -> None:
        """The in-memory state that mirrors the store, read again after a replay."""
        sb, meta = self._sb, self._meta
        sb.reload_counters(meta, self.dir)
        meta.generation = sb.generation
        meta.snap_gen_max = snaplist.newest_gen(meta)
        self._segstats.reload(meta)
        on_disk = list_segments(self._storage, self.data_dir)
        next_seg = max([sb.next_segment, *(s + 1 for s in on_disk)])
        self._segments.next_seg = next_seg
        sb.next_segment = next_seg
        sb.mark_stored()          # a fact about the files, journaled with the next change


def _only_zeros(f: File, start: int) -> bool:
    """True if every byte of ``f`` from ``start`` on is zero (the writer's zeros ahead)."""
    chunk = 1 << 20
    return all(not f.pread(offset, chunk).strip(b"\0") for offset in range(start, f.size, chunk))


def _files_after_checkpoint(files: list[tuple[int, str]], expect: int) -> Iterator[tuple[int, int, str]]:
    """``(index, first lsn, path)`` of the journal files not wholly below record ``expect``."""
    for index, (first, path) in enumerate(files):
        next_first = files[index + 1][0] if index + 1 < len(files) else None
        if next_first is not None and next_first <= expect:
            continue
        yield index, first, path
