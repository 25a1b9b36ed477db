"""Splitting a node's budget (IOPS or bytes/s) among the volumes that compete for it.

The daemon runs ``allocate`` once a tick for each resource and hands each mount worker the
result as its effective limit. The rule, in order:

1. **Floors first.** Each volume gets its guarantee (capped by its own limit). If the
   guarantees add up to more than the budget (the operator oversubscribed the node), they
   shrink in proportion. A floor is reserved even while its volume is idle, so a volume
   that wakes up has its guarantee at once, not one tick later.
2. **The rest by demand, max-min fair.** What is left is shared equally among volumes
   that want more than their floor; one that wants less than an equal share gets what it
   wants and the difference goes to the others (water-filling). A volume *wants* what it
   used in the last tick, or its own limit (unbounded if none) if a request of it had to
   wait: a throttled volume cannot show its true demand, so it is assumed to want more.
3. **Leftover to everyone.** Budget nobody wanted is shared the same way among all
   volumes up to their own limits, so an idle volume has room to speed up before the
   next tick notices.

No volume gets less than ``minimum`` (a volume without a guarantee on a full node is slowed
down, never stopped), nor more than its own limit.

What it must not do: I/O or clocks; it is a pure function of its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass(frozen=True)
class Share:
    """One volume's claim on one resource. ``cap`` and ``demand`` may be ``math.inf``."""

    floor: float = 0.0           # its guarantee (0: none)
    cap: float = math.inf        # its own limit (inf: none)
    demand: float = math.inf     # what it wants now (see the module docstring)


def allocate(budget: float, shares: list[Share], minimum: float = 0.0) -> list[float]:
    """Each volume's effective limit, in the order of ``shares``; they sum to at most ``budget``
    (plus the ``minimum`` of volumes the budget could not feed)."""
    assert budget > 0, budget
    floors = [min(s.floor, s.cap) for s in shares]
    total = sum(floors)
    if total > budget:
        floors = [f * budget / total for f in floors]
    rest = max(0.0, budget - sum(floors))
    wants = [max(0.0, min(s.cap, s.demand) - f) for s, f in zip(shares, floors, strict=True)]
    extra = _waterfill(rest, wants)
    given = [f + e for f, e in zip(floors, extra, strict=True)]
    leftover = rest - sum(extra)
    if leftover > _EPSILON:
        room = [max(0.0, s.cap - g) for s, g in zip(shares, given, strict=True)]
        given = [g + e for g, e in zip(given, _waterfill(leftover, room), strict=True)]
    return [min(s.cap, max(minimum, g)) for s, g in zip(shares, given, strict=True)]


def _waterfill(amount: float, wants: list[float]) -> list[float]:
    """Share ``amount`` equally among ``wants``; nobody gets more than they want."""
    gives = [0.0] * len(wants)
    hungry = [i for i, w in enumerate(wants) if w > _EPSILON]
    while hungry and amount > _EPSILON:
        share = amount / len(hungry)
        sated = [i for i in hungry if wants[i] - gives[i] <= share]
        if not sated:
            for i in hungry:
                gives[i] += share
            return gives
        for i in sated:
            amount -= wants[i] - gives[i]
            gives[i] = wants[i]
        hungry = [i for i in hungry if i not in sated]
    return gives
