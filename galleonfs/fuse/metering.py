"""The mount worker's metrics: wire the counting into the adapter and flush it once a second.

Off with ``GALLEONFS_METRICS=0`` in the worker's environment (then FUSE handlers count
nothing, and ``volume stats`` shows no rates). Exported to Prometheus only when
``PROMETHEUS_MULTIPROC_DIR`` is set, which galleond does for its workers; a standalone
``galleonfs mount`` still counts, for ``stats`` on its control socket.

What it must not do: add work per FUSE request beyond ``metrics.volume`` (the flush runs
between requests, in this worker's one trio loop).
"""

from __future__ import annotations

import os
from typing import Any

import trio

from .. import limits
from ..engine.committer import Committer
from ..engine.engine import Engine
from ..metrics import multiproc
from ..metrics.volume import Exporter, VolumeStats
from .adapter import OPS, FuseOps


def file_kinds() -> set[str]:
    """The multi-process files the volume metrics write (``counter``, ``gauge_livesum`` ...),
    named as prometheus-client names them."""
    # Late, on purpose: prometheus-client picks where values live (shared files or process
    # memory) when it is first imported (metrics/definitions.py), and importing it costs the
    # worker ~50 ms that only an exporting worker should pay.
    from prometheus_client.metrics import MetricWrapperBase

    from ..metrics import definitions

    kinds: set[str] = set()
    for metric in vars(definitions).values():
        if isinstance(metric, MetricWrapperBase):
            kind = str(metric._type)
            kinds.add(f"gauge_{getattr(metric, '_multiprocess_mode', '')}" if kind == "gauge" else kind)
    return kinds


def enabled(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return env.get("GALLEONFS_METRICS", "1").strip().lower() not in ("0", "false", "no", "off")


class Metering:
    def __init__(self, engine: Engine, ops: FuseOps, committer: Committer) -> None:
        self.engine = engine
        self.stats = VolumeStats(OPS, ops.errors)
        self.stats.activate()
        ops.stats = self.stats
        self.exporter: Exporter | None = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and multiproc.preallocate(file_kinds()):
            self.exporter = Exporter(engine.name or engine.volume_id, self.stats)
            committer.on_sync = self.exporter.commit_done

    async def run(self) -> None:
        """Every second: remember the counts for ``rates`` and export them."""
        while True:
            self.flush()
            await trio.sleep(limits.metrics_flush_interval_s)

    def flush(self) -> None:
        self.stats.tick()
        if self.exporter is None:
            return
        engine = self.engine
        self.exporter.flush(
            {"cache_hits": engine.counters["cache_hits"],
             "cache_misses": engine.counters["blocks_read"],
             "journal_bytes": engine.journal.bytes_appended,
             "enospc": engine.space.enospc_total},
            {"failsafe": 1.0 if engine.failsafe else 0.0, "size_bytes": engine.size,
             "used_bytes": engine.used_bytes, "host_disk_full": 1.0 if engine.space.full else 0.0})

    def checkpoint_done(self, seconds: float) -> None:
        if self.exporter is not None:
            self.exporter.checkpoint_done(seconds)

    def gc_reclaimed(self, nbytes: int) -> None:
        if self.exporter is not None:
            self.exporter.gc_reclaimed(nbytes)

    def rates(self) -> dict[str, Any]:
        """The ``rates`` part of the control ``stats`` reply."""
        r = self.stats.rates()
        return {"window_s": r.window_s, "requests_per_s": r.requests_per_s,
                "read_ops_per_s": r.read_ops_per_s, "write_ops_per_s": r.write_ops_per_s,
                "read_bytes_per_s": r.read_bytes_per_s, "write_bytes_per_s": r.write_bytes_per_s,
                "latency_p50_s": r.latency_p50_s, "latency_p99_s": r.latency_p99_s,
                "requests_total": sum(op.count for op in self.stats.ops.values()),
                "read_bytes_total": self.stats.read_bytes,
                "written_bytes_total": self.stats.written_bytes}
