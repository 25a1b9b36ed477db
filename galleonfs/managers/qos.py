"""``QosManager``: QoS policies, their assignment to volumes, and the node's budget split.

Policies and assignments live in the node catalog (durable before a call is answered), so
an assigned policy survives a daemon restart. Enforcement is in the mount workers; this
manager tells each worker, over its control socket (``volops`` ``SetQos``), the rates to
enforce:

* without a node budget (``qos_node_iops`` and ``qos_node_throughput_mbps`` are 0, the
  default) each volume gets its own policy's limits and burst; guarantees are recorded but
  cannot be enforced, since nothing says what the node can do;
* with a budget, every mounted volume takes part (one without a policy has no floor and no
  limit) and gets ``allocation.allocate``'s share: its floor, plus a fair share of the
  rest by demand, capped by its own limit. A volume squeezed below its own limit does not
  burst: its burst would eat the floors of the others.

A tick (``limits.qos_tick_s``) recomputes the split from each worker's counters and sends
rates that changed, and sends them to a new worker (a mount, a restart) at the latest one
tick after it is up; assigning a policy applies it before the call returns.

Concurrency: runs on the daemon's trio thread; ``_lock`` keeps a tick and an assignment
from interleaving their control calls.
"""

from __future__ import annotations

import builtins
import logging
import math
from dataclasses import dataclass

import trio

from .. import limits
from ..errors import AlreadyExists, Busy, GalleonError, NotFound
from ..meta.catalog import Catalog
from ..qos.allocation import Share, allocate
from ..qos.policy import QosPolicy, WorkerRates
from ..volops.messages import QosState, SetQos
from . import tenancy
from .model import now_ns
from .volumes import VolumeManager

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    """What the daemon last sent a worker and last read from it."""

    pid: int
    rates: WorkerRates | None
    at: float = 0.0
    requests: int = 0
    bytes: int = 0
    throttled_s: float = 0.0
    demand_iops: float = math.inf
    demand_bytes_per_s: float = math.inf


