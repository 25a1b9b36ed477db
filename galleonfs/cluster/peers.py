"""Talking to the other nodes of the cluster: who is reachable over the peer channel.

The peer channel is gRPC over mutual TLS (``galleonfs.peer.v1.PeerService`` on each node's
``--peer-listen``). DESIGN §5 keeps ``grpc`` in the RPC layer, so this module holds the
transport-free half and ``rpc/peer.py`` the gRPC half:

* ``PeerTransport`` is what a transport offers: blocking calls to one node, each bounded
  by a timeout, each failure one of our errors (``Unavailable``: down, cut off, timed out,
  TLS refused; ``Unauthenticated``: the other side does not take this node's certificate, or
  answered under another name). ``rpc.peer.PeerClient`` is the one implementation: mTLS,
  one channel per node kept open and reused, reconnect backoff bounded.
* ``Peers`` is what the managers use, on the trio thread: it resolves node names to the
  addresses the nodes published in etcd, and runs the blocking calls in worker threads
  (at most ``limits.peer_ping_parallel_max`` at once), so the trio thread never waits on the
  network. ``reach`` pings every node in parallel for ``cluster status``; replication will add
  its stream here, on the same channels.

What it must not do: import grpc, or let one slow node hold up the answer for the others
(every call has its own timeout, and they run side by side).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import trio

from ..errors import GalleonError
from . import keys, limits
from .etcd import Etcd
from .model import Node


class PeerTransport(Protocol):
    def ping(self, node: str, address: str, timeout_s: float) -> str:
        """Ping ``node`` at ``address``; return the name it answered as (blocking). Raises
        ``GalleonError`` (``Unavailable``, ``Unauthenticated``) when it cannot."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Reach:
    """Whether this node reached one peer over mTLS, and how fast or why not."""

    node: str
    reachable: bool
    rtt_ms: float = 0.0
    problem: str = ""           # one sentence when not reachable


class Peers:
    def __init__(self, transport: PeerTransport, this_node: str) -> None:
        self.transport = transport
        self.this_node = this_node
        self._limiter = trio.CapacityLimiter(limits.peer_ping_parallel_max)

    async def ping(self, node: Node, timeout_s: float = limits.peer_ping_timeout_s) -> Reach:
        if not node.address:
            return Reach(node.name, False, problem=f"node {node.name} published no peer address")

        def call() -> Reach:
            start = time.monotonic()
            try:
                self.transport.ping(node.name, node.address, timeout_s)
            except GalleonError as exc:
                return Reach(node.name, False, problem=str(exc))
            return Reach(node.name, True, rtt_ms=(time.monotonic() - start) * 1000)

        # abandon_on_cancel: a cancelled status call does not wait for a ping's timeout; the
        # ping itself is bounded by ``timeout_s`` and ends on its own.
        return await trio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True)

    async def reach(self, nodes: list[Node]) -> dict[str, Reach]:
        """Ping every node (this one too: its own listener is checked the same way) at once."""
        found: dict[str, Reach] = {}

        async def one(node: Node) -> None:
            found[node.name] = await self.ping(node)

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(one, node)
        return found

    def close(self) -> None:
        self.transport.close()


class Registry:
    """The names of the cluster's registered nodes (an ``info`` key in etcd), for the peer
    server's identity check. Its own etcd session: it is called from the peer server's
    threads, never queued behind the node's other etcd traffic (blocking)."""

    def __init__(self, etcd_url: str) -> None:
        self.etcd = Etcd(etcd_url)

    def names(self) -> set[str]:
        found = set()
        for kv in self.etcd.get_prefix(keys.NODES):
            name, leaf = keys.split(kv.key, keys.NODES)
            if name and leaf == "info":
                found.add(name)
        return found
