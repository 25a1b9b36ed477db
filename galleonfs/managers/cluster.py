"""``ClusterManager``: cluster mode as the node's services see it (status, cordon, drain,
placement of new volumes). Without ``--cluster`` it exists too, disabled: every call but
``create_volume`` with one replica answers that this node is not in cluster mode.

``create_volume`` in cluster mode: place first (a refusal changes nothing), create the
volume here (this node is its primary and, until replication exists, the only node with
its data), then record the placement in etcd with a create-if-absent transaction; if that
fails, the local volume is deleted again. Outside cluster mode a replica count above 1 is
refused, as before.

Every etcd request runs in a worker thread (``trio.to_thread``): the trio thread never
waits on the network.

What it must not do: pretend replicas exist. The placement says which nodes are to hold
copies; the note returned with it says that only the primary holds data today.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .. import names
from ..cluster import epochs, keys
from ..cluster import limits as cluster_limits
from ..cluster.etcd import Compare, Put
from ..cluster.membership import ClusterConfig, Membership
from ..cluster.model import Node, NodeState
from ..cluster.peers import Peers, Reach
from ..cluster.placement import place
from ..errors import AlreadyExists, FailedPrecondition, GalleonError, InvalidArgument, NotFound
from . import tenancy
from .model import AccessMode, Volume, VolumeType
from .primaries import Primaries
from .volumes import VolumeManager

log = logging.getLogger("galleonfs.managers.cluster")

NOT_BUILT = ("only the primary holds the data: replication is not built yet, so the other "
             "nodes are planned, not copies")


@dataclass(frozen=True)
class ClusterView:
    etcd_url: str
    this_node: str
    nodes: list[Node]
    problem: str
    reach: dict[str, Reach]          # node name -> whether this node reached it over mTLS


@dataclass(frozen=True)
class PlacementView:
    volume: str
    volume_id: str
    replicas: int
    nodes: list[str]
    primary: str
    epoch: int
    missing: int
    note: str
    lease_holder: str = ""      # the node holding the primary lease now ("": none)


class ClusterManager:
    def __init__(self, volumes: VolumeManager, config: ClusterConfig | None,
                 capacity: Callable[[], tuple[int, int]]) -> None:
        self.volumes = volumes
        self.config = config
        self.membership = Membership(config, capacity) if config else None
        self.peers: Peers | None = None          # the peer channel, set by the daemon once it listens
        if config is not None:      # read-write mounts take the volume's primary lease
            self.primaries: Primaries | None = Primaries(config.etcd_url, config.node_name,
                                                         volumes.supervisor)
            volumes.primary = self.primaries
        else:
            self.primaries = None

    @property
    def enabled(self) -> bool:
        return self.membership is not None

    def _member(self) -> Membership:
        if self.membership is None:
            raise FailedPrecondition(
                subject="this node", state="is not in cluster mode",
                remedy="start galleond with --cluster etcd=URL --node-name NAME --peer-listen HOST:PORT")
        return self.membership

    # --- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Join at start: an unreachable etcd stops the start with one line."""
        if self.membership is not None:
            await trio.to_thread.run_sync(self.membership.register)

    async def run(self) -> None:
        if self.membership is not None:
            async with trio.open_nursery() as nursery:
                if self.primaries is not None:
                    nursery.start_soon(self.primaries.run)
                await self.membership.run()

    async def stop(self) -> None:
        if self.membership is not None:
            await trio.to_thread.run_sync(self.membership.stop)

    # --- members ---------------------------------------------------------------------------------
    async def status(self) -> ClusterView:
        member = self._member()
        nodes = await trio.to_thread.run_sync(member.nodes)
        # Every node is pinged over the peer channel, in parallel, each within
        # limits.peer_ping_timeout_s: a status answers within about that, however many are down.
        reach = await self.peers.reach(nodes) if self.peers is not None else {}
        return ClusterView(member.etcd.url, member.config.node_name, nodes, member.problem, reach)

    async def schedule(self, node: str, state: NodeState) -> Node:
        member = self._member()
        result = await trio.to_thread.run_sync(member.set_schedule, node, state)
        log.info("node %s is now %s", node, result.state.value)
        return result

    # --- volumes ---------------------------------------------------------------------------------
    async def create_volume(self, name: str, size: int, *, replicas: int, allow_degraded: bool,
                            storage_class: str = "", access_modes: list[AccessMode] | None = None,
                            type: VolumeType = VolumeType.PERSISTENT,
                            labels: dict[str, str] | None = None) -> Volume:
        replicas = replicas or 1
        if not 1 <= replicas <= cluster_limits.replicas_max:
            raise InvalidArgument(what="replica count", value=str(replicas),
                                  expected=f"use a whole number from 1 to {cluster_limits.replicas_max}")

        async def create() -> Volume:
            return await self.volumes.create(name, size, storage_class=storage_class,
                                             access_modes=access_modes, type=type, labels=labels)

        if self.membership is None:
            if replicas > 1:
                raise FailedPrecondition(
                    subject=f"{replicas} replicas", state="need cluster mode, and this node runs alone",
                    remedy="create the volume with one replica, or start galleond with "
                           "--cluster etcd=URL on every node")
            return await create()
        member = self.membership
        key = keys.volume(name, "placement")

        def plan() -> Any:
            if member.etcd.get(key) is not None:
                raise AlreadyExists(what="volume", name=f"{name!r} (in the cluster: another node has it)")
            return place(member.nodes(), replicas, size, rng=random.Random(),
                         pinned=member.config.node_name, allow_degraded=allow_degraded)

        placement = await trio.to_thread.run_sync(plan)
        volume = await create()
        record = {"id": volume.id, "size_bytes": size, "replicas": replicas,
                  "nodes": list(placement.nodes), "primary": placement.nodes[0],
                  "missing": placement.missing, "created_ns": time.time_ns()}
        try:
            won = await trio.to_thread.run_sync(
                lambda: member.etcd.txn([Compare.absent(key)], [Put(key, record)]))
            if not won:
                raise AlreadyExists(what="volume", name=f"{name!r} (in the cluster: another node "
                                                        f"created it at the same time)")
        except GalleonError:
            await self.volumes.delete(name, force=True)
            raise
        log.info("volume %s placed on %s%s", name, ", ".join(placement.nodes),
                 f" ({placement.missing} missing: degraded)" if placement.degraded else "")
        return volume

    async def forget_volume(self, name: str) -> None:
        """After a delete: drop the volume's placement and epoch from etcd. The volume is
        gone already, so an etcd failure here is logged, not answered: its stale placement
        then keeps the name taken in the cluster until deleted by hand (the log says how)."""
        if self.membership is None:
            return
        etcd = self.membership.etcd

        def forget() -> None:
            for leaf in ("placement", "epoch", "primary"):
                etcd.delete(keys.volume(name, leaf))

        try:
            await trio.to_thread.run_sync(forget)
        except GalleonError as exc:
            log.error("volume %s is deleted, but its placement stays in etcd (%s); remove it with "
                      "etcdctl del --prefix %s", name, exc, keys.VOLUMES + name + "/")

    async def placement(self, name: str) -> PlacementView:
        """Any node answers for any volume; a tenant-bound caller only for its volumes here
        (another node's volume carries no tenant this node could check)."""
        member = self._member()
        try:
            name = self.volumes.get(name).name        # tenancy: another tenant's volume is absent
            local = True
        except NotFound:
            if tenancy.current():
                raise
            names.check(name, names.VOLUME)
            local = False
        kv, epoch, holder = await trio.to_thread.run_sync(
            lambda: (member.etcd.get(keys.volume(name, "placement")),
                     epochs.current_epoch(member.etcd, name), epochs.primary_of(member.etcd, name)))
        if kv is None and not local:
            raise NotFound(f"volume {name!r} does not exist (see `galleonctl volume list`)")
        if kv is None:
            raise FailedPrecondition(subject=f"volume {name}",
                                     state="has no placement in the cluster (it was created before "
                                           "this node joined, or is a clone)",
                                     remedy="it lives on this node only")
        v = kv.value
        nodes = [str(n) for n in v.get("nodes", [])]
        return PlacementView(name, str(v.get("id", "")), int(v.get("replicas", 1)), nodes,
                             str(v.get("primary", "")), epoch, int(v.get("missing", 0)),
                             NOT_BUILT if len(nodes) > 1 else "", holder[0] if holder else "")
