"""Primary lease and epoch (galleonfs/cluster/epochs.py) against a real etcd: a CAS race has
one winner, the epoch only grows, an expired lease lets another node in at epoch+1, and a
holder cut off from etcd fences itself before etcd can expire its lease."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import trio

from galleonfs.cluster import epochs
from galleonfs.errors import Busy, FailedPrecondition
from galleonfs.testing.etcd import RunningEtcd


def _race(etcd: RunningEtcd, volume: str) -> dict[str, object]:
    """n1 and n2 call acquire_primary at the same instant; what each got."""
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def contend(node: str) -> None:
        client = etcd.client()
        barrier.wait()
        try:
            results[node] = epochs.acquire_primary(client, volume, node, ttl_s=5)
        except Busy as exc:
            results[node] = exc

    threads = [threading.Thread(target=contend, args=(n,)) for n in ("n1", "n2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def _volume() -> str:
    return f"vol-{uuid.uuid4().hex[:8]}"


def test_two_contenders_one_winner_epoch_plus_one(etcd: RunningEtcd) -> None:
    """Both contenders start their transaction at the same instant, ten rounds: each round
    exactly one wins, the loser's error names the winner, and the epoch goes up by one."""
    volume = _volume()
    for round_ in range(1, 11):
        results = _race(etcd, volume)
        won = [r for r in results.values() if isinstance(r, epochs.PrimaryLease)]
        lost = [r for r in results.values() if isinstance(r, Busy)]
        assert len(won) == 1 and len(lost) == 1, results
        winner = won[0]
        assert winner.epoch == round_
        assert str(lost[0]) in (
            f"volume {volume} has a primary on node {winner.node} (epoch {round_}) while its lease "
            f"lives; unmount it there, or wait up to 5 s if that node is down",
            f"volume {volume}'s primary is changing right now; try again")
        assert epochs.primary_of(etcd.client(), volume) == (winner.node, round_)
        epochs.release(etcd.client(), winner)
        assert epochs.primary_of(etcd.client(), volume) is None
        assert epochs.current_epoch(etcd.client(), volume) == round_      # kept after release


def test_expired_lease_lets_another_node_in_at_a_higher_epoch(etcd: RunningEtcd) -> None:
    e = etcd.client()
    volume = _volume()
    old = epochs.acquire_primary(e, volume, "n1", ttl_s=2, clock_bound_s=0.5)
    with pytest.raises(Busy, match="has a primary on node n1 \\(epoch 1\\)"):
        epochs.acquire_primary(e, volume, "n2", ttl_s=2, clock_bound_s=0.5)
    deadline = time.monotonic() + 10
    while epochs.primary_of(e, volume) is not None:          # n1 stopped renewing
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert old.fenced(), "etcd expired the lease before the holder's own fence deadline"
    new = epochs.acquire_primary(e, volume, "n2", ttl_s=2, clock_bound_s=0.5)
    assert new.epoch == 2
    with pytest.raises(FailedPrecondition, match=f"node n1 lost the primary lease of volume {volume}"):
        epochs.renew(e, old)
    epochs.release(e, new)


@pytest.mark.allow_warnings          # "cannot renew ..." each try, then the fence (ERROR)
def test_holder_cut_off_from_etcd_fences_before_the_lease_can_expire(etcd: RunningEtcd) -> None:
    """etcd paused (SIGSTOP): renewals time out; the holder calls on_fence at TTL - clock
    bound after its last renewal, not later."""
    volume = _volume()
    held = epochs.acquire_primary(etcd.client(), volume, "n1", ttl_s=4, clock_bound_s=1.0)
    fenced_at: list[float] = []
    reasons: list[str] = []

    async def main() -> None:
        client = etcd.client()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: epochs.hold(client, held, lambda r: (
                fenced_at.append(time.monotonic()), reasons.append(r)), interval_s=0.5))
            await trio.sleep(1.2)                # a few renewals succeed
            etcd.pause()

    last_ok = 0.0
    try:
        trio.run(main)
        last_ok = held.renewed_at
    finally:
        etcd.resume()
    assert fenced_at, "never fenced"
    # On time although each renewal waits the full 2 s etcd timeout: in-flight ones are abandoned.
    assert last_ok + 3.0 <= fenced_at[0] <= last_ok + 3.0 + 0.3, (fenced_at[0] - last_ok)
    assert reasons[0].startswith(f"volume {volume}: no primary lease renewal for 3 s (")
    assert reasons[0].endswith("); fenced")


def test_holder_that_renews_is_never_fenced_and_keeps_the_key(etcd: RunningEtcd) -> None:
    """5 s of hold() with TTL 3 and bound 1: without renewals the fence would come at 2 s."""
    volume = _volume()
    held = epochs.acquire_primary(etcd.client(), volume, "n1", ttl_s=3, clock_bound_s=1.0)
    first = held.renewed_at
    fenced: list[str] = []

    async def main() -> None:
        with trio.move_on_after(5):
            await epochs.hold(etcd.client(), held, fenced.append)

    trio.run(main)
    assert fenced == []
    assert held.renewed_at > first + 3 and not held.fenced()
    assert epochs.primary_of(etcd.client(), volume) == ("n1", 1)
    epochs.release(etcd.client(), held)
