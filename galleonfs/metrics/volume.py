"""The mount worker's counting: plain ints on the hot path, flushed to Prometheus once a second.

A FUSE request already costs ~76 µs of CPU in pyfuse3 + trio (docs/benchmarks.md); a
prometheus-client ``inc()`` in multi-process mode takes a lock and writes a shared mmap
(~2-3 µs, several per request). So each request only adds to ints and floats here
(``OpStats.observe``: a clock read, a bisect, three additions), and ``Exporter.flush``, run
from a trio task every ``limits.metrics_flush_interval_s``, adds the differences to the
Prometheus metrics. The same counts feed ``galleonctl volume stats`` (``VolumeStats.rates``:
IOPS, bytes per second and latency percentiles over the last ~10 s).

One process serves one volume (pyfuse3 keeps its session global), so the one live
``VolumeStats`` of the process is module state: ``add_qos_throttled`` finds it there.

What it must not do: import pyfuse3 or the engine; block; allocate per request.
"""

from __future__ import annotations

import errno as errno_names
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import limits

# The histogram's upper bounds, +Inf last; the same as definitions.LATENCY_BUCKETS_S, which
# is not imported here so that counting works without prometheus-client loaded.
LATENCY_BOUNDS_S = (50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))

_current: VolumeStats | None = None


def add_qos_throttled(seconds: float) -> None:
    """Count ``seconds`` a request of this worker's volume waited for a QoS token.

    Exported as ``galleonfs_qos_throttled_seconds_total{volume=...}``. A no-op when metrics
    are off (``GALLEONFS_METRICS=0``) or outside a mount worker. Cost: one float addition.
    """
    if _current is not None:
        _current.throttled_s += seconds


class OpStats:
    """One FUSE operation's count, latency sum and latency histogram (non-cumulative)."""

    __slots__ = ("buckets", "count", "sum_s")

    def __init__(self) -> None:
        self.count = 0
        self.sum_s = 0.0
        self.buckets = [0] * len(LATENCY_BOUNDS_S)

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum_s += seconds
        self.buckets[bisect_left(LATENCY_BOUNDS_S, seconds)] += 1


@dataclass(frozen=True)
class _Sample:
    t: float
    requests: int
    reads: int
    writes: int
    read_bytes: int
    written_bytes: int
    buckets: tuple[int, ...]


@dataclass(frozen=True)
class Rates:
    """What ``volume stats`` shows: per second over ``window_s``, latency over all requests."""

    window_s: float
    requests_per_s: float
    read_ops_per_s: float
    write_ops_per_s: float
    read_bytes_per_s: float
    write_bytes_per_s: float
    latency_p50_s: float
    latency_p99_s: float


def quantile(q: float, buckets: Iterable[int]) -> float:
    """The q-quantile of a non-cumulative histogram, interpolated inside its bucket (like
    PromQL's histogram_quantile); 0 when empty, the last finite bound for the +Inf bucket."""
    counts = list(buckets)
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            upper = LATENCY_BOUNDS_S[i]
            lower = LATENCY_BOUNDS_S[i - 1] if i else 0.0
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return LATENCY_BOUNDS_S[-2]


class VolumeStats:
    """Counts of one mounted volume. ``errors`` is the adapter's errno -> count dict."""

    def __init__(self, ops: Iterable[str], errors: dict[int, int]) -> None:
        self.ops = {name: OpStats() for name in ops}
        self.errors = errors
        self.in_flight = 0
        self.read_bytes = 0
        self.written_bytes = 0
        self.throttled_s = 0.0
        self._window: deque[_Sample] = deque(maxlen=limits.metrics_window_samples)
        self._window.append(self._sample())

    def activate(self) -> None:
        """Make this the process's volume for ``add_qos_throttled``."""
        global _current
        _current = self

    def _sample(self) -> _Sample:
        buckets = [0] * len(LATENCY_BOUNDS_S)
        requests = 0
        for op in self.ops.values():
            requests += op.count
            for i, n in enumerate(op.buckets):
                buckets[i] += n
        return _Sample(time.monotonic(), requests, self.ops["read"].count, self.ops["write"].count,
                       self.read_bytes, self.written_bytes, tuple(buckets))

    def tick(self) -> None:
        """Remember the counts now (once a second): the window ``rates`` looks back over."""
        self._window.append(self._sample())

    def rates(self) -> Rates:
        old, now = self._window[0], self._sample()
        span = max(now.t - old.t, 1e-9)
        delta = [b - a for a, b in zip(old.buckets, now.buckets, strict=True)]
        return Rates(
            window_s=now.t - old.t,
            requests_per_s=(now.requests - old.requests) / span,
            read_ops_per_s=(now.reads - old.reads) / span,
            write_ops_per_s=(now.writes - old.writes) / span,
            read_bytes_per_s=(now.read_bytes - old.read_bytes) / span,
            write_bytes_per_s=(now.written_bytes - old.written_bytes) / span,
            latency_p50_s=quantile(0.50, delta), latency_p99_s=quantile(0.99, delta))


