"""Test doubles of the backup repository that ship with it (the trio habit).

* ``start_moto``: a real S3-compatible server (moto's ``moto_server``, from the ``test``
  extra) in a subprocess on a free loopback port, for tests and benchmarks;
* ``FailingList``: a real target whose listing of one prefix fails the way an unreachable
  server does (what GC must survive without deleting anything);
* ``LoopbackProxy``: a TCP link to that server that can be cut and restored (network loss).

What it must not do: be imported by the repository itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
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


class LoopbackProxy:
    """A TCP forwarder on a free loopback port to ``target_port``, whose link can be cut
    (every connection reset, new ones refused) and restored on the same port: network loss
    between a node and its S3 server, for real, without touching either."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return                                  # cut: the listener was closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
