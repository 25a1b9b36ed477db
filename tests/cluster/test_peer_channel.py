"""The peer channel's parts in one process, without daemons or etcd: the real ``PeerServer``
and ``PeerClient`` over real mTLS on loopback, with the membership read counted.

What replication will rely on: the caller's node name reaches the servicer; etcd is read at
most once per ``peer_members_cache_s`` however many calls come; the client reuses one
channel per peer and closes the least recently used beyond its bound; ``Peers.reach`` pings
every node side by side, each failure one sentence, from the trio thread without blocking it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from galleonfs.cluster import certs
from galleonfs.cluster.model import Node, NodeState
from galleonfs.cluster.peers import Peers
from galleonfs.peer.v1 import peer_pb2, peer_pb2_grpc
from galleonfs.rpc.peer import PeerClient, PeerServer
from galleonfs.testing.etcd import free_port


def _tls(directory: Path) -> certs.PeerTls:
    return certs.read_peer_tls(str(directory / certs.NODE_CERT), str(directory / certs.NODE_KEY),
                               str(directory / certs.CA_CERT))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pki")
    certs.init_ca(base / "ca")
    for node in ("a", "b", "c"):
        certs.issue(base / "ca", node, base / node, hosts=("127.0.0.1",))
    return base


@pytest.fixture
def server_a(pki: Path) -> Iterator[tuple[str, list[int]]]:
    reads: list[int] = []

    def members() -> set[str]:
        reads.append(1)
        return {"a", "b"}

    server = PeerServer("a", _tls(pki / "a"), members, audit=None)
    address = server.listen("127.0.0.1:0")
    server.start()
    try:
        yield address, reads
    finally:
        server.stop(0)


def test_the_caller_is_named_and_membership_is_read_once_per_period(pki: Path,
                                                                    server_a: tuple[str, list[int]]) -> None:
    address, reads = server_a
    client = PeerClient(_tls(pki / "b"))
    try:
        stub = peer_pb2_grpc.PeerServiceStub(client.channel("a", address))
        replies = [stub.Ping(peer_pb2.PingRequest(), timeout=5) for _ in range(50)]
    finally:
        client.close()
    assert {(r.node, r.caller) for r in replies} == {("a", "b")}
    assert len(reads) == 1          # 50 calls well within peer_members_cache_s (2 s): one read


def test_channels_are_reused_and_bounded(pki: Path, server_a: tuple[str, list[int]]) -> None:
    address, _ = server_a
    client = PeerClient(_tls(pki / "b"), channels_max=2)
    try:
        first = client.channel("a", address)
        assert client.channel("a", address) is first
        second = client.channel("x", "127.0.0.1:1")
        client.channel("y", "127.0.0.1:2")         # the third: "a" (least recently used) goes
        assert client.channel("x", "127.0.0.1:1") is second
        assert client.channel("a", address) is not first
        assert client.ping("a", address, 5) == "a"  # the new channel works
    finally:
        client.close()


def test_reach_pings_every_node_side_by_side(pki: Path, server_a: tuple[str, list[int]]) -> None:
    address, _ = server_a
    refused = f"127.0.0.1:{free_port()}"
    nodes = [Node("a", "z", "", address, 1, 1, NodeState.READY),
             Node("b", "z", "", refused, 1, 1, NodeState.READY),
             Node("c", "z", "", "", 1, 1, NodeState.DOWN)]
    peers = Peers(PeerClient(_tls(pki / "b")), "b")

    async def main() -> dict[str, object]:
        ticks = 0

        async def tick() -> None:            # the trio thread stays free while pings run
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            started = time.monotonic()
            found = await peers.reach(nodes)
            elapsed = time.monotonic() - started
            nursery.cancel_scope.cancel()
        return {"found": found, "elapsed": elapsed, "ticks": ticks}

    try:
        result = trio.run(main)
    finally:
        peers.close()
    found = result["found"]
    assert isinstance(found, dict)
    assert found["a"].reachable and found["a"].rtt_ms > 0 and found["a"].problem == ""
    assert not found["b"].reachable
    assert found["b"].problem == (f"node b at {refused} does not answer: connection refused (is galleond "
                                  f"running there with that --peer-listen?)")
    assert not found["c"].reachable and found["c"].problem == "node c published no peer address"
    assert float(str(result["elapsed"])) < 5
    assert int(str(result["ticks"])) >= 1