class QosManager:
    def __init__(self, catalog: Catalog, volumes: VolumeManager, *, node_iops: float = 0,
                 node_throughput_mbps: float = 0) -> None:
        self.catalog = catalog
        self.volumes = volumes
        self.node_iops = float(node_iops)
        self.node_bytes_per_s = float(node_throughput_mbps) * 1e6
        self._seen: dict[str, _Seen] = {}
        self._lock = trio.Lock()

    # --- policies ------------------------------------------------------------------------------
    def get(self, name: str) -> QosPolicy:
        data = self.catalog.qos_policy(name)
        if data is None:
            raise NotFound(f"QoS policy {name!r} does not exist (see `galleonctl qos list`)")
        return QosPolicy.from_json(data)

    def list(self) -> list[QosPolicy]:
        return sorted((QosPolicy.from_json(p) for p in self.catalog.qos_policies()), key=lambda p: p.name)

    def volumes_of(self, name: str) -> builtins.list[str]:
        """Names of the volumes that have policy ``name``."""
        out = []
        for volume_id, policy in self.catalog.qos_assignments().items():
            data = self.catalog.volume(volume_id)
            if policy == name and data is not None and tenancy.visible(data):
                out.append(str(data["name"]))
        return sorted(out)

    def create(self, policy: QosPolicy) -> QosPolicy:
        policy.validate()
        if self.catalog.qos_policy(policy.name) is not None:
            raise AlreadyExists(f"QoS policy {policy.name!r} already exists")
        policy.created_ns = now_ns()
        self.catalog.put_qos_policy(policy.to_json())
        log.info("QoS policy %s created", policy.name)
        return policy

    async def update(self, policy: QosPolicy) -> QosPolicy:
        """New numbers for an existing policy; its volumes enforce them before returning."""
        policy.validate()
        policy.created_ns = self.get(policy.name).created_ns
        self.catalog.put_qos_policy(policy.to_json())
        log.info("QoS policy %s updated", policy.name)
        await self.tick()
        return policy

    def delete(self, name: str) -> None:
        self.get(name)
        users = self.volumes_of(name)
        if users:
            raise Busy(f"QoS policy {name} is assigned to {', '.join(users)}; "
                       f"unassign it first (galleonctl qos unassign VOLUME)")
        self.catalog.delete_qos_policy(name)
        log.info("QoS policy %s deleted", name)

    async def assign(self, policy_name: str, volume_name: str) -> tuple[str, str]:
        """Give a volume a policy ("" takes it away); applied to a mounted volume before
        returning. Returns ``(volume name, previous policy or "")``."""
        volume = self.volumes.get(volume_name)
        if policy_name:
            self.get(policy_name)
        previous = self.catalog.qos_assignments().get(volume.id, "")
        self.catalog.assign_qos(volume.id, policy_name)
        log.info("volume %s: QoS policy %s", volume.name, policy_name or "(none)")
        await self.tick()
        return volume.name, previous

    # --- enforcement ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Send each worker its rates, every tick; runs until cancelled."""
        while True:
            await self.tick()
            await trio.sleep(limits.qos_tick_s)

    async def tick(self) -> None:
        async with self._lock:
            assignments = self.catalog.qos_assignments()
            for vid in [v for v in assignments if self.catalog.volume(v) is None]:
                self.catalog.assign_qos(vid, "")          # the volume was deleted
            policies = {p.name: p for p in self.list()}
            workers = {vid: w.pid for vid, w in self.volumes.supervisor.workers.items()}
            for gone in set(self._seen) - set(workers):
                del self._seen[gone]
            wanted = self._rates({vid: policies.get(assignments.get(vid, "")) for vid in workers})
            for vid, rates in wanted.items():
                seen = self._seen.get(vid)
                if seen is None or seen.pid != workers[vid] or seen.rates != rates or self._budgeted:
                    await self._send(vid, workers[vid], rates)

    @property
    def _budgeted(self) -> bool:
        return bool(self.node_iops or self.node_bytes_per_s)

    def _rates(self, policies: dict[str, QosPolicy | None]) -> dict[str, WorkerRates | None]:
        """What each mounted volume should enforce now (None: nothing)."""
        ids = sorted(policies)
        iops = self._split(self.node_iops, ids, policies, "iops")
        bps = self._split(self.node_bytes_per_s, ids, policies, "bytes")
        out: dict[str, WorkerRates | None] = {}
        for vid in ids:
            policy = policies[vid]
            own_iops = policy.limits.iops if policy else 0.0
            own_bps = policy.limits.bytes_per_s if policy else 0.0
            eff_iops = iops.get(vid, own_iops)
            eff_bps = bps.get(vid, own_bps)
            if not eff_iops and not eff_bps:
                out[vid] = None
                continue
            burst = policy.burst if policy and policy.burst.enabled else None
            out[vid] = WorkerRates(
                iops=eff_iops, bytes_per_s=eff_bps, burst_s=burst.duration_s if burst else 0.0,
                burst_iops_multiplier=burst.iops_multiplier if burst and eff_iops == own_iops else 1.0,
                burst_bytes_multiplier=burst.throughput_multiplier if burst and eff_bps == own_bps else 1.0)
        return out

    def _split(self, budget: float, ids: builtins.list[str], policies: dict[str, QosPolicy | None],
               what: str) -> dict[str, float]:
        """The budget's split for one resource; empty without a budget."""
        if not budget or not ids:
            return {}
        shares: builtins.list[Share] = []
        for vid in ids:
            policy, seen = policies[vid], self._seen.get(vid)
            own = (policy.limits.iops if what == "iops" else policy.limits.bytes_per_s) if policy else 0.0
            floor = (policy.guarantees.iops if what == "iops" else policy.guarantees.bytes_per_s) if policy else 0.0
            demand = math.inf if seen is None else (seen.demand_iops if what == "iops" else seen.demand_bytes_per_s)
            shares.append(Share(floor=floor, cap=own or math.inf, demand=demand))
        minimum = max(limits.qos_iops_min if what == "iops" else limits.qos_bytes_per_s_min,
                      limits.qos_share_min_fraction * budget)
        return dict(zip(ids, allocate(budget, shares, minimum), strict=True))

    async def _send(self, volume_id: str, pid: int, rates: WorkerRates | None) -> None:
        ops = self.volumes.supervisor.ops(volume_id)
        if ops is None:
            return                       # stopped meanwhile
        try:
            reply = await ops.run(SetQos(rates))
        except GalleonError as exc:
            # A worker that is stopping or restarting: the next tick tries again.
            log.debug("volume %s: QoS rates not sent: %s", volume_id, exc)
            return
        self._observe(volume_id, pid, rates, reply)

    def _observe(self, volume_id: str, pid: int, rates: WorkerRates | None, reply: QosState) -> None:
        """Remember what was sent, and the volume's demand since the last reply."""
        now = trio.current_time()
        new = _Seen(pid, rates, now, reply.requests, reply.bytes, reply.throttled_s)
        old = self._seen.get(volume_id)
        if old is not None and old.pid == pid and now > old.at:
            elapsed = now - old.at
            waited = new.throttled_s > old.throttled_s
            new.demand_iops = math.inf if waited else (new.requests - old.requests) / elapsed
            new.demand_bytes_per_s = math.inf if waited else (new.bytes - old.bytes) / elapsed
        self._seen[volume_id] = new

    def effective(self, volume_id: str) -> WorkerRates | None:
        """The rates last sent to the volume's worker (None: none, or not mounted)."""
        seen = self._seen.get(volume_id)
        return seen.rates if seen else None
