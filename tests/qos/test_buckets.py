"""QoS arithmetic on a fake clock: token buckets, bursts, the guarantee allocation. Exact.

Every expected time below is computed by hand from the rule in ``galleonfs/qos/bucket.py``
(a bucket holds ``rate * 0.1 s`` and starts full; bursts are a dual bucket), so a change of
the rule fails here, not only in a benchmark.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from galleonfs.errors import InvalidArgument
from galleonfs.qos.allocation import Share, allocate
from galleonfs.qos.bucket import Limiter
from galleonfs.qos.policy import Burst, QosPolicy, QosRates, WorkerRates
from galleonfs.qos.throttle import Throttle

EPS = 1e-9


def admit_times(limiter: Limiter, arrivals: list[float], nbytes: int = 4096) -> list[float]:
    return [limiter.reserve(nbytes, t) for t in arrivals]


def test_100_iops_admits_250_requests_at_the_computed_times() -> None:
    limiter = Limiter(WorkerRates(iops=100), 0.0)
    times = admit_times(limiter, [0.0] * 250)
    # 10 tokens at t=0 (100/s x 0.1 s), then one every 10 ms, in arrival order.
    expected = [0.0] * 10 + [(k - 9) / 100 for k in range(10, 250)]
    assert times == pytest.approx(expected, abs=EPS)
    assert times[-1] == pytest.approx(2.40, abs=EPS)


def test_a_pause_refills_the_bucket_but_never_beyond_its_window() -> None:
    limiter = Limiter(WorkerRates(iops=100), 0.0)
    admit_times(limiter, [0.0] * 10)                       # bucket empty at t=0
    # 60 s idle: still only 10 tokens (a window's worth), then 10 ms apart again.
    times = admit_times(limiter, [60.0] * 12)
    assert times == pytest.approx([60.0] * 10 + [60.01, 60.02], abs=EPS)


def test_requests_spaced_wider_than_the_limit_never_wait() -> None:
    limiter = Limiter(WorkerRates(iops=100), 0.0)
    arrivals = [k * 0.02 for k in range(500)]               # 50/s against a 100/s limit
    assert admit_times(limiter, arrivals) == arrivals


def test_throughput_limit_paces_bytes_and_big_requests_go_into_debt() -> None:
    # 10 MB/s: the bucket holds 1 MB. 1 MiB requests are bigger than the bucket: each goes
    # when the bucket is full and leaves it 48,576 bytes in debt.
    limiter = Limiter(WorkerRates(bytes_per_s=10e6), 0.0)
    mib = 1 << 20
    times = admit_times(limiter, [0.0] * 4, nbytes=mib)
    first = 0.0
    second = mib / 10e6                                     # from -48,576 back up to 1e6 tokens
    assert times == pytest.approx([first, second, 2 * second, 3 * second], abs=EPS)
    # Long-run average is the limit exactly: 100 MiB take 100 * mib / 10e6 - 0.1 s.
    limiter = Limiter(WorkerRates(bytes_per_s=10e6), 0.0)
    last = admit_times(limiter, [0.0] * 100, nbytes=mib)[-1]
    assert last == pytest.approx(99 * mib / 10e6, abs=1e-6)


def test_both_limits_apply_and_the_tighter_one_wins() -> None:
    # 1000 IOPS but 4096 * 100 bytes/s: with 4 KiB requests the byte limit binds (100/s).
    limiter = Limiter(WorkerRates(iops=1000, bytes_per_s=409600), 0.0)
    times = admit_times(limiter, [0.0] * 20)
    assert times == pytest.approx([0.0] * 10 + [(k - 9) / 100 for k in range(10, 20)], abs=EPS)


def test_a_2x_burst_for_3_s_then_falls_back_to_the_limit() -> None:
    rates = WorkerRates(iops=100, burst_s=3.0, burst_iops_multiplier=2.0)
    limiter = Limiter(rates, 0.0)
    times = admit_times(limiter, [0.0] * 1000)
    # The peak bucket (200/s, 20 tokens) lets 20 go at 0, then one every 5 ms ...
    assert times[:20] == pytest.approx([0.0] * 20, abs=EPS)
    assert times[20:620] == pytest.approx([(k - 19) / 200 for k in range(20, 620)], abs=EPS)
    # ... for exactly 3 s (request 619 at 3.0 s), then one every 10 ms: the limit.
    assert times[619] == pytest.approx(3.0, abs=EPS)
    assert times[620:] == pytest.approx([3.0 + (k - 619) / 100 for k in range(620, 1000)], abs=EPS)


def test_burst_credit_refills_at_the_rate_the_volume_stays_under_its_limit() -> None:
    rates = WorkerRates(iops=100, burst_s=3.0, burst_iops_multiplier=2.0)
    limiter = Limiter(rates, 0.0)
    done = admit_times(limiter, [0.0] * 1000)[-1]          # credit spent; the bucket is empty
    # Idle for (m - 1) * D = 3 s: the sustained bucket earns 300 tokens; the full 320 take
    # another 0.2 s. After 3.2 s idle the same burst is possible again.
    start = done + 3.2
    again = admit_times(limiter, [start] * 640)
    assert again[619] == pytest.approx(start + 3.0, abs=1e-6)
    assert again[620] == pytest.approx(start + 3.0 + 0.01, abs=1e-6)
    # After only 1 s idle: 100 tokens of credit, so the 200/s run lasts 1 s less... exactly:
    # sustained holds 100 at start, drains at 100/s net after the 20 peak tokens: 0.8 s.
    limiter = Limiter(rates, 0.0)
    done = admit_times(limiter, [0.0] * 1000)[-1]
    start = done + 1.0
    again = admit_times(limiter, [start] * 300)
    assert again[19] == pytest.approx(start, abs=1e-6)
    assert again[179] == pytest.approx(start + 0.8, abs=1e-6)      # 20 + 160 at 200/s
    assert again[180] - again[179] == pytest.approx(0.01, abs=1e-6)  # back to 100/s


def test_new_rates_apply_at_once_and_keep_the_tokens_earned() -> None:
    limiter = Limiter(WorkerRates(iops=100), 0.0)
    admit_times(limiter, [0.0] * 10)                       # empty at t=0
    limiter.update(WorkerRates(iops=1000), 0.05)           # 5 tokens earned by then
    times = admit_times(limiter, [0.05] * 7)
    assert times == pytest.approx([0.05] * 5 + [0.051, 0.052], abs=EPS)


def test_no_limit_admits_everything_at_once() -> None:
    limiter = Limiter(WorkerRates(), 0.0)
    assert admit_times(limiter, [0.0] * 1000) == [0.0] * 1000


def test_throttle_waits_on_the_trio_clock_and_counts_what_waited() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    done: list[float] = []

    async def main() -> None:
        throttle = Throttle(WorkerRates(iops=100), clock=trio.current_time)
        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(_one, throttle)
        assert throttle.requests == 30
        assert throttle.waits == 20
        assert throttle.throttled_s == pytest.approx(sum(k / 100 for k in range(1, 21)), abs=1e-9)
        assert throttle.counters()["qos_throttled_us"] == 2_100_000

    async def _one(throttle: Throttle) -> None:
        await throttle.admit(4096)
        done.append(trio.current_time())

    trio.run(main, clock=clock)
    assert sorted(done) == pytest.approx([0.0] * 10 + [k / 100 for k in range(1, 21)], abs=1e-9)


# --- the guarantee allocation -------------------------------------------------------------------
def test_three_hungry_volumes_get_their_floors_then_equal_shares_of_the_rest() -> None:
    got = allocate(1000, [Share(floor=300), Share(floor=200), Share(floor=0)])
    assert got == pytest.approx([300 + 500 / 3, 200 + 500 / 3, 500 / 3])
    assert sum(got) == pytest.approx(1000)


def test_a_volume_capped_by_its_own_limit_gives_the_rest_to_the_others() -> None:
    got = allocate(1000, [Share(floor=300), Share(floor=200), Share(floor=0, cap=100)])
    assert got == pytest.approx([500, 400, 100])


def test_an_idle_volume_keeps_its_floor_and_the_busy_one_takes_the_rest() -> None:
    # B used 50 in the last tick (no waits): it wants 50, below its floor of 200.
    got = allocate(1000, [Share(floor=300), Share(floor=200, demand=50)])
    assert got == pytest.approx([800, 200])


def test_two_competing_volumes_each_get_at_least_their_floor() -> None:
    got = allocate(500, [Share(floor=300), Share(floor=100)])
    assert got == pytest.approx([350, 150])
    assert got[0] >= 300 and got[1] >= 100


def test_budget_nobody_wants_is_shared_up_to_each_volumes_limit() -> None:
    # Both modest: the leftover (1000 - 30 - 40) goes to both, capped by A's limit of 200.
    got = allocate(1000, [Share(cap=200, demand=30), Share(demand=40)])
    assert got == pytest.approx([200, 800])


def test_oversubscribed_guarantees_shrink_in_proportion() -> None:
    got = allocate(600, [Share(floor=600), Share(floor=300), Share(floor=0)], minimum=1)
    assert got == pytest.approx([400, 200, 1])


# --- policy validation --------------------------------------------------------------------------
@pytest.mark.parametrize(("policy", "message"), [
    (QosPolicy("p", limits=QosRates(iops=-1)), "the IOPS limit cannot be negative (-1)"),
    (QosPolicy("p", guarantees=QosRates(throughput_mbps=-2.5)), "the throughput guarantee cannot be negative (-2.5)"),
    (QosPolicy("p", limits=QosRates(iops=100), guarantees=QosRates(iops=200)),
     "the IOPS guarantee (200) cannot exceed the IOPS limit (100)"),
    (QosPolicy("p", limits=QosRates(iops=100), burst=Burst(True, 3, 0.5, 1)),
     "the burst IOPS multiplier must be at least 1 (1 means no burst), not 0.5"),
    (QosPolicy("p", limits=QosRates(iops=100), burst=Burst(True, 0, 2, 1)),
     "a burst needs a duration above zero (--burst-duration)"),
    (QosPolicy("p", burst=Burst(True, 3, 2, 1)), "a burst needs a limit to exceed"),
    (QosPolicy("p", limits=QosRates(iops=math.nan)), "the IOPS limit must be a number, not nan"),
    (QosPolicy("Bad_Name"), "invalid QoS policy name 'Bad_Name'"),
])
def test_bad_policies_are_refused_with_one_sentence(policy: QosPolicy, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        policy.validate()
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_policy_round_trips_through_json() -> None:
    policy = QosPolicy("gold", QosRates(500, 20), QosRates(100, 5), Burst(True, 30, 2, 1.5), 7).validate()
    assert QosPolicy.from_json(policy.to_json()) == policy


def test_throttle_tells_on_wait_of_each_wait_and_only_of_waits() -> None:
    """The worker hands in the Prometheus counter this way (qos does not import metrics)."""
    told: list[float] = []

    async def main() -> None:
        throttle = Throttle(WorkerRates(iops=100), clock=trio.current_time, on_wait=told.append)
        for _ in range(12):
            await throttle.admit(4096)
        assert sum(told) == pytest.approx(throttle.throttled_s, abs=1e-9)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(told) == 2 and all(t > 0 for t in told)