def errno_name(number: int) -> str:
    return errno_names.errorcode.get(number, str(number))


class Exporter:
    """Adds what ``VolumeStats`` counted since the last flush to the Prometheus metrics.

    Histograms are fed through prometheus-client's per-bucket values (``_buckets``,
    ``_sum``: the same non-cumulative storage ``observe`` uses), so a second of N requests
    costs one update per bucket that changed, not N observations. tests/metrics checks that
    ``_count`` equals the request counter, which catches a change in that storage.
    """

    def __init__(self, volume: str, stats: VolumeStats) -> None:
        from . import definitions as d

        self._d = d
        self.volume = volume
        self.stats = stats
        # Children are made on an operation's first request: ~20 series per operation, and
        # most volumes never see a mknod or a removexattr.
        self._requests: dict[str, Any] = {}
        self._latency: dict[str, Any] = {}
        self._flushed_ops = {op: OpStats() for op in stats.ops}
        self._flushed: dict[str, float] = {}
        self._flushed_errors: dict[int, int] = {}

    def _add(self, key: str, metric: Any, total: float) -> None:
        delta = total - self._flushed.get(key, 0)
        if delta:
            metric.labels(self.volume).inc(delta)
            self._flushed[key] = total

    def flush(self, engine_totals: dict[str, int], gauges: dict[str, float]) -> None:
        d, s = self._d, self.stats
        for op, now in s.ops.items():
            was = self._flushed_ops[op]
            if now.count == was.count:
                continue
            if op not in self._requests:
                self._requests[op] = d.fuse_requests.labels(self.volume, op)
                self._latency[op] = d.fuse_request_duration.labels(self.volume, op)
                assert len(self._latency[op]._buckets) == len(LATENCY_BOUNDS_S), "histogram storage changed"
            self._requests[op].inc(now.count - was.count)
            child = self._latency[op]
            for i, n in enumerate(now.buckets):
                if n != was.buckets[i]:
                    child._buckets[i].inc(n - was.buckets[i])
                    was.buckets[i] = n
            child._sum.inc(now.sum_s - was.sum_s)
            was.count, was.sum_s = now.count, now.sum_s
        for number, count in list(s.errors.items()):
            delta = count - self._flushed_errors.get(number, 0)
            if delta:
                d.fuse_errors.labels(self.volume, errno_name(number)).inc(delta)
                self._flushed_errors[number] = count
        self._add("read_bytes", d.read_bytes, s.read_bytes)
        self._add("written_bytes", d.written_bytes, s.written_bytes)
        self._add("throttled_s", d.qos_throttled, s.throttled_s)
        self._add("cache_hits", d.cache_hits, engine_totals["cache_hits"])
        self._add("cache_misses", d.cache_misses, engine_totals["cache_misses"])
        self._add("journal_bytes", d.journal_bytes, engine_totals["journal_bytes"])
        self._add("enospc", d.volume_enospc, engine_totals.get("enospc", 0))
        d.fuse_in_flight.labels(self.volume).set(s.in_flight)
        d.failsafe.labels(self.volume).set(gauges["failsafe"])
        d.volume_size.labels(self.volume).set(gauges["size_bytes"])
        d.volume_used.labels(self.volume).set(gauges["used_bytes"])
        d.volume_disk_full.labels(self.volume).set(gauges.get("host_disk_full", 0.0))

    def commit_done(self, seconds: float) -> None:
        self._d.commit_duration.labels(self.volume).observe(seconds)

    def checkpoint_done(self, seconds: float) -> None:
        self._d.checkpoint_duration.labels(self.volume).observe(seconds)

    def gc_reclaimed(self, nbytes: int) -> None:
        if nbytes:
            self._d.gc_reclaimed_bytes.labels(self.volume).inc(nbytes)
