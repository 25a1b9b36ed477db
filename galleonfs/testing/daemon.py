"""``RunningDaemon``: a real galleond in a subprocess, on a temporary data directory.

Started with a unix socket in the test's directory; ``start`` waits (bounded) until the
daemon answers health checks as SERVING, i.e. until it has restored its mounts.
``ctl(...)`` runs ``galleonctl`` as a user would and returns the completed process.
``stop`` sends SIGTERM and asserts a clean exit; ``kill`` is ``kill -9``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..rpc.client import Client
from ..rpc.gate import run_dir_for

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 120.0


class RunningDaemon:
    def __init__(self, base: str | Path, *, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.base = Path(base)
        self.data_dir = self.base / "data"
        self.socket = self.base / "galleond.sock"
        self.address = f"unix:{self.socket}"
        self.log_path = self.base / "galleond.log"
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("GALLEONFS_CONFIG", None)
        # Port 0: a free port each, so that daemons of parallel tests never clash.
        self.env.setdefault("GALLEONFS_METRICS_LISTEN", "127.0.0.1:0")
        # Tests mount under pytest's temporary directories; a test may pass its own roots.
        self.env.setdefault("GALLEONFS_MOUNT_ROOTS", tempfile.gettempdir())
        self.proc: subprocess.Popen[bytes] | None = None
        self.args = list(args or [])       # more galleond flags (--listen, --insecure-listen)

    def start(self, *, wait: bool = True) -> RunningDaemon:
        """Start galleond; with ``wait``, return once it is SERVING (its mounts restored)."""
        assert self.proc is None
        command = [sys.executable, "-m", "galleonfs.node.daemon", "--data-dir", str(self.data_dir),
                   "--listen", self.address, "--config", os.devnull, "--log-format", "text", *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env)
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"galleond exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                with Client(self.address) as client:
                    if client.serving():
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"galleond did not become ready in {timeout_s} s:\n{self.log()}")
            time.sleep(0.1)

    def ctl(self, *args: str, check: bool = False, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", self.address,
                               *args], capture_output=True, text=True, timeout=timeout_s, env=self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"galleonctl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def listening(self) -> list[str]:
        """The addresses galleond listens on, as bound (a TCP port 0 resolved)."""
        with Client(self.address, timeout_s=30) as client:
            return list(client.node_status().listen)

    def metrics_url(self, path: str = "/metrics") -> str:
        """Where this daemon serves ``path`` (/metrics, /healthz, /readyz), from node status."""
        with Client(self.address, timeout_s=30) as client:
            url: str = client.node_status().metrics_url
        assert url, "metrics are off (metrics_listen is empty)"
        return url.removesuffix("/metrics") + path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-10000:]
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None

    def cleanup(self) -> None:
        """Stop the daemon if running, detach anything left mounted under ``base``, and end
        mount workers that outlived their daemon (a test that failed after ``kill``)."""
        if self.proc is not None:
            self.stop()
        with open("/proc/self/mountinfo") as f:
            mounted = [line.split()[4] for line in f]
        for path in reversed(mounted):
            if path.startswith(str(self.base)):
                subprocess.run(["umount", "-l", path], capture_output=True, check=False)
        for pid in self.worker_pids():
            _end(pid)
        # A daemon killed and never restarted leaves its gate's directory in /run.
        shutil.rmtree(run_dir_for(str(self.data_dir)), ignore_errors=True)

    def worker_pids(self) -> list[int]:
        """Mount workers of this data directory, found by their command line: a worker that
        has not yet taken its volume's lock counts too."""
        volumes = f"{self.data_dir}/volumes/".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"galleonfs.fuse.worker" in argv and any(a.startswith(volumes) for a in argv):
                pids.append(int(entry))
        return pids


def _end(pid: int) -> None:
    """SIGTERM (the worker flushes and exits), then SIGKILL after a bound."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S / 4
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
