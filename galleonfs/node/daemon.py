"""galleond: the node daemon (DESIGN §2). One per node.

    galleond [--data-dir DIR] [--listen ADDRESS ...] [--config FILE] [--print-config]

Start-up: take the data directory's lock (one daemon per data directory), open the node
catalog (creating it, with the built-in storage classes, on first start), start the
supervisor and the gRPC server, then restore the mounts of the last run: adopt workers
that are still alive, restart the others. Health turns SERVING when that is done.

SIGTERM or SIGINT: stop taking calls (5 s grace for running ones), unmount every mount
point, stop every worker (each flushes and checkpoints its volume), exit 0. The catalog
keeps the mount points, so the next start mounts them again.

The catalog is checked (in a helper process) before it is opened, and backed up after
changes and at a clean stop; ``galleond recover-catalog`` rebuilds it (``recovery.py``).

Logs are JSON lines on stderr (``log_format = "text"`` for people).
"""

from __future__ import annotations

import argparse
import grp
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import trio

from .. import __version__, limits
from ..audit.log import AuditLog
from ..crypto.keys import KeySpec
from ..errors import ExitCode, GalleonError
from ..managers.access import AccessManager
from ..managers.backups import BackupManager, BackupPolicyManager
from ..managers.cluster import ClusterManager
from ..managers.qos import QosManager
from ..managers.snapshots import PolicyManager, SnapshotManager
from ..managers.status import NodeInfo, NodeStatus
from ..managers.storage_classes import StorageClassManager
from ..managers.volumes import VolumeManager
from ..meta.catalog import Catalog
from ..metrics import multiproc
from ..metrics.http import MetricsServer, Readiness
from ..rpc.access import TenantService, TokenService
from ..rpc.audit import AuditInterceptor, AuditService
from ..rpc.auth import Authenticator, AuthInterceptor
from ..rpc.bridge import TrioBridge
from ..rpc.cluster import ClusterService
from ..rpc.gate import UnixGate, run_dir_for
from ..rpc.keys import KeyService
from ..rpc.server import RpcServer, Tls
from ..rpc.services import (
    BackupPolicyService,
    BackupService,
    BackupTargetService,
    NodeService,
    QosService,
    SnapshotPolicyService,
    SnapshotService,
    StorageClassService,
    VolumeService,
)
from ..workers.supervisor import Supervisor
from . import config as node_config
from . import recovery
from .lock import lock_data_dir

