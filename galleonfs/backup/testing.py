"""Test doubles of the backup repository that ship with it (the trio habit).

* ``start_moto``: a real S3-compatible server (moto's ``moto_server``, from the ``test``
  extra) in a subprocess on a free loopback port, for tests and benchmarks;
* ``FailingList``: a real target whose listing of one prefix fails the way an unreachable
  server does (what GC must survive without deleting anything).

What it must not do: be imported by the repository itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import TargetUnreachable
from .targets import Target

MOTO_START_TIMEOUT_S = 30.0     # moto imports ~100 modules: seconds on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    proc: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_moto(log: Path, env: dict[str, str] | None = None) -> MotoServer:
    """Start ``moto_server`` on 127.0.0.1 and wait until it answers; its output goes to ``log``."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + MOTO_START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return MotoServer(proc, endpoint, log)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


class FailingList:
    """``inner`` whose ``list(prefix)`` raises ``TargetUnreachable``; all else passes through."""

    def __init__(self, inner: Target, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        if prefix == self.prefix:
            raise TargetUnreachable(target=self.inner.url, reason="connection reset by peer")
        return self.inner.list(prefix)
