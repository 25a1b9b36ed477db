"""``RunningCluster``: a real etcd and N real galleond daemons in cluster mode, on loopback.

Each node gets its own directory (data dir, unix socket, log) under ``base``, a free peer
port, the zone (and rack) asked for, and a peer certificate (``<node>/peer/``) issued by
the cluster CA the fixture makes in ``base/ca`` (``cluster.certs``; ``ca_dir``). ``start`` launches every daemon first and then
waits for each (they start in parallel: about one daemon start for the lot).
``ctl(node, ...)`` runs galleonctl against one node. For the replication tests to come:
``nodes[name].kill()`` / ``.start()`` and ``etcd.pause()`` / ``.resume()`` are the faults.
"""

from __future__ import annotations

from pathlib import Path

from ..cluster import certs
from .daemon import RunningDaemon
from .etcd import RunningEtcd, free_port


class RunningCluster:
    def __init__(self, base: str | Path, zones: dict[str, str], *, rack: str = "r1",
                 etcd: RunningEtcd | None = None) -> None:
        self.base = Path(base)
        self.etcd = etcd or RunningEtcd(self._dir("etcd"))
        self._own_etcd = etcd is None
        self.nodes: dict[str, RunningDaemon] = {}
        self.ca_dir = self.base / "ca"
        if not (self.ca_dir / certs.CA_CERT).exists():
            certs.init_ca(self.ca_dir)
        for name, zone in zones.items():
            args = ["--cluster", f"etcd={self.etcd.url}", "--node-name", name,
                    "--peer-listen", f"127.0.0.1:{free_port()}", *self.peer_tls_args(name)]
            args += (["--zone", zone] if zone else []) + (["--rack", rack] if rack else [])
            self.nodes[name] = RunningDaemon(self._dir(name), args=args)

    def peer_tls_args(self, name: str) -> list[str]:
        """galleond's flags for ``name``'s peer certificate (issued on first use)."""
        peer = self._dir(name) / "peer"
        if not (peer / certs.NODE_CERT).exists():
            certs.issue(self.ca_dir, name, peer, hosts=("127.0.0.1",))
        return ["--peer-cert", str(peer / certs.NODE_CERT), "--peer-key", str(peer / certs.NODE_KEY),
                "--peer-ca", str(peer / certs.CA_CERT)]

    def _dir(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> RunningCluster:
        if self._own_etcd:
            self.etcd.start()
        for d in self.nodes.values():
            d.start(wait=False)
        for d in self.nodes.values():
            d.wait_serving()
        return self

    def cleanup(self) -> None:
        """Stop whatever still runs (daemons first: they leave the cluster cleanly)."""
        for d in self.nodes.values():
            d.cleanup()
        if self._own_etcd:
            self.etcd.stop()
