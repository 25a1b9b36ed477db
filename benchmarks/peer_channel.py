"""The peer channel's cost: a Ping over mutual TLS, warm (channel kept) and cold (new channel:
TCP + TLS handshake), against a plaintext unary gRPC call on loopback in the same run.

The real ``PeerServer`` and ``PeerClient`` (``galleonfs/rpc/peer.py``) in this process, with
certificates from ``cluster.certs``; the membership check reads a fixed set of names instead
of etcd (its etcd read is cached for 2 s, so it is off the per-call path anyway). The
baseline is gRPC's health ``Check`` on a plaintext server with the same thread pool size:
what a call costs without TLS and without the identity check.

    python -m benchmarks.peer_channel [--count 2000] [--cold 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from galleonfs.cluster import certs
from galleonfs.rpc.peer import PeerClient, PeerServer


def _stats(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms, n={len(ms)}"


def _tls(directory: Path) -> certs.PeerTls:
    return certs.read_peer_tls(str(directory / certs.NODE_CERT), str(directory / certs.NODE_KEY),
                               str(directory / certs.CA_CERT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="warm calls of each kind")
    parser.add_argument("--cold", type=int, default=100, help="pings on a new channel each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        certs.init_ca(base / "ca")
        for node in ("a", "b"):
            certs.issue(base / "ca", node, base / node, hosts=("127.0.0.1",))
        server = PeerServer("a", _tls(base / "a"), lambda: {"a", "b"}, audit=None)
        address = server.listen("127.0.0.1:0")
        server.start()
        plain = grpc.server(ThreadPoolExecutor(max_workers=8))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), plain)
        plain_port = plain.add_insecure_port("127.0.0.1:0")
        plain.start()
        client = PeerClient(_tls(base / "b"))
        try:
            client.ping("a", address, 5)                                # the handshake, once
            warm, baseline, cold = [], [], []
            with grpc.insecure_channel(f"127.0.0.1:{plain_port}") as channel:
                check = health_pb2_grpc.HealthStub(channel).Check
                check(health_pb2.HealthCheckRequest(), timeout=5)
                # Alternate blocks of 50 so both kinds see the same load on a shared machine.
                for _ in range(args.count // 50):
                    for _ in range(50):
                        t = time.perf_counter()
                        client.ping("a", address, 5)
                        warm.append(time.perf_counter() - t)
                    for _ in range(50):
                        t = time.perf_counter()
                        check(health_pb2.HealthCheckRequest(), timeout=5)
                        baseline.append(time.perf_counter() - t)
            for _ in range(args.cold):
                fresh = PeerClient(_tls(base / "b"))
                t = time.perf_counter()
                fresh.ping("a", address, 5)
                cold.append(time.perf_counter() - t)
                fresh.close()
        finally:
            client.close()
            server.stop(1)
            plain.stop(1)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} CPUs")
    print(f"peer Ping, mTLS, warm channel:      {_stats(warm)}")
    print(f"plaintext unary gRPC (health Check): {_stats(baseline)}")
    print(f"peer Ping, mTLS, new channel:       {_stats(cold)}")


if __name__ == "__main__":
    main()
