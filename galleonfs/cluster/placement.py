"""Where a volume's replicas go: a pure function of the nodes, their zones and free space.

Rules, in order of strength:

1. every replica on a distinct node, and only on a READY node with room for the volume
   (never a cordoned, draining or down one);
2. as many distinct zones as there are eligible zones (then as many distinct racks);
3. by free capacity: among the candidates that spread best, sample
   ``limits.placement_choices`` at random and take the one with the most free space
   (power-of-two-choices: even fill without herding every new volume onto one node).

The first replica is the primary; ``pinned`` makes a given node the primary (the node that
creates the volume holds its data today). Not enough eligible nodes: ``InvalidArgument``
naming how many there are, unless ``allow_degraded``, which places as many as possible and
says how many are missing; never silently fewer copies.

What it must not do: read etcd or the clock (the caller passes the nodes and the random
source, so a seed reproduces a placement).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import FailedPrecondition, InvalidArgument
from . import limits
from .model import Node, NodeState


@dataclass(frozen=True)
class Placement:
    nodes: tuple[str, ...]         # node names; the first is the primary
    wanted: int                    # replicas asked for

    @property
    def missing(self) -> int:
        return self.wanted - len(self.nodes)

    @property
    def degraded(self) -> bool:
        return self.missing > 0


def place(nodes: Sequence[Node], replicas: int, size_bytes: int, *, rng: random.Random,
          pinned: str | None = None, allow_degraded: bool = False) -> Placement:
    if not 1 <= replicas <= limits.replicas_max:
        raise InvalidArgument(what="replica count", value=str(replicas),
                              expected=f"use a whole number from 1 to {limits.replicas_max}")
    eligible = [n for n in nodes if n.eligible and n.free_bytes >= size_bytes]
    chosen: list[Node] = []
    if pinned is not None:
        first = next((n for n in nodes if n.name == pinned), None)
        if first is None or first not in eligible:
            raise FailedPrecondition(
                f"node {pinned} cannot hold the volume's primary: it is "
                f"{_why_not(first, size_bytes)}; create the volume on a ready node with room")
        chosen.append(first)
    while len(chosen) < replicas:
        best = _best_spread([n for n in eligible if n not in chosen], chosen)
        if not best:
            break
        sample = rng.sample(best, min(limits.placement_choices, len(best)))
        chosen.append(max(sample, key=lambda n: (n.free_bytes, n.name)))
    if len(chosen) < replicas and not allow_degraded:
        raise InvalidArgument(
            f"{replicas} replicas need {replicas} ready nodes with {size_bytes} bytes free, and "
            f"the cluster has {len(eligible)}: add or uncordon nodes, ask for fewer replicas, "
            f"or create it degraded (--allow-degraded)")
    return Placement(tuple(n.name for n in chosen), replicas)


def _best_spread(candidates: list[Node], chosen: list[Node]) -> list[Node]:
    """The candidates in a zone (then a rack) that no chosen replica uses yet, if any."""
    zones = {n.zone for n in chosen}
    racks = {(n.zone, n.rack) for n in chosen}

    def spread(n: Node) -> tuple[int, int]:
        return (n.zone not in zones, (n.zone, n.rack) not in racks)

    if not candidates:
        return []
    top = max(spread(n) for n in candidates)
    return [n for n in candidates if spread(n) == top]


def _why_not(node: Node | None, size_bytes: int) -> str:
    if node is None:
        return "not a member of the cluster (not registered in etcd)"
    if node.state is not NodeState.READY:
        return str(node.state.value)
    return f"short of space ({node.free_bytes} bytes free, the volume needs {size_bytes})"
