"""The gRPC servicers: translate, call the managers on the trio thread, translate back.

Each method is a few lines. Errors are not handled here: ``GalleonError`` propagates to
``status.ErrorInterceptor``. Every manager call, lookups included, crosses the bridge:
the managers' state lives on the trio thread only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from ..managers import tenancy
from ..managers.backups import (
    HOOK_TIMEOUT_S_DEFAULT,
    BackupManager,
    BackupPolicy,
    BackupPolicyManager,
    BackupTarget,
    BackupView,
    Progress,
    VerifyReport,
)
from ..managers.cluster import ClusterManager
from ..managers.model import Volume, VolumeState
from ..managers.qos import QosManager
from ..managers.snapshots import PolicyManager, SnapshotManager
from ..managers.status import NodeInfo
from ..managers.storage_classes import StorageClassManager
from ..managers.volumes import VolumeManager
from ..v1 import (
    backup_pb2,
    backup_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    qos_pb2,
    qos_pb2_grpc,
    snapshot_pb2,
    snapshot_pb2_grpc,
    storage_class_pb2,
    storage_class_pb2_grpc,
    volume_pb2,
    volume_pb2_grpc,
)
from . import convert
from .bridge import TrioBridge


class VolumeService(volume_pb2_grpc.VolumeServiceServicer):
    def __init__(self, bridge: TrioBridge, volumes: VolumeManager, snapshots: SnapshotManager,
                 cluster: ClusterManager) -> None:
        self.bridge = bridge
        self.volumes = volumes
        self.snapshots = snapshots
        self.cluster = cluster          # places new volumes in cluster mode; refuses replicas > 1 without

    def _pb(self, volume: Volume) -> Any:
        return self._pbs([volume])[0]

    def _pbs(self, volumes: Sequence[Volume]) -> list[Any]:
        """Volumes as messages; a clone names its origin, looked up on the trio thread."""
        origins = self.bridge.run_sync(lambda: [self.volumes.name_of(v.origin_volume) for v in volumes])
        return [convert.volume_to_pb(v, origin) for v, origin in zip(volumes, origins, strict=True)]

    def Clone(self, request: Any, context: Any) -> Any:
        volume = self.bridge.run(lambda: self.snapshots.clone(
            request.volume, request.snapshot, request.name, size=request.size_bytes,
            labels=dict(request.labels)))
        return self._pb(volume)

    def Flatten(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run(self.snapshots.flatten, request.name))

    def Create(self, request: Any, context: Any) -> Any:
        volume = self.bridge.run(
            lambda: self.cluster.create_volume(
                request.name, request.size_bytes, storage_class=request.storage_class,
                access_modes=convert.access_modes_from_pb(request.access_modes),
                type=convert.volume_type_from_pb(request.type), labels=dict(request.labels),
                replicas=request.replicas, allow_degraded=request.allow_degraded))
        return self._pb(volume)

    def Get(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run_sync(self.volumes.get, request.name))

    def List(self, request: Any, context: Any) -> Any:
        volumes = self.bridge.run_sync(self.volumes.list, dict(request.label_selector))
        return volume_pb2.ListVolumesResponse(volumes=self._pbs(volumes))

    def Delete(self, request: Any, context: Any) -> Any:
        name = self.bridge.run_sync(lambda: self.volumes.get(request.name).name)   # an id names it too
        volume_id, retained = self.bridge.run(lambda: self.volumes.delete(request.name, force=request.force))
        self.bridge.run(self.cluster.forget_volume, name)
        return volume_pb2.DeleteVolumeResponse(id=volume_id, data_retained=bool(retained),
                                               retained_path=retained)

    def Expand(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run(self.volumes.expand, request.name, request.size_bytes))

    def Mount(self, request: Any, context: Any) -> Any:
        volume = self.bridge.run(lambda: self.volumes.mount(request.name, request.path,
                                                            read_only=request.read_only))
        return self._pb(volume)

    def Unmount(self, request: Any, context: Any) -> Any:
        volume = self.bridge.run(lambda: self.volumes.unmount(request.name, request.path, lazy=request.force))
        if volume.state == VolumeState.DELETING:         # ephemeral: its last unmount deletes it
            self.bridge.run(self.cluster.forget_volume, volume.name)
        return self._pb(volume)

    def GetStats(self, request: Any, context: Any) -> Any:
        view = self.bridge.run(self.volumes.stats, request.name)
        volume, stats = view.volume, view.stats
        return volume_pb2.VolumeStats(
            id=volume.id, name=volume.name, size_bytes=stats.size, used_bytes=stats.used_bytes,
            free_bytes=max(0, stats.size - stats.used_bytes), inodes_used=stats.inodes_used,
            inodes_total=stats.inodes_total, disk_bytes=view.disk_bytes,
            mounted=stats.mounted, worker_pid=stats.pid, counters=stats.counters,
            failsafe=bool(stats.failsafe), failsafe_reason=stats.failsafe,
            rates=convert.rates_to_pb(stats.rates),
        )


class StorageClassService(storage_class_pb2_grpc.StorageClassServiceServicer):
    def __init__(self, bridge: TrioBridge, classes: StorageClassManager) -> None:
        self.bridge = bridge
        self.classes = classes

    def Create(self, request: Any, context: Any) -> Any:
        cls = convert.class_from_pb(request.storage_class)
        return convert.class_to_pb(self.bridge.run_sync(self.classes.create, cls))

    def Get(self, request: Any, context: Any) -> Any:
        return convert.class_to_pb(self.bridge.run_sync(tenancy.visible_class, self.classes, request.name))

    def List(self, request: Any, context: Any) -> Any:
        classes = self.bridge.run_sync(tenancy.visible_classes, self.classes)
        return storage_class_pb2.ListStorageClassesResponse(
            storage_classes=[convert.class_to_pb(c) for c in classes])

    def Delete(self, request: Any, context: Any) -> Any:
        self.bridge.run_sync(self.classes.delete, request.name)
        return storage_class_pb2.DeleteStorageClassResponse()


class NodeService(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, bridge: TrioBridge, info: NodeInfo) -> None:
        self.bridge = bridge
        self.info = info

    def GetStatus(self, request: Any, context: Any) -> Any:
        s = self.bridge.run_sync(self.info.status)
        return node_pb2.NodeStatus(
            node_id=s.node_id, hostname=s.hostname, version=s.version, data_dir=s.data_dir,
            listen=s.listen, started_at=convert.timestamp(s.started_ns),
            capacity_bytes=s.capacity_bytes, available_bytes=s.available_bytes,
            provisioned_bytes=s.provisioned_bytes, volumes_by_state=s.volumes_by_state,
            mount_workers_up=s.workers_up, mount_workers_expected=s.workers_expected,
            ready=s.ready, problems=s.problems, metrics_url=s.metrics_url,
        )


class SnapshotService(snapshot_pb2_grpc.SnapshotServiceServicer):
    def __init__(self, bridge: TrioBridge, volumes: VolumeManager, snapshots: SnapshotManager) -> None:
        self.bridge = bridge
        self.volumes = volumes
        self.snapshots = snapshots

    def Create(self, request: Any, context: Any) -> Any:
        view = self.bridge.run(self.snapshots.create, request.volume, request.name)
        return convert.snapshot_to_pb(view.to_json())

    def Get(self, request: Any, context: Any) -> Any:
        view = self.bridge.run(self.snapshots.get, request.volume, request.name)
        return convert.snapshot_to_pb(view.to_json())

    def List(self, request: Any, context: Any) -> Any:
        views = self.bridge.run(self.snapshots.list, request.volume)
        return snapshot_pb2.ListSnapshotsResponse(snapshots=[convert.snapshot_to_pb(v.to_json()) for v in views])

    def Delete(self, request: Any, context: Any) -> Any:
        freed = self.bridge.run(self.snapshots.delete, request.volume, request.name)
        return snapshot_pb2.DeleteSnapshotResponse(freed_bytes=freed)

    def Restore(self, request: Any, context: Any) -> Any:
        volume = self.bridge.run(lambda: self.snapshots.restore(request.volume, request.name, force=request.force))
        return self._pb(volume)

    def Diff(self, request: Any, context: Any) -> Any:
        changes = self.bridge.run(self.snapshots.diff, request.volume, request.from_snapshot,
                                  request.to_snapshot or None)
        return snapshot_pb2.DiffSnapshotsResponse(
            entries=[snapshot_pb2.DiffEntry(**dataclasses.asdict(c)) for c in changes])

    def Mount(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run(self.snapshots.mount, request.volume, request.name, request.path))

    def _pb(self, volume: Volume) -> Any:
        origin = self.bridge.run_sync(self.volumes.name_of, volume.origin_volume)
        return convert.volume_to_pb(volume, origin)


class SnapshotPolicyService(snapshot_pb2_grpc.SnapshotPolicyServiceServicer):
    def __init__(self, bridge: TrioBridge, policies: PolicyManager) -> None:
        self.bridge = bridge
        self.policies = policies

    def _pb(self, policy: Any) -> Any:
        return convert.policy_to_pb(policy, self.policies.next_run_ns(policy))

    def Create(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run_sync(self.policies.create, convert.policy_from_pb(request.policy)))

    def Get(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run_sync(self.policies.get, request.name))

    def List(self, request: Any, context: Any) -> Any:
        return snapshot_pb2.ListSnapshotPoliciesResponse(
            policies=[self._pb(p) for p in self.bridge.run_sync(self.policies.list)])

    def Delete(self, request: Any, context: Any) -> Any:
        self.bridge.run_sync(self.policies.delete, request.name)
        return snapshot_pb2.DeleteSnapshotPolicyResponse()


class QosService(qos_pb2_grpc.QosServiceServicer):
    def __init__(self, bridge: TrioBridge, qos: QosManager) -> None:
        self.bridge = bridge
        self.qos = qos

    def _pb(self, policy: Any) -> Any:
        return convert.qos_policy_to_pb(policy, self.qos.volumes_of(policy.name))

    def Create(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run_sync(self.qos.create, convert.qos_policy_from_pb(request.policy)))

    def Get(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run_sync(self.qos.get, request.name))

    def Update(self, request: Any, context: Any) -> Any:
        return self._pb(self.bridge.run(self.qos.update, convert.qos_policy_from_pb(request.policy)))

    def List(self, request: Any, context: Any) -> Any:
        return qos_pb2.ListQosPoliciesResponse(policies=[self._pb(p) for p in self.bridge.run_sync(self.qos.list)])

    def Delete(self, request: Any, context: Any) -> Any:
        self.bridge.run_sync(self.qos.delete, request.name)
        return qos_pb2.DeleteQosPolicyResponse()

    def Assign(self, request: Any, context: Any) -> Any:
        volume, previous = self.bridge.run(self.qos.assign, request.policy, request.volume)
        return qos_pb2.AssignQosPolicyResponse(volume=volume, policy=request.policy, previous_policy=previous)


# --- backups (issue 13) ----------------------------------------------------------------------------
def _backup_target_to_pb(t: BackupTarget) -> backup_pb2.BackupTarget:
    return backup_pb2.BackupTarget(name=t.name, url=t.url, endpoint=t.endpoint, region=t.region,
                                   credentials_env=t.credentials_env, key_env=t.key_env,
                                   created_at=convert.timestamp(t.created_ns))


def _backup_to_pb(view: BackupView) -> backup_pb2.Backup:
    info = view.info
    meta = info.meta
    return backup_pb2.Backup(
        id=info.backup_id, volume=info.volume_name, volume_id=info.volume_id, target=view.target,
        snapshot=meta.get("snapshot", ""), generation=info.generation,
        time=convert.timestamp(int(info.time.timestamp() * 1e9)), parent=info.parent or "",
        size_bytes=int(meta.get("size", "0") or 0), used_bytes=int(meta.get("used_bytes", "0") or 0),
        bytes_new=int(info.stats.get("bytes_new", 0)), records=info.records, meta=dict(meta))


def _progress_to_pb(p: Progress, total: int) -> backup_pb2.BackupEvent:
    eta = p.eta_s(total) if total else None
    return backup_pb2.BackupEvent(progress=backup_pb2.BackupProgress(
        phase=p.phase, bytes_done=p.bytes_done, bytes_total=total, bytes_transferred=p.bytes_transferred,
        rate_bytes_per_second=p.rate_bytes_per_s(), eta_seconds=-1.0 if eta is None else eta, done=p.done))


def _streamed(bridge: TrioBridge, work: Callable[[Callable[[Progress, int], None]], Awaitable[Any]],
              finish: Callable[[Any], backup_pb2.BackupEvent]) -> Iterator[backup_pb2.BackupEvent]:
    """Run ``work`` on the trio loop from a thread of our own while this gRPC thread streams
    its progress; then its result (``finish``), or its error (raised here, so the error
    interceptor answers it). At most one progress event waits: a slow reader skips some."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)

    def progress(p: Progress, total: int) -> None:
        with contextlib.suppress(queue.Full):
            events.put_nowait(("progress", _progress_to_pb(p, total)))

    def runner() -> None:
        try:
            result = bridge.run(work, progress)
        except BaseException as exc:          # handed to the gRPC thread, raised there
            events.put(("error", exc))
        else:
            events.put(("done", result))

    thread = threading.Thread(target=runner, name="backup-rpc", daemon=True)
    thread.start()
    while True:
        kind, value = events.get()
        if kind == "progress":
            yield value
        elif kind == "error":
            raise value
        else:
            yield finish(value)
            return


