"""QoS policies as the original GalleonFS had them: limits, guarantees, bursts.

A policy is named and assigned to volumes (the node catalog keeps both). Units:
``iops`` counts FUSE read and write requests per second; ``throughput_mbps`` is MB/s of
read plus written bytes, with MB = 10^6 bytes (what fio and dd print as "MB/s"). Zero
means "none": no limit, or no guarantee.

What it must not do: I/O, or know where policies are stored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import limits, names
from ..errors import InvalidArgument

MB = 1_000_000


@dataclass
class QosRates:
    """A pair of rates; 0 means "none" (no limit, or no guarantee)."""

    iops: float = 0.0
    throughput_mbps: float = 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.throughput_mbps * MB


@dataclass
class Burst:
    """Up to ``duration_s`` at ``multiplier x limit`` (see ``bucket`` for how credit refills)."""

    enabled: bool = False
    duration_s: float = 0.0
    iops_multiplier: float = 1.0
    throughput_multiplier: float = 1.0


@dataclass
class QosPolicy:
    name: str
    limits: QosRates = field(default_factory=QosRates)
    guarantees: QosRates = field(default_factory=QosRates)
    burst: Burst = field(default_factory=Burst)
    created_ns: int = 0

    def validate(self) -> QosPolicy:
        names.check(self.name, names.QOS_POLICY)
        for what, rates in (("limit", self.limits), ("guarantee", self.guarantees)):
            _number(f"the IOPS {what}", rates.iops, limits.qos_iops_max)
            _number(f"the throughput {what}", rates.throughput_mbps, limits.qos_throughput_mbps_max)
        for what, low, high in (("IOPS", self.guarantees.iops, self.limits.iops),
                                ("throughput", self.guarantees.throughput_mbps, self.limits.throughput_mbps)):
            if high and low > high:
                raise InvalidArgument(f"the {what} guarantee ({low:g}) cannot exceed the {what} limit ({high:g})")
        b = self.burst
        _number("the burst duration", b.duration_s, limits.qos_burst_duration_max_s)
        for what, value in (("burst IOPS multiplier", b.iops_multiplier),
                            ("burst throughput multiplier", b.throughput_multiplier)):
            _number(f"the {what}", value, limits.qos_burst_multiplier_max)
            if value < 1:
                raise InvalidArgument(f"the {what} must be at least 1 (1 means no burst), not {value:g}")
        if b.enabled:
            if b.duration_s <= 0:
                raise InvalidArgument("a burst needs a duration above zero (--burst-duration)")
            if not (self.limits.iops and b.iops_multiplier > 1) and not (
                    self.limits.throughput_mbps and b.throughput_multiplier > 1):
                raise InvalidArgument("a burst needs a limit to exceed and a multiplier above 1 for it "
                                      "(e.g. --iops-limit 500 --burst-iops-multiplier 2)")
        return self

    @property
    def limited(self) -> bool:
        return bool(self.limits.iops or self.limits.throughput_mbps)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QosPolicy:
        return cls(name=data["name"], limits=QosRates(**data["limits"]),
                   guarantees=QosRates(**data["guarantees"]), burst=Burst(**data["burst"]),
                   created_ns=int(data.get("created_ns", 0)))


def _number(what: str, value: float, high: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value):
        raise InvalidArgument(f"{what} must be a number, not {value!r}")
    if value < 0:
        raise InvalidArgument(f"{what} cannot be negative ({value:g})")
    if value > high:
        raise InvalidArgument(f"{what} ({value:g}) is above the maximum of {high:g}")


@dataclass(frozen=True)
class WorkerRates:
    """What the daemon hands a mount worker: the rates to enforce now (0: unlimited) and
    the burst allowed on top of them. JSON on the control socket."""

    iops: float = 0.0
    bytes_per_s: float = 0.0
    burst_s: float = 0.0
    burst_iops_multiplier: float = 1.0
    burst_bytes_multiplier: float = 1.0

    @property
    def unlimited(self) -> bool:
        return not self.iops and not self.bytes_per_s

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerRates:
        rates = cls(**{k: float(v) for k, v in data.items()})
        for key, value in asdict(rates).items():
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"bad QoS rate {key}={value!r}")
        return rates
