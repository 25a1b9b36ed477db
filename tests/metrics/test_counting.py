"""The worker's counting (``metrics/volume.py``) without a kernel: buckets, quantiles, rates."""

from __future__ import annotations

import pytest

from galleonfs.fuse import metering
from galleonfs.metrics import add_qos_throttled, definitions
from galleonfs.metrics import volume as mv


def test_bucket_bounds_match_the_exported_histogram() -> None:
    assert (*definitions.LATENCY_BUCKETS_S, float("inf")) == mv.LATENCY_BOUNDS_S


def test_a_value_on_a_bound_falls_in_that_bucket_like_prometheus_le() -> None:
    op = mv.OpStats()
    for seconds in (100e-6, 100.1e-6, 0.0, 11.0):
        op.observe(seconds)
    assert op.count == 4
    assert op.buckets[1] == 1            # le=0.0001 holds 100 µs exactly
    assert op.buckets[2] == 1            # 100.1 µs goes to le=0.00025
    assert op.buckets[0] == 1            # 0 s
    assert op.buckets[-1] == 1           # above 10 s: +Inf
    assert op.sum_s == pytest.approx(11.0002001)


def test_quantiles_interpolate_inside_the_bucket() -> None:
    buckets = [0] * len(mv.LATENCY_BOUNDS_S)
    assert mv.quantile(0.5, buckets) == 0.0
    buckets[4] = 100                     # 100 requests between 0.5 ms and 1 ms
    assert mv.quantile(0.5, buckets) == pytest.approx(0.75e-3)
    assert mv.quantile(0.99, buckets) == pytest.approx(0.995e-3)
    buckets[-1] = 100                    # as many above 10 s: the last finite bound
    assert mv.quantile(0.99, buckets) == 10.0


def test_rates_over_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(mv.time, "monotonic", lambda: now[0])
    stats = mv.VolumeStats(["read", "write", "getattr"], {})
    for _ in range(40):
        stats.ops["write"].observe(2e-3)
        stats.written_bytes += 4096
    stats.ops["read"].observe(2e-3)
    stats.read_bytes += 1 << 20
    now[0] = 102.0
    r = stats.rates()
    assert (r.window_s, r.write_ops_per_s, r.read_ops_per_s) == (2.0, 20.0, 0.5)
    assert (r.write_bytes_per_s, r.read_bytes_per_s, r.requests_per_s) == (81920.0, 524288.0, 20.5)
    assert 1e-3 < r.latency_p50_s <= r.latency_p99_s <= 2.5e-3
    for _ in range(mv.limits.metrics_window_samples):     # the old requests leave the window
        now[0] += 1.0
        stats.tick()
    assert stats.rates().requests_per_s == 0.0 and stats.rates().latency_p99_s == 0.0


def test_qos_throttled_time_goes_to_the_active_volume() -> None:
    stats = mv.VolumeStats(["read", "write"], {})
    add_qos_throttled(0.25)              # before activation: not this volume's
    stats.activate()
    add_qos_throttled(0.25)
    add_qos_throttled(0.5)
    assert stats.throttled_s == 0.75


@pytest.mark.parametrize(("value", "on"), [(None, True), ("1", True), ("0", False), ("off", False),
                                           ("false", False)])
def test_galleonfs_metrics_switch(value: str | None, on: bool) -> None:
    env = {} if value is None else {"GALLEONFS_METRICS": value}
    assert metering.enabled(env) is on