class BackupTargetService(backup_pb2_grpc.BackupTargetServiceServicer):
    def __init__(self, bridge: TrioBridge, backups: BackupManager) -> None:
        self.bridge = bridge
        self.backups = backups

    def Create(self, request: Any, context: Any) -> Any:
        t = request.target
        target = BackupTarget(name=t.name, url=t.url, endpoint=t.endpoint, region=t.region,
                              credentials_env=t.credentials_env, key_env=t.key_env)
        made, created = self.bridge.run(self.backups.create_target, target)
        return backup_pb2.CreateBackupTargetResponse(target=_backup_target_to_pb(made), repository_created=created)

    def List(self, request: Any, context: Any) -> Any:
        targets = self.bridge.run_sync(self.backups.list_targets)
        return backup_pb2.ListBackupTargetsResponse(targets=[_backup_target_to_pb(t) for t in targets])

    def Delete(self, request: Any, context: Any) -> Any:
        self.bridge.run_sync(self.backups.delete_target, request.name)
        return backup_pb2.DeleteBackupTargetResponse()


class BackupService(backup_pb2_grpc.BackupServiceServicer):
    def __init__(self, bridge: TrioBridge, volumes: VolumeManager, backups: BackupManager) -> None:
        self.bridge = bridge
        self.volumes = volumes
        self.backups = backups

    def Create(self, request: Any, context: Any) -> Any:
        return _streamed(self.bridge, lambda progress: self.backups.create(
            request.volume, request.target, request.snapshot, progress=progress),
            lambda view: backup_pb2.BackupEvent(backup=_backup_to_pb(view)))

    def Get(self, request: Any, context: Any) -> Any:
        return _backup_to_pb(self.bridge.run(self.backups.get, request.backup))

    def List(self, request: Any, context: Any) -> Any:
        views = self.bridge.run(self.backups.list_backups, request.volume, request.target)
        return backup_pb2.ListBackupsResponse(backups=[_backup_to_pb(v) for v in views])

    def Delete(self, request: Any, context: Any) -> Any:
        view, freed, gc_error = self.bridge.run(self.backups.delete, request.backup)
        return backup_pb2.DeleteBackupResponse(backup=_backup_to_pb(view), freed_bytes=freed, gc_error=gc_error)

    def Restore(self, request: Any, context: Any) -> Any:
        def volume_event(volume: Volume) -> backup_pb2.BackupEvent:
            return backup_pb2.BackupEvent(volume=convert.volume_to_pb(volume, ""))
        return _streamed(self.bridge, lambda progress: self.backups.restore(
            request.backup, request.name, storage_class=request.storage_class, progress=progress),
            volume_event)

    def Verify(self, request: Any, context: Any) -> Any:
        def report(r: VerifyReport) -> backup_pb2.BackupEvent:
            return backup_pb2.BackupEvent(report=backup_pb2.VerifyReport(
                ok=r.ok, problems=[f"{p.name}: {p.error}" for p in r.problems], backups=r.backups,
                packs=r.packs, blobs=r.blobs, bytes_read=r.bytes_read))
        return _streamed(self.bridge, lambda progress: self.backups.verify(
            request.target, request.deep, progress=progress), report)


