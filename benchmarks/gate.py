"""What the unix-socket gate (galleonfs/rpc/gate.py) adds to a call.

    python benchmarks/gate.py [--calls 2000] [--rounds 5]

One real galleond. The same unary call (grpc.health.v1.Health/Check, which every
interceptor sees but no manager serves) is timed on one channel through the public
socket (the gate: accept, SO_PEERCRED, splice) and on one channel straight to the gRPC
server's internal socket (root may connect there; Health needs no principal), alternating
rounds so drift hits both. Also: a fresh channel's first call each way (what one
galleonctl command pays once), and an authenticated call (NodeService/GetStatus as root
through the gate, the identity a dictionary lookup).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from galleonfs.rpc.gate import run_dir_for
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import node_pb2, node_pb2_grpc


def per_call_ms(target: str, calls: int) -> float:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(50):                          # warm up the connection
            stub.Check(request, timeout=10)
        start = time.perf_counter()
        for _ in range(calls):
            stub.Check(request, timeout=10)
        return (time.perf_counter() - start) / calls * 1000


def first_call_ms(target: str) -> float:
    start = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return (time.perf_counter() - start) * 1000


def status_ms(target: str, calls: int) -> float:
    with grpc.insecure_channel(target) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        stub.GetStatus(node_pb2.GetNodeStatusRequest(), timeout=10)
        start = time.perf_counter()
        for _ in range(calls):
            stub.GetStatus(node_pb2.GetNodeStatusRequest(), timeout=10)
        return (time.perf_counter() - start) / calls * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="galleonfs-bench-gate-") as base:
        daemon = RunningDaemon(base).start()
        try:
            gate = daemon.address
            internal = f"unix:{run_dir_for(str(daemon.data_dir))}/grpc.sock"
            through, direct, first_through, first_direct = [], [], [], []
            for _ in range(args.rounds):
                through.append(per_call_ms(gate, args.calls))
                direct.append(per_call_ms(internal, args.calls))
                first_through.append(first_call_ms(gate))
                first_direct.append(first_call_ms(internal))
            status = status_ms(gate, args.calls)
        finally:
            daemon.stop()
    med = statistics.median
    print(f"unary Health/Check, median of {args.rounds} rounds of {args.calls} calls:")
    print(f"  through the gate   {med(through):.3f} ms")
    print(f"  direct (internal)  {med(direct):.3f} ms")
    print(f"  added by the gate  {med(through) - med(direct):+.3f} ms per call")
    print(f"first call on a new channel: gate {med(first_through):.2f} ms, direct {med(first_direct):.2f} ms")
    print(f"NodeService/GetStatus as root through the gate: {status:.3f} ms per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