log = logging.getLogger("galleond")
STOP_GRACE_S = 5.0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Daemon:
    def __init__(self, config: node_config.NodeConfig) -> None:
        self.config = config
        self.catalog = Catalog(config.data_dir)
        self.classes = StorageClassManager(self.catalog)
        keys = KeySpec(config.key_file, config.key_passphrase_env, config.key_command)
        self.supervisor = Supervisor(config.data_dir, keys)
        self.volumes = VolumeManager(config.data_dir, self.catalog, self.classes, self.supervisor, keys)
        self.volumes.mount_roots = list(config.mount_roots)
        self.snapshots = SnapshotManager(self.volumes, self.catalog)
        self.policies = PolicyManager(self.catalog, self.volumes, self.snapshots)
        self.backups = BackupManager(self.volumes, self.catalog)
        self.backup_policies = BackupPolicyManager(self.catalog, self.volumes, self.backups)
        self.qos = QosManager(self.catalog, self.volumes, node_iops=config.qos_node_iops,
                              node_throughput_mbps=config.qos_node_throughput_mbps)
        self.info = NodeInfo(self.catalog.node_id, config.data_dir, [], self.volumes)
        self.audit = AuditLog.open(config.data_dir, rotate_bytes=config.audit_rotate_bytes)
        self.cluster = ClusterManager(self.volumes, node_config.cluster_config(config), self._capacity)
        self.server: RpcServer | None = None
        self.metrics: MetricsServer | None = None
        self.volumes.overcommit_ratio = config.overcommit_ratio
        self._restored = trio.Event()
        self._stopping = False
        self._backup_failing = False

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        # Signals are caught from the start: a SIGTERM during start-up still shuts down cleanly.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.supervisor.run)
                # The loops that read the catalog (policies, QoS, catalog backup, disk watch,
                # the cluster lease) live in their own nursery, cancelled before shutdown()
                # closes the catalog: a QoS tick on a closed LMDB made a clean stop exit 1.
                async with trio.open_nursery() as background:
                    background.start_soon(self._backup_catalog)
                    await self.cluster.start()      # etcd unreachable: the start fails, one line
                    background.start_soon(self.cluster.run)
                    try:
                        self._start_metrics()
                        self._start_server()
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await self.cluster.stop()   # a refused start leaves the cluster at once
                        raise
                    task_status.started(list(self.info.listen))
                    background.start_soon(self._restore, background)
                    background.start_soon(self.info.disk.run)
                    async for signum in signals:
                        log.info("received %s: shutting down", signal.Signals(signum).name)
                        self._stopping = True
                        break
                    # Cancelling a restore half way could leave a worker started but not yet
                    # known to the supervisor, which shutdown() would then miss. Every step of
                    # a restore is bounded, so let it finish.
                    await self._restored.wait()
                    background.cancel_scope.cancel()
                await self.shutdown()
                nursery.cancel_scope.cancel()

    def _start_server(self) -> None:
        bridge = TrioBridge(trio.lowlevel.current_trio_token())
        tls = (Tls(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
               if self.config.tls_cert else None)
        gate, auth_interceptor, access_servicers = self._access(bridge)
        self.server = RpcServer(
            {"volume": VolumeService(bridge, self.volumes, self.snapshots, self.cluster),
             "cluster": ClusterService(bridge, self.cluster),
             "storage_class": StorageClassService(bridge, self.classes),
             "node": NodeService(bridge, self.info),
             "snapshot": SnapshotService(bridge, self.volumes, self.snapshots),
             "snapshot_policy": SnapshotPolicyService(bridge, self.policies),
             "qos": QosService(bridge, self.qos),
             "audit": AuditService(self.audit),
             "key": KeyService(bridge, self.volumes),
             "backup_target": BackupTargetService(bridge, self.backups),
             "backup": BackupService(bridge, self.volumes, self.backups),
             "backup_policy": BackupPolicyService(bridge, self.backup_policies), **access_servicers},
            threads=self.config.rpc_threads, socket_mode=self.config.socket_mode, tls=tls,
            interceptors=(AuditInterceptor(self.audit, auth_interceptor.authenticator.peer_entry),
                          auth_interceptor),
            gate=gate, socket_gid=_group_id(self.config.operator_group))
        try:
            for address in self.config.listen:
                self.info.listen.append(self.server.listen(address))
            for address in self.config.insecure_listen:
                self.info.listen.append(self.server.listen_insecure(address))
        except BaseException:
            gate.close()        # a refused start leaves no socket or gate directory behind
            raise
        self.server.start()
        log.info("galleond %s serving on %s (data dir %s)", __version__,
                 ", ".join(self.info.listen), self.config.data_dir)

    def _access(self, bridge: TrioBridge) -> tuple[UnixGate, AuthInterceptor, dict[str, object]]:
        """The unix-socket gate, the auth interceptor and the Token/Tenant servicers."""
        access = AccessManager(self.catalog)
        gate = UnixGate(run_dir_for(self.config.data_dir))
        authenticator = Authenticator(
            gate, verify_token=lambda secret: bridge.run_sync(access.verify, secret),
            tenant_exists=lambda name: bridge.run_sync(self.catalog.tenant, name) is not None,
            operator_group=self.config.operator_group)
        servicers = {"token": TokenService(bridge, access),
                     "tenant": TenantService(bridge, access, self.classes)}
        return gate, AuthInterceptor(authenticator), servicers

    def _start_metrics(self) -> None:
        """/metrics, /healthz and /readyz on ``metrics_listen``, before any worker starts
        (workers inherit the metrics directory from this process's environment)."""
        if not self.config.metrics_listen:
            return
        token = trio.lowlevel.current_trio_token()

        def status() -> NodeStatus:
            return trio.from_thread.run_sync(self.info.status, trio_token=token)

        def readiness() -> Readiness:
            try:
                s = status()
            except trio.RunFinishedError:
                return Readiness(False, ["galleond is shutting down"])
            return Readiness(s.ready, s.problems)

        path = multiproc.prepare(self.config.data_dir)
        self.metrics = MetricsServer(self.config.metrics_listen, path, status, readiness)
        self.metrics.start()
        self.info.metrics_url = self.metrics.url
        log.info("metrics on %s (also /healthz, /readyz)", self.metrics.url)

    async def _restore(self, nursery: trio.Nursery) -> None:
        """Bring back the mounts of the last run; health turns SERVING when done; then the
        snapshot policies start (not before: a scheduled snapshot would race the restore)."""
        try:
            await self.volumes.reconcile()
        finally:
            self._restored.set()
        if self._stopping:
            return
        self.info.reconciled = True
        assert self.server is not None, "the server starts before the restore"
        self.server.set_serving(True)
        log.info("galleond ready")
        nursery.start_soon(self.policies.run)
        nursery.start_soon(self.backup_policies.run)
        nursery.start_soon(self.qos.run)

    def _capacity(self) -> tuple[int, int]:
        """(capacity, free bytes) for the cluster: free is what new volumes may still take,
        the smaller of the disk's available space and the overcommit allowance. Called from
        the membership's worker thread; the node's status is read on the trio thread."""
        s = trio.from_thread.run_sync(self.info.status)
        allowance = int(s.capacity_bytes * self.config.overcommit_ratio) - s.provisioned_bytes
        return s.capacity_bytes, max(0, min(s.available_bytes, allowance))

    async def shutdown(self) -> None:
        await self.cluster.stop()        # shown down at once, not after the lease runs out
        if self.server is not None:
            await trio.to_thread.run_sync(self.server.stop, STOP_GRACE_S)
        await self.volumes.shutdown()
        await self._backup_catalog_now()
        if self.metrics is not None:
            await trio.to_thread.run_sync(self.metrics.stop)
        self.catalog.close()
        self.audit.close()
        log.info("galleond stopped cleanly")

    async def _backup_catalog(self) -> None:
        """Refresh ``node.lmdb.backup`` after changes, at most every catalog_backup_interval_s
        (the copy is skipped when nothing changed: LMDB's transaction id tells)."""
        while True:
            await self._backup_catalog_now()
            await trio.sleep(limits.catalog_backup_interval_s)

    async def _backup_catalog_now(self) -> None:
        try:
            await trio.to_thread.run_sync(self.catalog.backup)
        except (GalleonError, OSError) as exc:
            if not self._backup_failing:     # once per outage, not every interval
                log.error("cannot back up the node catalog (tried again every %.0f s): %s",
                          limits.catalog_backup_interval_s, exc)
            self._backup_failing = True
        else:
            if self._backup_failing:
                log.info("the node catalog is backed up again")
            self._backup_failing = False


def _group_id(name: str) -> int | None:
    """The gid the unix sockets are given (so that the operator group can connect)."""
    try:
        return grp.getgrnam(name).gr_gid if name else None
    except KeyError:
        log.info("the operator group %s does not exist: only root may use the unix socket "
                 "without a token", name)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleond", description="The GalleonFS node daemon.",
        epilog="Settings come from defaults, then the TOML file, then GALLEONFS_* variables "
               "(GALLEONFS_DATA_DIR, GALLEONFS_LISTEN, ...), then flags.\n\n"
               "galleond recover-catalog [--data-dir DIR]: rebuild a damaged or empty node catalog "
               "from its backup and the volumes' own records (galleond stopped).\n\nexample:\n"
               "  galleond --data-dir /var/lib/galleonfs --listen unix:/run/galleonfs/galleond.sock",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="where volumes and the node catalog live "
                                           "(default /var/lib/galleonfs)")
    parser.add_argument("--listen", action="append", metavar="ADDRESS",
                        help="unix:/path/to.sock or host:port; repeat for several "
                             "(default unix:/run/galleonfs/galleond.sock)")
    parser.add_argument("--insecure-listen", action="append", metavar="ADDRESS",
                        help="a plaintext TCP listener, loopback only (127.0.0.1:PORT); callers "
                             "need a token. Repeat for several")
    parser.add_argument("--config", help=f"TOML file (default {node_config.DEFAULT_CONFIG_FILE}, if present)")
    parser.add_argument("--cluster", metavar="etcd=URL",
                        help="join the cluster whose etcd answers at URL (default: single node, no etcd)")
    parser.add_argument("--node-name", help="cluster mode: this node's unique name (a DNS label)")
    parser.add_argument("--peer-listen", metavar="HOST:PORT",
                        help="cluster mode: the address other nodes reach this one at")
    parser.add_argument("--zone", help="cluster mode: failure zone (replicas spread over zones)")
    parser.add_argument("--rack", help="cluster mode: rack within the zone")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["json", "text"])
    parser.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    parser.add_argument("--version", action="version", version=f"galleond {__version__}")
    return parser


def _sole_error(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["recover-catalog"]:
        return recovery.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = node_config.load(
            config_file=args.config, env=os.environ,
            flags={"data_dir": args.data_dir, "listen": args.listen, "log_level": args.log_level,
                   "log_format": args.log_format, "insecure_listen": args.insecure_listen,
                   "cluster": args.cluster, "node_name": args.node_name,
                   "peer_listen": args.peer_listen, "zone": args.zone, "rack": args.rack})
        if args.print_config:
            print(config.render())
            return 0
        setup_logging(config.log_level, config.log_format)
        lock_fd = lock_data_dir(config.data_dir)
        try:
            recovery.check_at_start(config.data_dir)
            trio.run(Daemon(config).run)
        except BaseExceptionGroup as group:
            # trio wraps even the nursery body's own error in a group; a user error at
            # start-up (an address already in use) must still come out as one line.
            sole = _sole_error(group)
            if isinstance(sole, GalleonError):
                raise sole from None
            raise
        finally:
            os.close(lock_fd)
    except GalleonError as exc:
        print(f"galleond: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
