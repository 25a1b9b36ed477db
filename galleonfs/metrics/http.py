"""galleond's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` (DESIGN §6).

A ``ThreadingHTTPServer`` on its own thread: a scrape must not wait behind a long gRPC call,
and the trio loop must not parse HTTP. What the node knows lives on the trio thread, so
``/readyz`` and the node metrics ask it through ``trio.from_thread`` (one hop, ~0.1 ms).

* ``/healthz``: 200 while the process serves HTTP at all (liveness).
* ``/readyz``: 200 when the catalog is open, the mounts of the last run are restored and
  every volume that should be mounted has a live mount worker; else 503 and the reasons,
  one per line (the same ``problems`` as ``galleonctl node status``).
* ``/metrics``: the workers' values (``multiproc``) plus node metrics computed now.

What it must not do: touch node state from its own threads, serve anything but GETs, or
hide a bug: the one failure expected of the node's callbacks is trio's "the loop has
finished" while galleond stops; anything else is logged at ERROR with its traceback (the
scrape gets no answer), so a broken collector shows in the log and fails the tests.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio

from ..errors import Busy, InvalidArgument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    problems: list[str]


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; port 0 picks a free one) -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise InvalidArgument(f"{text!r} is not host:port (e.g. 127.0.0.1:9464; \"\" turns "
                              f"the endpoint off)")
    return host, int(port_text)


class NodeCollector:
    """Node metrics, computed at each scrape from ``NodeStatus``."""

    def __init__(self, status: Callable[[], Any]) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            s = self._status()
        except trio.RunFinishedError:     # shutting down: the workers' metrics still count
            log.debug("node metrics unavailable: galleond is stopping")
            return
        yield GaugeMetricFamily("galleonfs_node_capacity_bytes",
                                "Size of the file system that holds the data directory.",
                                value=s.capacity_bytes)
        yield GaugeMetricFamily("galleonfs_node_used_bytes",
                                "Bytes used on that file system (by anything).",
                                value=s.capacity_bytes - s.available_bytes)
        yield GaugeMetricFamily("galleonfs_node_provisioned_bytes", "Sum of the volumes' sizes.",
                                value=s.provisioned_bytes)
        yield GaugeMetricFamily("galleonfs_node_disk_free_bytes",
                                "Bytes still free (for unprivileged writers) on that file system.",
                                value=s.available_bytes)
        yield GaugeMetricFamily("galleonfs_node_disk_pressure",
                                "1 while that file system is nearly full or a volume refused writes "
                                "because it was (/readyz says which).",
                                value=1 if getattr(s, "disk_pressure", False) else 0)
        volumes = GaugeMetricFamily("galleonfs_volumes", "Volumes by state.", labels=["state"])
        for state, count in sorted(s.volumes_by_state.items()):
            volumes.add_metric([state], count)
        yield volumes
        yield GaugeMetricFamily("galleonfs_mount_workers_up", "Mount worker processes running.",
                                value=s.workers_up)
        yield GaugeMetricFamily("galleonfs_mount_workers_expected",
                                "Volumes that should have a running mount worker.",
                                value=s.workers_expected)
        yield GaugeMetricFamily("galleonfs_node_ready", "1 when /readyz answers 200.",
                                value=1 if s.ready else 0)


class MetricsServer:
    """Serves the three paths on ``address`` from a daemon thread until ``stop``."""

    def __init__(self, address: str, multiproc_dir: str, status: Callable[[], Any],
                 readiness: Callable[[], Readiness]) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        host, port = parse_listen(address)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        registry.register(NodeCollector(status))
        handler = type("Handler", (_Handler,), {"registry": registry, "readiness": staticmethod(readiness)})
        server: type[_Server] = _Server
        if ":" in host:                   # an IPv6 address
            server = type("Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self._httpd = server((host, port), handler)
        except OSError as exc:
            error = Busy if exc.errno == errno.EADDRINUSE else InvalidArgument
            raise error(f"cannot serve metrics on {address} (metrics_listen): {exc.strerror}") from None
        self._httpd.daemon_threads = True
        bound_port = int(self._httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}/metrics"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that raised is a bug: into galleond's log at ERROR with the traceback
        (socketserver would print it to stderr, where no log reader looks for it)."""
        log.error("metrics http: a request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    registry: Any
    readiness: Callable[[], Readiness]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            r = self.readiness()
            body = "ready\n" if r.ready else "not ready\n" + "".join(f"{p}\n" for p in r.problems)
            self._reply(200 if r.ready else 503, body.encode())
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)
