"""``RunningEtcd``: a real, single-member etcd (Debian's ``etcd-server``) on loopback.

Two free loopback ports (client, peer) and a data directory under the test's temporary
directory; ``start`` waits (bounded) until etcd answers. ``stop`` ends it (SIGTERM, then
SIGKILL after a bound) and ``pause``/``resume`` (SIGSTOP/SIGCONT) make it unreachable
without losing it. A missing ``etcd`` binary is an ``AssertionError`` naming the package:
cluster tests fail, never skip, where etcd cannot run.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..cluster.etcd import Etcd
from ..errors import GalleonError

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RunningEtcd:
    def __init__(self, base: str | Path) -> None:
        self.base = Path(base)
        self.data_dir = self.base / "etcd-data"
        self.log_path = self.base / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RunningEtcd:
        binary = shutil.which("etcd")
        assert binary is not None, "etcd is not installed: apt-get install etcd-server (.ci/bootstrap.sh does)"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [binary, "--name", "galleonfs-test", "--data-dir", str(self.data_dir),
                   "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                   "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                   "--initial-cluster", f"galleonfs-test={peer}", "--logger", "zap",
                   "--log-level", "error"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        client = Etcd(self.url, timeout_s=1.0)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"etcd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                client.check()
                return self
            except GalleonError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"etcd did not answer in {START_TIMEOUT_S} s:\n{self.log()}") from None
                time.sleep(0.1)

    def client(self) -> Etcd:
        return Etcd(self.url)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""
