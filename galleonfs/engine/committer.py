"""Group commit on trio: every caller waiting for durability shares one sync.

``await committer.commit()`` returns once every journal record appended before the call is
durable. If a sync is already running, the caller waits for it and, if its records came
after that sync started, for the next one; so N concurrent ``fsync`` calls cost at most
two syncs, not N. The ``fdatasync`` calls run in a worker thread (≈0.1-0.3 ms each, DESIGN
§2), so FUSE requests keep being served meanwhile.

What it must not do: touch the metadata store from the thread (LMDB transactions belong to
the trio thread); the thread only syncs file descriptors.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from .engine import Engine


class Committer:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._running: trio.Event | None = None
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

    async def wait_idle(self) -> None:
        """Wait until no sync is running (before a checkpoint or close)."""
        while self._running is not None:
            await self._running.wait()
