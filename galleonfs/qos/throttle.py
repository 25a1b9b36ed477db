"""The mount worker's side of QoS: charge a FUSE read or write before doing it.

``FuseOps.qos`` is a ``Throttle`` while the volume has rates to enforce and ``None``
otherwise, so an unthrottled request costs one attribute check. A charged request books
its tokens (``bucket.Limiter.reserve``) and, if they are not there yet, waits with
``trio.sleep`` on the worker's loop: other FUSE requests and the control socket keep being
served meanwhile, and nothing ever fails for being throttled.

The counters (requests and bytes admitted, requests that waited, seconds waited) survive
rate changes; the daemon reads them to see each volume's demand, and ``volume stats``
shows them.

What it must not do: block the loop, raise for a throttled request, or import the metrics
package (qos is a leaf: the worker hands in the counter as ``on_wait``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from .bucket import Limiter
from .policy import WorkerRates


class Throttle:
    def __init__(self, rates: WorkerRates, clock: Callable[[], float] = time.monotonic, *,
                 on_wait: Callable[[float], None] | None = None) -> None:
        """``on_wait(seconds)`` is told of each wait (the worker passes the Prometheus counter
        ``galleonfs_qos_throttled_seconds_total``)."""
        self._clock = clock
        self.limiter = Limiter(rates, clock())
        self.requests = 0
        self.bytes = 0
        self.waits = 0
        self.throttled_s = 0.0
        self._on_wait = on_wait

    @property
    def rates(self) -> WorkerRates:
        return self.limiter.rates

    def update(self, rates: WorkerRates) -> None:
        self.limiter.update(rates, self._clock())

    async def admit(self, nbytes: int) -> None:
        """Wait until one request of ``nbytes`` may go (at once if tokens are there)."""
        now = self._clock()
        delay = self.limiter.reserve(nbytes, now) - now
        self.requests += 1
        self.bytes += nbytes
        if delay > 0:
            self.waits += 1
            self.throttled_s += delay
            if self._on_wait is not None:
                self._on_wait(delay)
            await trio.sleep(delay)

    def counters(self) -> dict[str, int]:
        """For ``volume stats``: whole numbers (the stats map holds integers), with the
        limits in force now (0: none), which the daemon may have cut to a share."""
        rates = self.limiter.rates
        return {"qos_requests": self.requests, "qos_bytes": self.bytes, "qos_waits": self.waits,
                "qos_throttled_us": round(self.throttled_s * 1e6),
                "qos_iops_limit": round(rates.iops), "qos_bytes_per_s_limit": round(rates.bytes_per_s)}
