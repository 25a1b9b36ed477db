"""Group commit on trio: every caller waiting for durability shares one sync.

``await committer.commit()`` returns once every journal record appended before the call is
durable. If a sync is already running, the caller waits for it and, if its records came
after that sync started, for the next one; so N concurrent ``fsync`` calls cost at most
two syncs, not N. The ``fdatasync`` calls run in a worker thread (≈0.1-0.3 ms each, DESIGN
§2), so FUSE requests keep being served meanwhile.

After a commit, when the inline frames not yet synced in their segments fill half their
window (``limits.journal_inline_window_bytes``), a background task syncs the segments in
another thread (``Engine.begin_flush``), so no fsync waits for that second sync; commits go
on meanwhile, and a commit or checkpoint that takes the segments itself voids the flush.

What it must not do: touch the metadata store from the thread (LMDB transactions belong to
the trio thread); the thread only syncs file descriptors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from .engine import Engine, FlushBatch

log = logging.getLogger(__name__)


class Committer:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._running: trio.Event | None = None
        self._flushing: trio.Event | None = None
        self.flushes = 0
        self.syncs = 0
        self.on_sync: Callable[[float], None] | None = None   # metrics: each sync's duration

    async def commit(self) -> None:
        engine = self._engine
        target = engine.appended_lsn
        while engine.durable_lsn < target:
            if self._running is not None:
                await self._running.wait()
                continue
            done = self._running = trio.Event()
            batch = engine.begin_commit()
            started = time.perf_counter()
            try:
                await trio.to_thread.run_sync(batch.run)
            except OSError as exc:
                raise engine.sync_failed(exc) from exc
            finally:
                self._running = None
                done.set()
            engine.end_commit(batch)
            self.syncs += 1
            if self.on_sync is not None:
                self.on_sync(time.perf_counter() - started)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._flushing is not None:
            return
        batch = self._engine.begin_flush()
        if batch is None:
            return
        self._flushing = trio.Event()
        trio.lowlevel.spawn_system_task(self._flush, batch)

    async def _flush(self, batch: FlushBatch) -> None:
        engine = self._engine
        try:
            await trio.to_thread.run_sync(batch.run)
        except OSError as exc:
            if engine.flush_current(batch):
                engine.sync_failed(exc)     # failsafe, said once; the fsyncs were answered
        except Exception:                   # a system task must not raise: say it, go on
            log.exception("volume %s: background segment sync failed", engine.dir)
        else:
            engine.end_flush(batch)
            self.flushes += 1
        finally:
            done, self._flushing = self._flushing, None
            if done is not None:
                done.set()

    async def wait_idle(self) -> None:
        """Wait until no sync is running (before a checkpoint or close)."""
        while self._running is not None or self._flushing is not None:
            if self._running is not None:
                await self._running.wait()
            if self._flushing is not None:
                await self._flushing.wait()
