"""The CSI tier's fixtures: one real galleond per module (the shared ``module_daemon``) and
one real ``galleonfs-csi`` process in front of it, serving the three CSI services on a unix
socket; the tests talk to that socket with the generated csi.v1 stubs, as an orchestrator's
sidecars do. At the end the driver must stop cleanly on SIGTERM and must not have logged an
error or a traceback (a request it could not answer properly)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from galleonfs.csi.v1 import csi_pb2_grpc
from galleonfs.testing.daemon import RunningDaemon

START_TIMEOUT_S = 30.0


@dataclass
class Csi:
    identity: csi_pb2_grpc.IdentityStub
    controller: csi_pb2_grpc.ControllerStub
    node: csi_pb2_grpc.NodeStub
    socket: Path
    log: Path


def start_driver(base: Path, galleond: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    sock, log = base / "csi.sock", base / "csi.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "galleonfs.csi.main", "--endpoint", f"unix://{sock}",
                                 "--galleond-address", galleond, "--node-id", "test-node", *args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"galleonfs-csi did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc, sock, log


def stop_driver(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert " ERROR " not in text and "Traceback" not in text, text


@pytest.fixture(scope="module")
def csi_driver(module_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Csi]:
    base = tmp_path_factory.mktemp("csi")
    proc, sock, log = start_driver(base, module_daemon.address)
    channel = grpc.insecure_channel(f"unix:{sock}")
    try:
        yield Csi(csi_pb2_grpc.IdentityStub(channel), csi_pb2_grpc.ControllerStub(channel),
                  csi_pb2_grpc.NodeStub(channel), sock, log)
    finally:
        channel.close()
        stop_driver(proc, log)


@pytest.fixture
def csi(csi_driver: Csi, shared_daemon: RunningDaemon) -> Csi:
    """The driver; per test, the shared daemon's checks (nothing left mounted, no loud log)."""
    return csi_driver
