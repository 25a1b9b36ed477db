"""Garbage collection: compact data segments whose live fraction fell below a threshold.

A segment is append-only, so a block that loses its last reference leaves dead bytes in
it. GC copies the live frames of a mostly dead segment to the current one (byte for byte:
a frame does not depend on where it lies), as one journaled operation, and deletes the
old file at the next checkpoint, once the new locations are durable.

Segments a clone reads directly (pinned by a snapshot's hold) are left alone, as is the
segment being written. While the host disk is full, a segment is compacted only if the copy
leaves room for the checkpoint that frees it (``space.room_for``); emptied segments are
always collected, since deleting them needs no space.

``steps`` is the one GC pass: ``Engine.gc`` runs it to the end, the mount worker yields to
FUSE requests between its steps.

What it must not do: copy a frame the index does not point at (that is dead), or delete a
file before the checkpoint that makes its frames' new places durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .. import limits
from ..errors import Corrupt, IOFailure, NoSpace
from ..ids import BlockId
from ..meta.store import MetaStore
from . import snaplist
from .blocks import BlockStore
from .ops import Operation
from .segments import Segments
from .segstats import SegmentStats
from .space import SpaceGuard

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GcReport:
    segments_compacted: int = 0
    segments_deleted: int = 0
    bytes_copied: int = 0
    bytes_reclaimed: int = 0
    skipped: list[str] = field(default_factory=list)


class Collector:
    def __init__(self, *, meta: MetaStore, blocks: BlockStore, segments: Segments,
                 segstats: SegmentStats, space: SpaceGuard, admit: Callable[[], None],
                 operation: Callable[[], Operation]) -> None:
        self._meta = meta
        self._blocks = blocks
        self._segments = segments
        self._segstats = segstats
        self._space = space
        self._admit = admit
        self._operation = operation

    def roll_mostly_dead_segment(self, live_fraction_min: float = limits.gc_live_fraction_min) -> None:
        """Mostly dead data in the segment being appended to would not be collected until the
        volume wrote enough to fill it: start a new segment so that GC can take this one (a
        volume that deletes what it just wrote gets its disk space back)."""
        current = self._segments.current
        if current is None:
            return
        written, live = self._segstats.get(current)
        if written and live / written < live_fraction_min:
            try:
                self._segments.roll()
            except OSError as exc:
                # Only an optimisation: the segment is collected once it is full instead.
                log.info("could not start a new data segment in %s: %s", self._segments.path(current), exc)

    def candidates(self, live_fraction_min: float = limits.gc_live_fraction_min) -> list[int]:
        """Segments (not the one being written) whose live fraction is below the threshold,
        the emptiest first."""
        pinned = snaplist.pinned_segment_max(self._meta)
        dead = set(self._segstats.dead)
        fractions: dict[int, float] = {}
        for seg, (written, live) in self._segstats.snapshot().items():
            if seg == self._segments.current or seg in dead or seg <= pinned:
                continue
            if written == 0 or live / written < live_fraction_min:
                fractions[seg] = live / max(1, written)
        return sorted(fractions, key=fractions.__getitem__)

    def steps(self, report: GcReport, live_fraction_min: float = limits.gc_live_fraction_min,
              bytes_max: int = limits.gc_pass_bytes_max) -> Iterator[int]:
        """One pass: yields each segment it is about to collect (the caller may stop there,
        or let other work run), then collects it, until ``bytes_max`` were copied."""
        for seg in self.candidates(live_fraction_min):
            if report.bytes_copied >= bytes_max:
                return
            yield seg
            self.collect(seg, report)

    def collect(self, seg: int, report: GcReport) -> None:
        """Copy the live frames of ``seg`` to the current segment, as one journaled operation.

        The old file is deleted at the next checkpoint, once the new locations are durable.
        A damaged frame or a full disk stops the copy: what was moved stays moved (each frame
        is a whole change), the segment stays for a later pass or fsck.
        """
        self._admit()
        written, live = self._segstats.get(seg)
        if live > 0 and self._space.full and not self._space.room_for(live):
            return           # copying needs space the disk does not have; deleting does not
        with self._operation() as op:
            copied = self._copy_live(seg, live, op, report)
            if copied is None:
                return
            if copied != live:
                report.skipped.append(f"segment {seg}: found {copied} live bytes, expected {live}")
                return
            self._segstats.emptied(seg, self._meta)
        report.bytes_copied += copied
        report.bytes_reclaimed += written - copied
        if copied:
            report.segments_compacted += 1
        else:
            report.segments_deleted += 1

    def _copy_live(self, seg: int, live: int, op: Operation, report: GcReport) -> int | None:
        """The bytes of live frames copied out of ``seg``; None if the copy stopped early."""
        copied = 0
        if live == 0:
            return 0
        try:
            for offset, header, frame in self._segments.scan(seg):
                bid = BlockId(header.block_id)
                loc = self._blocks.entry(bid)
                if loc is None or loc.seg != seg or loc.offset != offset:
                    continue                        # dead: nothing points here
                new_seg, new_off = self._blocks.append_frames([frame], len(frame), when_full=True)
                self._blocks.moved(bid, new_seg, new_off, len(frame), header.crc)
                copied += len(frame)
        except Corrupt as exc:
            if copied < live:
                # Live frames may sit beyond the damage: keep the segment, let fsck judge.
                report.skipped.append(f"segment {seg}: {exc}")
                return None
        except NoSpace:
            return None             # the frames moved so far are moved; the segment stays
        except IOFailure:
            op.record()             # likewise, and the error goes on
            raise
        return copied
