"""This node's membership of the cluster, and what every member looks like from etcd.

``Membership.register`` writes ``nodes/<name>/info`` (zone, rack, peer address, capacity)
and puts ``nodes/<name>/alive`` on a lease of ``limits.node_lease_ttl_s`` (6 s); ``run``
renews the lease every third of that and rewrites ``info`` when the free space moved by
more than 1 %. When etcd lets the lease expire (etcd was down or this node was stopped
longer than 6 s), ``run`` grants a new one and puts ``alive`` again: the node shows as
ready once more. ``stop`` revokes the lease, so a clean stop shows the node down at once;
a killed node shows down when etcd expires its lease, within 6 s.

``nodes`` reads every member in one range request and derives each one's state: DOWN when
no ``alive`` key, else the operator's ``schedule`` (CORDONED, DRAINING), else READY.

What it must not do: block the trio thread (every etcd call is a thread hop), or stop the
daemon when etcd goes away (it logs once per outage, keeps trying, and reports it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .. import names
from ..errors import AlreadyExists, GalleonError, NotFound
from . import keys, limits
from .etcd import Compare, Etcd, Put
from .model import NODE, RACK, ZONE, Node, NodeState

log = logging.getLogger("galleonfs.cluster.membership")


@dataclass(frozen=True)
class ClusterConfig:
    etcd_url: str
    node_name: str
    peer_address: str              # host:port other nodes will dial (replication, later)
    zone: str = ""
    rack: str = ""
    lease_ttl_s: int = limits.node_lease_ttl_s

    def __post_init__(self) -> None:
        names.check(self.node_name, NODE)
        if self.zone:
            names.check(self.zone, ZONE)
        if self.rack:
            names.check(self.rack, RACK)


Capacity = Callable[[], tuple[int, int]]      # (capacity_bytes, free_bytes) of this node


class Membership:
    def __init__(self, config: ClusterConfig, capacity: Capacity) -> None:
        self.config = config
        self.etcd = Etcd(config.etcd_url)
        self._keepalive_etcd = Etcd(config.etcd_url)     # its own session: never queued behind reads
        self._capacity = capacity
        self.lease = 0
        self._info: dict[str, Any] = {}
        self.problem = ""                                # why this node is not registered right now

    # --- this node ---------------------------------------------------------------------------------
    def register(self) -> None:
        """Claim the name (put alive, if no live node holds it), then write info (blocking:
        call from a thread).

        Two live nodes under one name would overwrite each other's record and share one
        set of placements, so the alive key is created only if absent. A node restarted
        after ``kill -9`` finds its own old key until etcd expires it: the claim is retried
        for one lease TTL (+1 s) before the name is declared taken by another node."""
        etcd, name = self._keepalive_etcd, self.config.node_name
        alive = keys.node(name, "alive")
        lease = etcd.grant(self.config.lease_ttl_s)
        deadline = time.monotonic() + self.config.lease_ttl_s + 1
        try:
            while not etcd.txn([Compare.absent(alive)],
                               [Put(alive, {"since_ns": time.time_ns(), "pid": os.getpid()}, lease=lease)],
                               what=f"put {alive}"):
                if time.monotonic() > deadline:
                    raise AlreadyExists(
                        f"node name {name} is in use by another live node (its lease keeps being "
                        f"renewed); give this node its own --node-name, or stop the other one")
                time.sleep(0.5)
            self._write_info()
        except BaseException:
            with contextlib.suppress(GalleonError):
                etcd.revoke(lease)
            raise
        self.lease = lease
        self.problem = ""
        log.info("node %s joined the cluster at %s (zone %s, lease %d s)", self.config.node_name,
                 self.etcd.url, self.config.zone or "-", self.config.lease_ttl_s)

    def _write_info(self) -> None:
        capacity, free = self._capacity()
        info = {"zone": self.config.zone, "rack": self.config.rack,
                "address": self.config.peer_address, "capacity_bytes": capacity,
                "free_bytes": free, "pid": os.getpid()}
        self.etcd.put(keys.node(self.config.node_name, "info"), info)
        self._info = info

    def _renew(self) -> None:
        if self.lease == 0 or self._keepalive_etcd.keepalive(self.lease) <= 0:
            log.info("node %s's lease was gone: joining again", self.config.node_name)
            self.register()
            return
        capacity, free = self._capacity()
        if abs(free - int(self._info.get("free_bytes", 0))) > capacity // 100:
            self._write_info()

    async def run(self) -> None:
        """Keep the lease alive until cancelled; survive etcd outages."""
        while True:
            await trio.sleep(self.config.lease_ttl_s / 3)
            try:
                await trio.to_thread.run_sync(self._renew)
            except GalleonError as exc:
                if not self.problem:              # once per outage
                    log.error("cluster membership: %s (this node shows down until etcd answers; "
                              "retrying every %.0f s)", exc, self.config.lease_ttl_s / 3)
                self.problem = str(exc)
                continue
            if self.problem:
                log.info("cluster membership: etcd answers again")
                self.problem = ""

    def stop(self) -> None:
        """Leave cleanly: revoking the lease shows this node down at once."""
        if self.lease:
            try:
                self._keepalive_etcd.revoke(self.lease)
            except GalleonError as exc:
                log.info("could not revoke the node lease (it expires within %d s): %s",
                         self.config.lease_ttl_s, exc)
            self.lease = 0

    # --- every node --------------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        by_name: dict[str, dict[str, dict[str, Any]]] = {}
        for kv in self.etcd.get_prefix(keys.NODES):
            name, leaf = keys.split(kv.key, keys.NODES)
            if name:
                by_name.setdefault(name, {})[leaf] = kv.value
        return [_node(name, leaves) for name, leaves in sorted(by_name.items()) if "info" in leaves]

    def node(self, name: str) -> Node:
        names.check(name, NODE)
        found = next((n for n in self.nodes() if n.name == name), None)
        if found is None:
            raise NotFound(what="node", name=name + " (see `galleonctl cluster status`)")
        return found

    def set_schedule(self, name: str, state: NodeState) -> Node:
        """Cordon, drain or uncordon (READY) a member."""
        assert state in (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING), state
        self.node(name)
        key = keys.node(name, "schedule")
        if state is NodeState.READY:
            self.etcd.delete(key)
        else:
            self.etcd.put(key, {"state": state.value, "at_ns": time.time_ns()})
        return self.node(name)


def _node(name: str, leaves: dict[str, dict[str, Any]]) -> Node:
    info = leaves["info"]
    if "alive" not in leaves:
        state = NodeState.DOWN
    else:
        wanted = str(leaves.get("schedule", {}).get("state", "ready"))
        state = NodeState(wanted) if wanted in ("cordoned", "draining") else NodeState.READY
    return Node(name=name, zone=str(info.get("zone", "")), rack=str(info.get("rack", "")),
                address=str(info.get("address", "")),
                capacity_bytes=int(info.get("capacity_bytes", 0)),
                free_bytes=int(info.get("free_bytes", 0)), state=state)
