"""ClusterService: translate, call ``ClusterManager`` on the trio thread, translate back."""

from __future__ import annotations

from typing import Any

from ..cluster.model import Node, NodeState
from ..cluster.peers import Reach
from ..managers.cluster import ClusterManager
from ..v1 import cluster_pb2, cluster_pb2_grpc
from .bridge import TrioBridge


def node_to_pb(n: Node, reach: Reach | None = None) -> cluster_pb2.ClusterNode:
    pb = cluster_pb2.ClusterNode(name=n.name, zone=n.zone, rack=n.rack, address=n.address,
                                 capacity_bytes=n.capacity_bytes, free_bytes=n.free_bytes,
                                 state=n.state.value)
    if reach is not None:
        pb.peer_reachable, pb.peer_problem, pb.peer_rtt_ms = reach.reachable, reach.problem, reach.rtt_ms
    return pb


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, bridge: TrioBridge, cluster: ClusterManager) -> None:
        self.bridge = bridge
        self.cluster = cluster

    def GetStatus(self, request: Any, context: Any) -> Any:
        view = self.bridge.run(self.cluster.status)
        return cluster_pb2.ClusterStatus(etcd_url=view.etcd_url, this_node=view.this_node,
                                         nodes=[node_to_pb(n, view.reach.get(n.name)) for n in view.nodes], problem=view.problem)

    def Cordon(self, request: Any, context: Any) -> Any:
        return node_to_pb(self.bridge.run(self.cluster.schedule, request.node, NodeState.CORDONED))

    def Uncordon(self, request: Any, context: Any) -> Any:
        return node_to_pb(self.bridge.run(self.cluster.schedule, request.node, NodeState.READY))

    def Drain(self, request: Any, context: Any) -> Any:
        return node_to_pb(self.bridge.run(self.cluster.schedule, request.node, NodeState.DRAINING))

    def GetPlacement(self, request: Any, context: Any) -> Any:
        p = self.bridge.run(self.cluster.placement, request.volume)
        return cluster_pb2.VolumePlacement(volume=p.volume, volume_id=p.volume_id, replicas=p.replicas,
                                           nodes=p.nodes, primary=p.primary, epoch=p.epoch,
                                           missing=p.missing, note=p.note, lease_holder=p.lease_holder)
