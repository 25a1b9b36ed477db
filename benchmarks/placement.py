"""Placement (galleonfs/cluster/placement.py): its cost per volume and the fill it leaves.

    python -m benchmarks.placement [--nodes 100,1000] [--zones 3,10] [--fill 0.6] [--seed 1]

Pure CPU, no etcd, no daemon: the real ``place`` function over synthetic clusters of equal
nodes (1 TiB each) spread evenly over the zones, placing volumes of 1-64 GiB (uniform) at
3 replicas until the cluster is ``--fill`` full on average (60 %: ~6 volumes per node), updating each node's free space as it goes, as the daemon does by
re-reading etcd. Reported per cluster shape: microseconds per placement (median of the
run), the fill spread (max / mean bytes per node, and min / mean) for best-of-two (what
GalleonFS does) against one random choice (``placement_choices = 1``), and whether every
volume got 3 distinct zones. The 1-minute load average is printed with the results: other
work on the machine shows up in the microseconds, not in the spread.

Not covered here (issue 12's simulation, later): failing a node, rack or zone and
scheduling the rebuild (there is no rebuild scheduler yet), and etcd's load.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from galleonfs.cluster import limits, placement
from galleonfs.cluster.model import Node, NodeState

GiB = 1 << 30
TiB = 1 << 40


def run(nodes_n: int, zones_n: int, volumes: int, choices: int, seed: int) -> dict[str, float]:
    limits.placement_choices = choices            # the knob under test; restored by the caller
    rng = random.Random(seed)
    nodes = [Node(f"n{i}", f"z{i % zones_n}", f"r{i // zones_n % 8}", "", TiB, TiB, NodeState.READY)
             for i in range(nodes_n)]
    used = [0] * nodes_n
    index = {n.name: i for i, n in enumerate(nodes)}
    times: list[float] = []
    spread_ok = 0
    for _ in range(volumes):
        size = rng.randint(1, 64) * GiB
        t = time.perf_counter()
        p = placement.place(nodes, 3, size, rng=rng)
        times.append(time.perf_counter() - t)
        spread_ok += len({nodes[index[name]].zone for name in p.nodes}) == min(3, zones_n)
        for name in p.nodes:
            i = index[name]
            used[i] += size
            n = nodes[i]
            nodes[i] = Node(n.name, n.zone, n.rack, n.address, n.capacity_bytes, TiB - used[i], n.state)
    mean = statistics.fmean(used)
    return {"us_per_placement": statistics.median(times) * 1e6, "max_over_mean": max(used) / mean,
            "min_over_mean": min(used) / mean, "zones_ok": spread_ok / volumes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="100,1000")
    parser.add_argument("--zones", default="3,10")
    parser.add_argument("--fill", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}; volumes of 1-64 GiB x 3 replicas "
          f"until {args.fill:.0%} full")
    print("| nodes | zones | choices | us / placement | max / mean | min / mean | 3 zones |")
    print("|---|---|---|---|---|---|---|")
    saved = limits.placement_choices
    try:
        for nodes_n in (int(x) for x in args.nodes.split(",")):
            for zones_n in (int(x) for x in args.zones.split(",")):
                for choices in (2, 1):
                    volumes = int(args.fill * nodes_n * TiB / (32.5 * GiB * 3))
                    r = run(nodes_n, zones_n, volumes, choices, args.seed)
                    print(f"| {nodes_n} | {zones_n} | {choices} | {r['us_per_placement']:.0f} | "
                          f"{r['max_over_mean']:.2f} | {r['min_over_mean']:.2f} | {r['zones_ok']:.0%} |",
                          flush=True)
    finally:
        limits.placement_choices = saved
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