def _backup_policy_to_pb(p: BackupPolicy, next_run_ns: int) -> backup_pb2.BackupPolicy:
    pb = backup_pb2.BackupPolicy(
        name=p.name, schedule=p.schedule, target=p.target, volume_selector=p.selector,
        keep_last=p.keep_last, keep_daily=p.keep_daily, keep_weekly=p.keep_weekly,
        keep_monthly=p.keep_monthly, pre_hook=p.pre_hook, post_hook=p.post_hook,
        hook_timeout_seconds=p.hook_timeout_s, created_at=convert.timestamp(p.created_ns),
        next_run=convert.timestamp(next_run_ns), last_error=p.last_error)
    if p.last_run_ns:
        pb.last_run.CopyFrom(convert.timestamp(p.last_run_ns))
    return pb


class BackupPolicyService(backup_pb2_grpc.BackupPolicyServiceServicer):
    def __init__(self, bridge: TrioBridge, policies: BackupPolicyManager) -> None:
        self.bridge = bridge
        self.policies = policies

    def _pb(self, policy: BackupPolicy) -> backup_pb2.BackupPolicy:
        return _backup_policy_to_pb(policy, self.policies.next_run_ns(policy))

    def Create(self, request: Any, context: Any) -> Any:
        p = request.policy
        policy = BackupPolicy(
            name=p.name, schedule=p.schedule, target=p.target, selector=dict(p.volume_selector),
            keep_last=p.keep_last, keep_daily=p.keep_daily, keep_weekly=p.keep_weekly,
            keep_monthly=p.keep_monthly, pre_hook=p.pre_hook, post_hook=p.post_hook,
            hook_timeout_s=p.hook_timeout_seconds or HOOK_TIMEOUT_S_DEFAULT)
        return self._pb(self.bridge.run_sync(self.policies.create, policy))

    def List(self, request: Any, context: Any) -> Any:
        return backup_pb2.ListBackupPoliciesResponse(
            policies=[self._pb(p) for p in self.bridge.run_sync(self.policies.list)])

    def Delete(self, request: Any, context: Any) -> Any:
        self.bridge.run_sync(self.policies.delete, request.name)
        return backup_pb2.DeleteBackupPolicyResponse()
