"""The peer channel end to end: three real galleond nodes, a real etcd, real mutual TLS.

What a user (and replication, next) relies on: every node reaches every other over mTLS,
and ``cluster status`` says so; whoever is not a node of the cluster is refused (no TLS, no
client certificate, a certificate from another CA, a valid certificate for a name that is
not a registered node), and the last kind of refusal is in the audit log; a node whose peer
certificate is missing or unreadable does not start (one line); a killed node is shown
unreachable. The peer service is not on the API listener.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from galleonfs.cluster import certs, keys
from galleonfs.errors import Unauthenticated, Unavailable
from galleonfs.peer.v1 import peer_pb2, peer_pb2_grpc
from galleonfs.rpc.peer import PeerClient
from galleonfs.testing.cluster import RunningCluster
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.etcd import RunningEtcd, free_port

ZONES = {"n1": "a", "n2": "b", "n3": "c"}


@pytest.fixture(scope="module")
def cluster(etcd: RunningEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = RunningCluster(tmp_path_factory.mktemp("peer"), ZONES, etcd=etcd)
    try:
        running.start()
        yield running
    finally:
        running.cleanup()


def _status(d: RunningDaemon) -> dict[str, dict[str, object]]:
    done = d.ctl("cluster", "status", "-o", "json", check=True)
    return {n["name"]: n for n in json.loads(done.stdout)["nodes"]}


def _peer_address(cluster: RunningCluster, node: str) -> str:
    args = cluster.nodes[node].args
    return args[args.index("--peer-listen") + 1]


def _tls(directory: Path) -> certs.PeerTls:
    return certs.read_peer_tls(str(directory / certs.NODE_CERT), str(directory / certs.NODE_KEY),
                               str(directory / certs.CA_CERT))


def test_every_node_reaches_every_other_over_mtls(cluster: RunningCluster) -> None:
    for asked in cluster.nodes.values():
        status = _status(asked)
        assert sorted(status) == ["n1", "n2", "n3"]
        for name, n in status.items():
            assert n["peer_reachable"] is True, (name, n)
            assert n["peer_problem"] == "" and 0 < float(str(n["peer_rtt_ms"])) < 1000
    table = cluster.nodes["n2"].ctl("cluster", "status", check=True).stdout.splitlines()
    assert table[1].split()[-1] == "PEER"
    assert [line.split()[0] + " " + line.split()[-1] for line in table[2:]] == ["n1 ok", "n2 ok", "n3 ok"]


def test_the_peer_client_pings_a_node_and_checks_its_name(cluster: RunningCluster) -> None:
    client = PeerClient(_tls(cluster.base / "n1" / "peer"))
    try:
        assert client.ping("n2", _peer_address(cluster, "n2"), 5) == "n2"
        # The channel is kept: a second ping reuses it.
        assert client.channel("n2", _peer_address(cluster, "n2")) is client.channel("n2", _peer_address(cluster, "n2"))
        # n3's address under the name n2: n3's certificate does not name n2, so TLS refuses it.
        with pytest.raises(Unavailable) as caught:
            client.ping("n2", _peer_address(cluster, "n3"), 5)
        assert str(caught.value) == (f"node n2 at {_peer_address(cluster, 'n3')} does not answer: its "
                                     f"certificate does not name node n2 (is the address in etcd stale, "
                                     f"or the certificate issued for another node?)")
    finally:
        client.close()


def _refused(target: str, credentials: grpc.ChannelCredentials | None, *,
             name: str = "n1") -> grpc.RpcError:
    options = [("grpc.ssl_target_name_override", name)]
    channel = (grpc.secure_channel(target, credentials, options=options) if credentials
               else grpc.insecure_channel(target))
    with channel, pytest.raises(grpc.RpcError) as caught:
        peer_pb2_grpc.PeerServiceStub(channel).Ping(peer_pb2.PingRequest(), timeout=5)
    return caught.value


def test_strangers_are_refused(cluster: RunningCluster, tmp_path: Path) -> None:
    target = _peer_address(cluster, "n1")
    ca = (cluster.ca_dir / certs.CA_CERT).read_bytes()
    # Plaintext, and TLS without a client certificate: the handshake fails.
    assert _refused(target, None).code() == grpc.StatusCode.UNAVAILABLE
    assert _refused(target, grpc.ssl_channel_credentials(root_certificates=ca)).code() == grpc.StatusCode.UNAVAILABLE
    # A certificate for "n2" from another CA (self-made): refused in the handshake.
    certs.init_ca(tmp_path / "rogue-ca")
    certs.issue(tmp_path / "rogue-ca", "n2", tmp_path / "rogue", hosts=("127.0.0.1",))
    rogue = _tls(tmp_path / "rogue")
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=rogue.key,
                                         certificate_chain=rogue.cert)
    assert _refused(target, creds).code() == grpc.StatusCode.UNAVAILABLE
    # The same through the peer client: what a node so misconfigured reads.
    mixed = PeerClient(certs.PeerTls(rogue.cert, rogue.key, ca))
    try:
        with pytest.raises(Unavailable) as handshake:
            mixed.ping("n1", target, 5)
    finally:
        mixed.close()
    assert str(handshake.value) == (f"node n1 at {target} does not answer: the connection was closed "
                                    f"during the TLS handshake (does it take this node's certificate, "
                                    f"from the same cluster CA?)")
    # A certificate the cluster CA did sign, for a name no node has registered.
    certs.issue(cluster.ca_dir, "n9", tmp_path / "n9", hosts=("127.0.0.1",))
    client = PeerClient(_tls(tmp_path / "n9"))
    try:
        with pytest.raises(Unauthenticated) as caught:
            client.ping("n1", target, 5)
    finally:
        client.close()
    assert str(caught.value) == (
        f"node n1 at {target} refused this node's certificate: the peer certificate names 'n9', "
        f"which is not a node of this cluster; a node must join the cluster (galleond --cluster) "
        f"before other nodes accept its calls")
    # The refusal is in n1's audit log, with who was refused.
    audit = cluster.nodes["n1"].ctl("audit", "list", "-o", "json", check=True).stdout
    refused = [r for r in json.loads(audit)
               if r.get("method") == "galleonfs.peer.v1.PeerService/Ping"]
    assert refused and refused[-1]["code"] == "UNAUTHENTICATED" and "'n9'" in refused[-1]["message"]
    table = cluster.nodes["n1"].ctl("audit", "list", check=True).stdout
    assert "peer.v1.PeerService/Ping" in table and "UNAUTHENTICATED" in table
    assert cluster.nodes["n1"].ctl("audit", "verify", check=True).stdout.startswith("audit log intact")
    # A registered node is still served after all that.
    assert _status(cluster.nodes["n3"])["n1"]["peer_reachable"] is True


def test_the_api_listener_does_not_serve_the_peer_service(cluster: RunningCluster) -> None:
    with grpc.insecure_channel(cluster.nodes["n1"].address) as channel, \
            pytest.raises(grpc.RpcError) as caught:
        peer_pb2_grpc.PeerServiceStub(channel).Ping(peer_pb2.PingRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_node_without_a_readable_peer_certificate_does_not_start(cluster: RunningCluster,
                                                                  tmp_path: Path) -> None:
    base = cluster.base / "n1" / "peer"
    command = [sys.executable, "-m", "galleonfs.node.daemon", "--data-dir", str(tmp_path / "d"),
               "--listen", f"unix:{tmp_path}/s.sock", "--config", "/dev/null",
               "--cluster", f"etcd={cluster.etcd.url}", "--node-name", "n7",
               "--peer-listen", f"127.0.0.1:{free_port()}", "--peer-key", str(base / certs.NODE_KEY),
               "--peer-ca", str(base / certs.CA_CERT)]
    missing = tmp_path / "none.crt"
    done = subprocess.run([*command, "--peer-cert", str(missing)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, (
        f"galleond: error: cannot read peer_cert {missing} (No such file or directory): cluster mode "
        f"needs the node's certificate, its key and the cluster CA (--peer-cert)\n"))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    done = subprocess.run([*command, "--peer-cert", str(garbage)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("galleond: error: the peer certificate, key or CA cannot be parsed")
    # n1's certificate for a node named n7: refused at start, not by every peer later.
    done = subprocess.run([*command, "--peer-cert", str(base / certs.NODE_CERT)], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, (
        "galleond: error: the peer certificate (--peer-cert) names 'n1', not this node n7; issue one "
        "for it: galleond cluster-cert issue --node n7\n"))
    # An expired certificate for n7 (valid for 0 days): refused at start too.
    certs.issue(cluster.ca_dir, "n7", tmp_path / "n7", hosts=("127.0.0.1",), days=0)
    done = subprocess.run([*command, "--peer-cert", str(tmp_path / "n7" / certs.NODE_CERT), "--peer-key",
                           str(tmp_path / "n7" / certs.NODE_KEY)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("galleond: error: the peer certificate (--peer-cert) of node n7 is valid from ")
    assert done.stderr.endswith(" UTC, not now; issue a new one\n")
    assert "n7" not in _status(cluster.nodes["n1"])         # it never joined


def test_certificates_are_made_with_private_keys_0600(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "cluster-ca", "init",
                           str(tmp_path / "ca")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "cluster-cert", "issue",
                           "--ca", str(tmp_path / "ca"), "--node", "n4", "--host", "10.0.0.4",
                           "--out", str(tmp_path / "n4")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"certificate for node n4 issued: {tmp_path}/n4/node.crt; start it with")
    for key in (tmp_path / "ca" / certs.CA_KEY, tmp_path / "n4" / certs.NODE_KEY):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    pem = (tmp_path / "n4" / certs.NODE_CERT).read_bytes()
    assert certs.node_names(pem) == ("n4",)
    # It verifies against the CA, with the node name and the host as names (Python's own TLS).
    context = ssl.create_default_context(cafile=str(tmp_path / "n4" / certs.CA_CERT))
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "galleonfs cluster CA"),),)
    # A second init never overwrites the CA key; a bad node name is one line.
    again = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "cluster-ca", "init",
                            str(tmp_path / "ca")], capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stderr) == (4, f"galleond: error: {tmp_path}/ca/ca.key exists already; "
                                                   f"pick another directory or remove it first\n")
    bad = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "cluster-cert", "issue", "--ca",
                          str(tmp_path / "ca"), "--node", "../x", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("galleond: error: invalid node name '../x'")
    assert not (tmp_path / "x").exists()
    bad = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "cluster-cert", "issue", "--ca",
                          str(tmp_path / "ca"), "--node", "n5", "--host", "a b", "--out", str(tmp_path / "y")],
                         capture_output=True, text=True, timeout=60)
    assert (bad.returncode, bad.stderr) == (2, "galleond: error: 'a b' is neither an IP address nor a host "
                                               "name; give the address other nodes dial this one at\n")
    assert not (tmp_path / "y").exists()


def test_an_undecodable_request_from_a_node_is_invalid_argument(cluster: RunningCluster) -> None:
    """A registered node's bytes are still checked: garbage is one line, and the node serves on."""
    tls = _tls(cluster.base / "n2" / "peer")
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                         certificate_chain=tls.cert)
    with grpc.secure_channel(_peer_address(cluster, "n1"), creds,
                             options=[("grpc.ssl_target_name_override", "n1")]) as channel:
        raw = channel.unary_unary("/galleonfs.peer.v1.PeerService/Ping",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\x05\xff", timeout=5)      # field 1 says 5 bytes follow; 1 does
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "\n" not in str(caught.value.details())
        assert peer_pb2.PingReply.FromString(raw(b"", timeout=5)).caller == "n2"

def test_membership_in_etcd_decides_who_is_a_node(cluster: RunningCluster, tmp_path: Path) -> None:
    """A name is accepted while etcd has its record and refused within the 2 s cache once the
    record is gone: the certificate alone is not enough."""
    certs.issue(cluster.ca_dir, "n4", tmp_path / "n4", hosts=("127.0.0.1",))
    client = PeerClient(_tls(tmp_path / "n4"))
    target = _peer_address(cluster, "n2")
    etcd = cluster.etcd.client()
    try:
        etcd.put(keys.node("n4", "info"), {"zone": "d", "rack": "", "address": "127.0.0.1:1"})
        deadline = time.monotonic() + 5
        while True:                       # n2 may hold a read of etcd from before the put
            try:
                assert client.ping("n2", target, 5) == "n2"
                break
            except Unauthenticated:
                assert time.monotonic() < deadline, "n4 registered, still refused after 5 s"
                time.sleep(0.2)
        etcd.delete(keys.node("n4", "info"))
        time.sleep(2.2)                   # limits.peer_members_cache_s, and a little
        with pytest.raises(Unauthenticated):
            client.ping("n2", target, 5)
    finally:
        client.close()
        etcd.delete(keys.node("n4", "info"))

def test_a_paused_node_costs_status_one_timeout(cluster: RunningCluster) -> None:
    """SIGSTOP n2: its ping times out (1 s), the others still answer, and status comes back
    in about one timeout, not one per node; SIGCONT: reachable again."""
    n2 = cluster.nodes["n2"]
    os.kill(n2.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status = _status(cluster.nodes["n1"])
        elapsed = time.monotonic() - started
    finally:
        os.kill(n2.pid, signal.SIGCONT)
    assert status["n2"]["peer_reachable"] is False
    assert status["n2"]["peer_problem"] == (f"node n2 at {_peer_address(cluster, 'n2')} does not answer: "
                                            f"no answer within the timeout (down, paused or cut off?)")
    assert status["n1"]["peer_reachable"] is True and status["n3"]["peer_reachable"] is True
    assert 1.0 <= elapsed < 8          # the timeout, plus a galleonctl run on a loaded machine
    deadline = time.monotonic() + 10
    while _status(cluster.nodes["n1"])["n2"]["peer_reachable"] is not True:
        assert time.monotonic() < deadline, "n2 not reachable 10 s after SIGCONT"
        time.sleep(0.2)

def test_a_killed_node_is_shown_unreachable(cluster: RunningCluster) -> None:
    """Last in the module: it kills n3."""
    n3 = cluster.nodes["n3"]
    address = _peer_address(cluster, "n3")
    n3.kill()
    started = time.monotonic()
    status = _status(cluster.nodes["n1"])
    elapsed = time.monotonic() - started
    assert status["n3"]["peer_reachable"] is False
    assert status["n3"]["peer_problem"] == (f"node n3 at {address} does not answer: connection refused "
                                            f"(is galleond running there with that --peer-listen?)")
    assert status["n1"]["peer_reachable"] is True and status["n2"]["peer_reachable"] is True
    assert elapsed < 10           # one ping's timeout (1 s) plus a galleonctl run, on a loaded machine
    table = cluster.nodes["n1"].ctl("cluster", "status", check=True).stdout
    assert "UNREACHABLE" in table and f"peer n3: node n3 at {address} does not answer" in table
    with socket.socket() as probe:                     # nothing listens there any more
        assert probe.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) != 0

