"""``Reclaimer``: give the space of deleted data back to the host disk soon, in small steps.

GC (``gc.py``) compacts a segment in one piece, and only once its live fraction is below
one half: a volume whose segments are all half dead holds twice its live data for good,
and a 64 MiB compaction holds up the FUSE requests behind it. The reclaimer takes the same
job in steps of ``limits.reclaim_step_bytes`` of segment read, each its own journaled
operation, so the mount worker can run it between requests (``fuse/worker.py`` paces it),
and by a volume-wide rule instead of a per-segment one:

    reclaim while  dead > limits.reclaim_dead_ratio x live + limits.reclaim_slack_bytes

where *dead* counts the collectable segments (not one a clone reads from, not one already
emptied; the one being written counts, and is rolled when it is mostly dead so that it
becomes collectable) and *live* every live frame. It takes the emptiest
segment first (fewest live bytes to copy per byte given back), copies its live frames to
the current segment in one append per step, and when the last live frame of a segment is
gone, marks it emptied; the next checkpoint deletes the file, once the frames' new places
are durable (the rule GC keeps too). A fully dead segment costs one step and no copy.

Across steps the reclaimer remembers (segment, offset). Between two steps anything may
happen (a write, a delete, a GC pass): each step checks that its segment is still there,
and moves only frames the block index points at, so a frame that died meanwhile is skipped
and one that GC moved is not copied twice.

What it must not do: copy a frame the index does not point at (that is dead), delete a
file (the checkpoint does), or take a step while the volume may not be written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .. import limits
from ..errors import Corrupt, IOFailure, NoSpace
from ..ids import BlockId
from ..meta.store import MetaStore
from . import frames, snaplist
from .blocks import BlockStore
from .ops import Operation
from .segments import Segments, file_name
from .segstats import SegmentStats
from .space import SpaceGuard

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReclaimReport:
    steps: int = 0
    bytes_scanned: int = 0          # segment bytes read (live and dead frames)
    bytes_copied: int = 0           # live frames written again
    segments_emptied: int = 0
    bytes_freed: int = 0            # bytes of emptied segments (unlinked at the next checkpoint)
    skipped: list[str] | None = None

    def skip(self, why: str) -> None:
        if self.skipped is None:
            self.skipped = []
        self.skipped.append(why)


@dataclass(frozen=True, slots=True)
class Usage:
    live: int                       # live frame bytes, every segment
    dead: int                       # dead bytes in segments the reclaimer may collect
    emptied: int                    # segments waiting for the checkpoint that deletes them

    def excess(self, ratio: float | None = None, slack: int | None = None) -> int:
        """Dead bytes above what the rule allows (<= 0: nothing to do); the limits' values
        unless given (read at each call: tests and benchmarks change them)."""
        ratio = limits.reclaim_dead_ratio if ratio is None else ratio
        slack = limits.reclaim_slack_bytes if slack is None else slack
        return self.dead - int(ratio * self.live) - slack


class Reclaimer:
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
        self._cursor: tuple[int, int] | None = None      # (segment, next offset to read)
        self._failed: set[int] = set()                   # segments a step gave up on

    # --- deciding ------------------------------------------------------------------------------
    def usage(self) -> Usage:
        """Live and collectable dead bytes now (one pass over the segment counters)."""
        pinned = snaplist.pinned_segment_max(self._meta)
        live = dead = 0
        for seg, (written, seg_live) in self._segstats.snapshot().items():
            live += seg_live
            if seg > pinned and seg not in self._failed:
                dead += written - seg_live        # the current segment's too: see _roll
        return Usage(live, dead, len(self._segstats.dead))

    def needed(self, ratio: float | None = None, slack: int | None = None) -> bool:
        return self.usage().excess(ratio, slack) > 0

    @property
    def in_progress(self) -> bool:
        """A segment is half copied: finish it (its copies were paid for) before stopping."""
        return self._cursor is not None

    def _next_segment(self) -> int | None:
        """The collectable segment with the fewest live bytes (None: none has dead bytes)."""
        pinned = snaplist.pinned_segment_max(self._meta)
        current = self._segments.current
        dead = set(self._segstats.dead)
        best: tuple[int, int] | None = None
        for seg, (written, live) in self._segstats.snapshot().items():
            if seg == current or seg <= pinned or seg in dead or seg in self._failed:
                continue
            if written > live and (best is None or live < best[1]):
                best = (seg, live)
        return None if best is None else best[0]

    # --- doing ---------------------------------------------------------------------------------
    def step(self, report: ReclaimReport, budget_bytes: int | None = None) -> bool:
        """Read up to ``budget_bytes`` of one segment and copy its live frames out, as one
        operation; empty the segment when its last live frame is gone. Returns False when
        there was nothing to take (no segment with dead bytes)."""
        if budget_bytes is None:
            budget_bytes = limits.reclaim_step_bytes
        if self._cursor is None or not self._valid(self._cursor[0]):
            seg = self._next_segment()
            if seg is None and self._roll():
                seg = self._next_segment()
            if seg is None:
                self._cursor = None
                return False
            self._cursor = (seg, 0)
        seg, offset = self._cursor
        self._admit()
        written, live = self._segstats.get(seg)
        if live > 0 and self._space.full and not self._space.room_for(min(live, budget_bytes)):
            return False         # copying needs space the disk does not have
        report.steps += 1
        try:
            with self._operation() as op:
                if live > 0:
                    end = self._copy_chunk(seg, offset, budget_bytes, op, report)
                    if end is None:
                        self._give_up(seg)
                        return True
                    self._cursor = (seg, end)
                    written, live = self._segstats.get(seg)
                    if live > 0 and end < self._segments.file_size(seg):
                        return True
                if live > 0:
                    # Scanned to the end and something is still counted live: the counters
                    # and the index disagree. Leave the segment to fsck, lose no frame.
                    report.skip(f"segment {file_name(seg)}: {live} bytes still counted live "
                                f"after a full scan")
                    self._give_up(seg)
                    return True
                self._segstats.emptied(seg, self._meta)
        except NoSpace:
            return False          # nothing moved (the append failed whole); try again later
        self._cursor = None
        report.segments_emptied += 1
        report.bytes_freed += written
        return True

    def _roll(self) -> bool:
        """Only the segment being written has dead bytes to give: if it is mostly dead,
        start a new one so that this one can be taken (a volume that deletes what it just
        wrote gets the space back before it writes 64 MiB more). True if it rolled."""
        current = self._segments.current
        if current is None:
            return False
        written, live = self._segstats.get(current)
        if not written or live / written >= limits.gc_live_fraction_min:
            return False
        try:
            self._segments.roll()
        except OSError as exc:
            log.info("could not start a new data segment in %s: %s", self._segments.path(current), exc)
            return False
        return self._segments.current != current

    def _valid(self, seg: int) -> bool:
        """May the step go on with ``seg``? (A clone made between two steps pins it.)"""
        return (seg in self._segstats and seg not in self._segstats.dead
                and seg != self._segments.current and seg not in self._failed
                and seg > snaplist.pinned_segment_max(self._meta))

    def _give_up(self, seg: int) -> None:
        self._failed.add(seg)
        self._cursor = None

    def _copy_chunk(self, seg: int, start: int, budget: int, op: Operation,
                    report: ReclaimReport) -> int | None:
        """Copy the live frames among those starting in ``[start, start + budget)`` (at
        least one frame) in one append; return where the next step starts, or None if the
        segment cannot be read on (a damaged frame: fsck's business)."""
        where = file_name(seg)
        size = self._segments.file_size(seg)
        try:
            chunk = memoryview(self._segments.pread(seg, start, min(budget, size - start)))
        except Corrupt as exc:
            report.skip(f"segment {where}: {exc}")
            return None
        live: list[tuple[BlockId, memoryview | bytes, int]] = []    # (id, frame, crc)
        offset = start
        try:
            while offset < size and (offset == start or offset - start < budget):
                rel = offset - start
                head = (chunk[rel:rel + frames.HEADER_SIZE] if rel + frames.HEADER_SIZE <= len(chunk)
                        else self._segments.pread(seg, offset, min(frames.HEADER_SIZE, size - offset)))
                header = frames.parse_header(head, f"{where}@{offset}")
                frame_len = header.frame_len
                bid = BlockId(header.block_id)
                loc = self._blocks.entry(bid)
                if loc is not None and loc.seg == seg and loc.offset == offset:
                    frame = (chunk[rel:rel + frame_len] if rel + frame_len <= len(chunk)
                             else self._segments.pread(seg, offset, frame_len))
                    frames.verify(frame, f"{where}@{offset}")
                    live.append((bid, frame, header.crc))
                offset += frame_len
        except Corrupt as exc:
            report.skip(f"segment {where}: {exc}")
            return None
        report.bytes_scanned += offset - start
        if not live:
            return offset
        total = sum(len(f) for _, f, _ in live)
        try:
            new_seg, new_off = self._blocks.append_frames([f for _, f, _ in live], total, when_full=True)
        except IOFailure:
            op.record()
            raise
        for bid, frame, crc in live:
            self._blocks.moved(bid, new_seg, new_off, len(frame), crc)
            new_off += len(frame)
        report.bytes_copied += total
        return offset


class Pacer:
    """How long the mount worker waits after a reclaim step (no trio here: it only counts).

    While FUSE requests keep the worker busy, reclaim takes at most ``share`` of the loop's
    time (after a step that took ``t``, the worker serves requests for ``t x (1/share - 1)``)
    and copies at most ``reclaim_busy_bytes_per_s``, in steps of ``reclaim_busy_step_bytes``
    (a request waits at most one step, well under a millisecond). When the volume is idle
    it steps back to back, 1 MiB at a time, yielding between steps. Busy means foreground work was seen
    in the last ``hold_s``: the caller tells it what it saw (the engine's counters moved
    between two steps, or the loop ran other tasks for long while it yielded).
    """

    def __init__(self, share: float | None = None, hold_s: float = 0.5) -> None:
        self.share = limits.reclaim_busy_share if share is None else share
        assert 0 < self.share <= 1
        self.hold_s = hold_s
        self._busy_until = 0.0
        self.spent_s = 0.0                  # time in steps, for reports
        self.steps = 0

    def busy(self, now: float) -> bool:
        return now < self._busy_until

    def saw_foreground(self, now: float) -> None:
        self._busy_until = now + self.hold_s

    def step_bytes(self, now: float) -> int:
        """The next step's budget: smaller while busy (less to sync at the next fsync)."""
        return limits.reclaim_busy_step_bytes if self.busy(now) else limits.reclaim_step_bytes

    def wait_after(self, spent_s: float, copied: int, now: float) -> float:
        """Seconds to leave to other work after a step that took ``spent_s`` and copied
        ``copied`` bytes: its share of loop time, and of the disk while busy."""
        self.spent_s += spent_s
        self.steps += 1
        if self.busy(now):
            return max(spent_s * (1 / self.share - 1), copied / limits.reclaim_busy_bytes_per_s)
        return 0.0
