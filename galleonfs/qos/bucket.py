"""Token buckets on an injectable clock: when may a request of this size go?

Pure arithmetic on the times it is given, so a test drives it with a fake clock and checks
exact admission times. Nothing here sleeps; ``throttle`` does, in the mount worker.

**Reservation, not polling.** ``Limiter.reserve(nbytes, now)`` returns the time at which
the request may go and takes its tokens at that time, even a future one. Requests are
therefore admitted in arrival order (FIFO) at exactly computed times: with a limit of r
requests/s and a window of w seconds, a bucket starts full with ``r * w`` tokens, so
after a pause ``r * w`` requests go at once and request ``k`` after them waits ``k / r``.
A request larger than a whole bucket (a 1 MiB write against 2 MB of tokens) goes when
the bucket is full and leaves it in debt, so the average rate holds for any size.

**Bursts: a dual token bucket.** With a multiplier m > 1 and a duration D, a resource has
two buckets, and a request needs tokens from both:

* the *peak* bucket refills at ``m * r`` and holds ``m * r * w``: it caps the rate at m x r;
* the *sustained* bucket refills at ``r`` and holds ``m * r * w + (m - 1) * r * D``.

Flat out from full, the sustained bucket loses ``(m - 1) * r`` tokens a second, so the
volume runs at m x r for exactly D seconds, then falls back to r. **Burst credit refills**
at the rate the volume stays under its limit: running at rate x < r adds ``r - x`` tokens a
second, so after a full burst, ``(m - 1) * D`` idle seconds restore it completely (the
same rule as a cloud disk's burst balance). Without a burst the two buckets are one.

What it must not do: sleep, read a clock itself, or allocate per request beyond a float.
"""

from __future__ import annotations

from .. import limits
from .policy import WorkerRates


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity``; starts full at ``now``."""

    __slots__ = ("capacity", "rate", "time", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        assert rate > 0 and capacity > 0, (rate, capacity)
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.time = now

    def _advance(self, t: float) -> None:
        if t > self.time:
            self.tokens = min(self.capacity, self.tokens + (t - self.time) * self.rate)
            self.time = t

    def ready_at(self, cost: float, now: float) -> float:
        """The earliest time (not before ``now`` or an earlier reservation) with enough tokens."""
        t = max(now, self.time)
        self._advance(t)
        need = min(cost, self.capacity)
        return t if self.tokens >= need else t + (need - self.tokens) / self.rate

    def take(self, cost: float, t: float) -> None:
        self._advance(t)
        self.tokens -= cost

    def reconfigure(self, rate: float, capacity: float, now: float) -> None:
        """New rate and size; tokens earned so far are kept (up to the new size)."""
        assert rate > 0 and capacity > 0, (rate, capacity)
        self._advance(max(now, self.time))
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


def _shape(rate: float, multiplier: float, burst_s: float, window_s: float) -> list[tuple[float, float]]:
    """(rate, capacity) of each bucket of one resource: sustained first, then peak if bursting."""
    if multiplier <= 1 or burst_s <= 0:
        return [(rate, rate * window_s)]
    peak = multiplier * rate * window_s
    return [(rate, peak + (multiplier - 1) * rate * burst_s), (multiplier * rate, peak)]


class Limiter:
    """The buckets of one volume: IOPS (cost 1 per request) and bytes (cost = request size)."""

    def __init__(self, rates: WorkerRates, now: float, *, window_s: float = limits.qos_bucket_window_s) -> None:
        self.window_s = window_s
        self.rates = rates
        self._iops: list[TokenBucket] = []
        self._bytes: list[TokenBucket] = []
        self.update(rates, now)

    def update(self, rates: WorkerRates, now: float) -> None:
        """Apply new rates at ``now``; buckets that remain keep what they hold."""
        self.rates = rates
        self._iops = self._rebuild(self._iops, rates.iops, rates.burst_iops_multiplier, rates, now)
        self._bytes = self._rebuild(self._bytes, rates.bytes_per_s, rates.burst_bytes_multiplier, rates, now)

    def _rebuild(self, buckets: list[TokenBucket], rate: float, multiplier: float, rates: WorkerRates,
                 now: float) -> list[TokenBucket]:
        if rate <= 0:
            return []
        shape = _shape(rate, multiplier, rates.burst_s, self.window_s)
        out = []
        for i, (r, capacity) in enumerate(shape):
            if i < len(buckets):
                buckets[i].reconfigure(r, capacity, now)
                out.append(buckets[i])
            else:
                out.append(TokenBucket(r, capacity, now))
        return out

    def reserve(self, nbytes: int, now: float) -> float:
        """Book one request of ``nbytes``; return when it may go (``now`` if at once)."""
        t = now
        for bucket in self._iops:
            t = max(t, bucket.ready_at(1, now))
        for bucket in self._bytes:
            t = max(t, bucket.ready_at(nbytes, now))
        for bucket in self._iops:
            bucket.take(1, t)
        for bucket in self._bytes:
            bucket.take(nbytes, t)
        return t
