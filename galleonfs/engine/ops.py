"""Operations: everything one request changes becomes one journal record (DESIGN §3).

An operation changes the metadata store (``MetaStore.put``/``delete``, recorded), the block
index (``BlockStore``, one write per entry), the super record and the segment counters,
and may append block frames. ``with engine.operation():`` closes it: on success, ``end``
turns all of it into one journal record written with a plain ``write()``; nothing is
synced. An operation too big for one record (deleting a huge file) calls ``record()``
between consistent steps, each step one record that a crash may end after.

On an error, the scope does what the code it replaced did, and makes it hold everywhere:

* ``Exception`` (a ``GalleonError``, or a bug): nothing of the operation is journaled. The
  VFS validates before it changes anything, so normally there is nothing to drop; if the
  operation had changed something already, that is undone (the metadata transaction is
  rebuilt from the journal, as a restart would), so no later record can build on half an
  operation. The error goes on to the caller.
* ``BaseException`` that is not an ``Exception`` (``crashpoints.SimulatedCrash``, a
  ``KeyboardInterrupt``): nothing at all; the process, or the test's engine, is going
  away, and what a crash leaves is what the crash tests check.

Steps that keep what they did when they fail half-way (GC, rekey) catch their error inside
the scope, ``record()`` and re-raise, or leave the scope normally.

What it must not do: sync (``checkpoint.py`` does), or nest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from .. import limits
from ..errors import GalleonError
from ..ids import Lsn
from ..meta.store import MetaStore
from ..storage import no_space
from .blocks import BlockStore
from .health import Health
from .journal import FrameRef, JournalWriter
from .segments import Segments
from .segstats import SegmentStats
from .space import SpaceGuard
from .superblock import SuperBlock

log = logging.getLogger(__name__)


class OpLog:
    """Turns the changes of the current operation into journal records."""

    def __init__(self, *, meta: MetaStore, sb: SuperBlock, segments: Segments,
                 segstats: SegmentStats, blocks: BlockStore, journal_writer: JournalWriter,
                 space: SpaceGuard, health: Health, read_only: bool,
                 rebuild: Callable[[], None]) -> None:
        self._meta = meta
        self._sb = sb
        self._segments = segments
        self._segstats = segstats
        self._blocks = blocks
        self._journal = journal_writer
        self._space = space
        self._health = health
        self._read_only = read_only
        self._rebuild = rebuild
        self._scope = Operation(self)

    def scope(self) -> Operation:
        return self._scope

    def pending(self) -> bool:
        """True while changes wait for their record."""
        return bool(self._meta.has_changes() or self._blocks.changed or self._segstats.changed
                    or self._sb.changed)

    def end(self) -> Lsn | None:
        """Journal everything the current operation changed, as one record; return its LSN."""
        # A segment created by this operation keeps its number even if the record is lost.
        self._sb.next_segment = self._segments.next_seg
        self._blocks.flush()
        self._sb.persist(self._meta)
        self._segstats.persist(self._meta)
        changes = self._meta.take_changes()
        frames = self._blocks.take_pending()
        if not changes and not frames:
            return None
        assert not self._read_only, "a read-only engine made changes"
        try:
            return self._journal.append(frames, changes, generation=self._sb.generation,
                                        inline=self._inline(frames))
        except OSError as exc:
            raise self._unjournaled(exc) from None

    def _inline(self, refs: list[FrameRef]) -> bytes | None:
        """The frames' bytes if the record should carry them (small, and the window of
        inline bytes not yet synced in their segments has room), else None."""
        if not refs:
            return None
        total = sum(ref.length for ref in refs)
        if (total > limits.journal_inline_record_bytes_max
                or self._journal.inline_unsynced + total > limits.journal_inline_window_bytes):
            return None
        # Frames of one operation are mostly adjacent: one read per run (page cache).
        parts: list[bytes] = []
        run_seg, run_start, run_end = refs[0].seg, refs[0].offset, refs[0].offset
        for ref in refs:
            if ref.seg != run_seg or ref.offset != run_end:
                parts.append(self._segments.pread(run_seg, run_start, run_end - run_start))
                run_seg, run_start, run_end = ref.seg, ref.offset, ref.offset
            run_end += ref.length
        parts.append(self._segments.pread(run_seg, run_start, run_end - run_start))
        return b"".join(parts)

    def fail(self, why: Exception) -> None:
        """The current operation raised: drop what it changed and did not journal (a
        rebuild from the journal), or, if it changed nothing, what it read."""
        if not self.pending():
            self._blocks.forget_changes()
            return
        log.warning("volume %s: an operation failed after it had changed the volume (%s); "
                    "undoing its changes", self._health.dir, why)
        self._rebuild()

    def _unjournaled(self, exc: OSError) -> GalleonError:
        """The record of an operation that already changed the metadata could not be
        written (admission made room for it, so this is a huge record, or a write that is
        not admitted, on a disk that filled up meanwhile). Those changes must not stay: a
        later record would build on them and a replay would not have them. Undo them by
        rebuilding the metadata from the journal, then fail the operation."""
        log.error("volume %s: could not journal an operation (%s); undoing it", self._health.dir, exc)
        self._rebuild()
        if no_space(exc):
            self._space.enter_full("the journal", exc)
            return self._space.error("the journal")
        return self._health.io_error("append to the journal", exc)


class Operation:
    """``with engine.operation() as op:``: the changes inside become one journal record.

    One instance per engine, reused: operations do not nest, and everything inside one runs
    on the engine's thread without an ``await`` (STYLE: code between two awaits is atomic).
    """

    __slots__ = ("_active", "_log")

    def __init__(self, oplog: OpLog) -> None:
        self._log = oplog
        self._active = False

    def __enter__(self) -> Operation:
        assert not self._active, "an operation began inside another"
        self._active = True
        return self

    def record(self) -> Lsn | None:
        """Journal what the operation did so far (a consistent state), and go on."""
        return self._log.end()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._active = False
        if exc is None:
            self._log.end()
        elif isinstance(exc, Exception):
            self._log.fail(exc)
