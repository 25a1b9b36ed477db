"""Placement (galleonfs/cluster/placement.py): properties that hold for any cluster shape.

Pure function, no etcd: hypothesis draws clusters of nodes in zones and racks, in every
state, with any free space, and checks the rules a user relies on.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galleonfs.cluster.model import Node, NodeState
from galleonfs.cluster.placement import place
from galleonfs.errors import FailedPrecondition, InvalidArgument

GiB = 1 << 30


@st.composite
def clusters(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(min_value=0, max_value=12))
    zones = draw(st.integers(min_value=1, max_value=4))
    return [Node(name=f"n{i}", zone=f"z{draw(st.integers(0, zones - 1))}",
                 rack=f"r{draw(st.integers(0, 2))}", address=f"127.0.0.1:{7000 + i}",
                 capacity_bytes=100 * GiB, free_bytes=draw(st.integers(0, 100)) * GiB,
                 state=draw(st.sampled_from(list(NodeState))))
            for i in range(count)]


def _eligible(nodes: list[Node], size: int) -> list[Node]:
    return [n for n in nodes if n.state is NodeState.READY and n.free_bytes >= size]


@settings(max_examples=400, deadline=None)
@given(nodes=clusters(), replicas=st.integers(1, 5), size_gib=st.integers(1, 50),
       seed=st.integers(0, 2**32), degraded=st.booleans())
def test_placement_rules(nodes: list[Node], replicas: int, size_gib: int, seed: int,
                         degraded: bool) -> None:
    size = size_gib * GiB
    eligible = _eligible(nodes, size)
    if len(eligible) < replicas and not degraded:
        with pytest.raises(InvalidArgument, match=f"{replicas} replicas need {replicas} ready nodes"):
            place(nodes, replicas, size, rng=random.Random(seed))
        return
    p = place(nodes, replicas, size, rng=random.Random(seed), allow_degraded=degraded)
    by_name = {n.name: n for n in nodes}
    chosen = [by_name[name] for name in p.nodes]
    assert len(set(p.nodes)) == len(p.nodes), "two replicas on one node"
    assert all(n in eligible for n in chosen), "a replica on a node that is not ready or has no room"
    assert len(chosen) == min(replicas, len(eligible))
    assert p.missing == replicas - len(chosen) and p.degraded == (p.missing > 0)
    # As many zones as the eligible nodes offer, up to one per replica.
    assert len({n.zone for n in chosen}) == min(len(chosen), len({n.zone for n in eligible}))
    # Same seed, same answer: a placement can be reproduced.
    again = place(nodes, replicas, size, rng=random.Random(seed), allow_degraded=degraded)
    assert again == p


@settings(max_examples=200, deadline=None)
@given(nodes=clusters(), seed=st.integers(0, 2**32))
def test_single_replica_never_takes_the_emptiest_choice_alone(nodes: list[Node], seed: int) -> None:
    """Power-of-two-choices: of two sampled nodes the one with more free space wins, so the
    node with strictly the least free space is never picked while another one qualifies."""
    eligible = _eligible(nodes, GiB)
    if len(eligible) < 2:
        return
    least = min(n.free_bytes for n in eligible)
    if sum(n.free_bytes == least for n in eligible) > 1:
        return
    p = place(nodes, 1, GiB, rng=random.Random(seed))
    assert {n.name: n for n in nodes}[p.nodes[0]].free_bytes > least


@settings(max_examples=200, deadline=None)
@given(nodes=clusters(), replicas=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_pinned_node_is_the_primary_or_a_clear_refusal(nodes: list[Node], replicas: int, seed: int) -> None:
    if not nodes:
        return
    pinned = nodes[seed % len(nodes)]
    if pinned not in _eligible(nodes, GiB):
        with pytest.raises(FailedPrecondition, match=f"node {pinned.name} cannot hold the volume's primary"):
            place(nodes, replicas, GiB, rng=random.Random(seed), pinned=pinned.name, allow_degraded=True)
        return
    p = place(nodes, replicas, GiB, rng=random.Random(seed), pinned=pinned.name, allow_degraded=True)
    assert p.nodes[0] == pinned.name


def test_fill_stays_even_across_many_volumes() -> None:
    """1,000 volumes of 1 GiB, 3 replicas, over 12 equal nodes in 3 zones: no node ends more
    than 25 % above the mean (best-of-two keeps the spread tight; one random choice does not)."""
    nodes = [Node(f"n{i}", f"z{i % 3}", "r0", "", 2000 * GiB, 2000 * GiB, NodeState.READY)
             for i in range(12)]
    zone_of = {n.name: n.zone for n in nodes}
    rng = random.Random(7)
    used = dict.fromkeys((n.name for n in nodes), 0)
    for _ in range(1000):
        current = [Node(n.name, n.zone, n.rack, n.address, n.capacity_bytes,
                        n.capacity_bytes - used[n.name] * GiB, n.state) for n in nodes]
        p = place(current, 3, GiB, rng=rng)
        assert len({zone_of[name] for name in p.nodes}) == 3   # one replica per zone
        for name in p.nodes:
            used[name] += 1
    mean = sum(used.values()) / len(used)
    assert max(used.values()) <= 1.25 * mean, used


def test_refusals_are_one_sentence() -> None:
    with pytest.raises(InvalidArgument, match="invalid replica count 0: use a whole number from 1 to 5"):
        place([], 0, GiB, rng=random.Random(0))
    down = Node("n1", "a", "", "", GiB, GiB, NodeState.DOWN)
    with pytest.raises(FailedPrecondition, match="node n1 cannot hold the volume's primary: it is down"):
        place([down], 1, 1, rng=random.Random(0), pinned="n1")
    with pytest.raises(FailedPrecondition, match=r"node n9 cannot hold .* not a member of the cluster"):
        place([down], 1, 1, rng=random.Random(0), pinned="n9")
