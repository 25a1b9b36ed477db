"""Model <-> protobuf conversions, both directions, in one place.

The enum tables below are the only mapping between the model's enums and the wire's: the
servicers and ``galleonctl`` both go through them (galleonctl turns what a user typed into
the model's enum first, then into the wire value here).

What it must not do: import grpc (``galleonctl`` loads it) or the managers (only their
plain data model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from ..errors import InvalidArgument
from ..managers.model import (
    AccessMode,
    BindingMode,
    ReclaimPolicy,
    StorageClass,
    Volume,
    VolumeState,
    VolumeType,
)
from ..v1 import types_pb2 as pb
from ..v1 import volume_pb2

_TYPES = {VolumeType.EPHEMERAL: pb.EPHEMERAL, VolumeType.PERSISTENT: pb.PERSISTENT,
          VolumeType.SHARED: pb.SHARED}
_STATES = {VolumeState.PROVISIONING: pb.PROVISIONING, VolumeState.AVAILABLE: pb.AVAILABLE,
           VolumeState.MOUNTED: pb.MOUNTED, VolumeState.EXPANDING: pb.EXPANDING,
           VolumeState.DELETING: pb.DELETING, VolumeState.FAILED: pb.FAILED}
_MODES = {AccessMode.RWO: pb.READ_WRITE_ONCE, AccessMode.ROX: pb.READ_ONLY_MANY,
          AccessMode.RWX: pb.READ_WRITE_MANY}
_RECLAIM = {ReclaimPolicy.DELETE: pb.DELETE, ReclaimPolicy.RETAIN: pb.RETAIN}
_BINDING = {BindingMode.IMMEDIATE: pb.IMMEDIATE,
            BindingMode.WAIT_FOR_FIRST_CONSUMER: pb.WAIT_FOR_FIRST_CONSUMER}


K = TypeVar("K")
V = TypeVar("V")


def _reverse(table: Mapping[K, V]) -> dict[V, K]:
    return {v: k for k, v in table.items()}


_TYPES_BACK, _MODES_BACK = _reverse(_TYPES), _reverse(_MODES)
_RECLAIM_BACK, _BINDING_BACK = _reverse(_RECLAIM), _reverse(_BINDING)


def timestamp(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def rates_to_pb(r: dict[str, Any]) -> volume_pb2.VolumeRates:
    """The worker's ``stats`` reply ``rates`` (empty when unmounted or metrics are off)."""
    return volume_pb2.VolumeRates(
        window_seconds=float(r.get("window_s", 0)), requests_per_second=float(r.get("requests_per_s", 0)),
        read_ops_per_second=float(r.get("read_ops_per_s", 0)),
        write_ops_per_second=float(r.get("write_ops_per_s", 0)),
        read_bytes_per_second=float(r.get("read_bytes_per_s", 0)),
        write_bytes_per_second=float(r.get("write_bytes_per_s", 0)),
        latency_p50_seconds=float(r.get("latency_p50_s", 0)),
        latency_p99_seconds=float(r.get("latency_p99_s", 0)),
        requests_total=int(r.get("requests_total", 0)), read_bytes_total=int(r.get("read_bytes_total", 0)),
        written_bytes_total=int(r.get("written_bytes_total", 0)))


def volume_to_pb(v: Volume, origin_name: str = "") -> pb.Volume:
    """``origin_name``: the name of the volume a clone comes from (stored by id)."""
    return pb.Volume(
        id=v.id, name=v.name, type=_TYPES[v.type], state=_STATES[v.state], size_bytes=v.size,
        access_modes=[_MODES[m] for m in v.access_modes], storage_class=v.storage_class,
        labels=v.labels, created_at=timestamp(v.created_ns), updated_at=timestamp(v.updated_ns),
        mount_points=[pb.MountPoint(path=m.path, read_only=m.read_only, snapshot=m.snapshot,
                                    mounted_at=timestamp(m.mounted_at_ns)) for m in v.mount_points],
        block_size_bytes=v.block_size, message=v.message,
        origin_volume=origin_name or v.origin_volume, origin_snapshot=v.origin_snapshot,
        tenant=v.tenant,
    )


def volume_type_from_pb(value: pb.VolumeType) -> VolumeType:
    if value == pb.VOLUME_TYPE_UNSPECIFIED:
        return VolumeType.PERSISTENT
    if value not in _TYPES_BACK:
        raise InvalidArgument(f"unknown volume type {value}")
    return VolumeType(_TYPES_BACK[value])


def access_modes_from_pb(values: Iterable[pb.AccessMode]) -> list[AccessMode]:
    modes = []
    for value in values:
        if value == pb.ACCESS_MODE_UNSPECIFIED:
            continue
        if value not in _MODES_BACK:
            raise InvalidArgument(f"unknown access mode {value}")
        modes.append(_MODES_BACK[value])
    return modes or [AccessMode.RWO]


def access_modes_to_pb(modes: Iterable[AccessMode]) -> list[pb.AccessMode]:
    return [_MODES[m] for m in modes]


def volume_type_to_pb(value: VolumeType) -> pb.VolumeType:
    return _TYPES[value]


def reclaim_policy_to_pb(value: ReclaimPolicy) -> pb.ReclaimPolicy:
    return _RECLAIM[value]


def binding_mode_to_pb(value: BindingMode) -> pb.VolumeBindingMode:
    return _BINDING[value]


def class_to_pb(c: StorageClass) -> pb.StorageClass:
    return pb.StorageClass(
        name=c.name, parameters=c.parameters, reclaim_policy=reclaim_policy_to_pb(c.reclaim_policy),
        volume_binding_mode=binding_mode_to_pb(c.binding_mode), builtin=c.builtin,
        is_default=c.is_default, created_at=timestamp(c.created_ns),
    )


def class_from_pb(p: pb.StorageClass) -> StorageClass:
    return StorageClass(
        name=p.name, parameters=dict(p.parameters),
        reclaim_policy=_RECLAIM_BACK.get(p.reclaim_policy, ReclaimPolicy.DELETE),
        binding_mode=_BINDING_BACK.get(p.volume_binding_mode, BindingMode.IMMEDIATE),
        builtin=p.builtin, is_default=p.is_default,
        created_ns=p.created_at.ToNanoseconds() if p.HasField("created_at") else 0,
    )


def snapshot_to_pb(info: dict[str, Any]) -> Any:
    from ..v1 import snapshot_pb2

    return snapshot_pb2.Snapshot(
        id=info["id"], name=info["name"], volume=info["volume"], volume_id=info["volume_id"],
        generation=int(info["generation"]), created_at=timestamp(int(info["created_ns"])),
        logical_bytes=int(info["logical_bytes"]), freeable_bytes=int(info["freeable_bytes"]),
        inodes=int(info["inodes"]), clones=list(info["clones"]))


def policy_to_pb(p: Any, next_run_ns: int) -> Any:
    from ..v1 import snapshot_pb2

    return snapshot_pb2.SnapshotPolicy(
        name=p.name, schedule=p.schedule, retention=p.retention, volume_selector=p.selector,
        created_at=timestamp(p.created_ns), last_run=timestamp(p.last_run_ns) if p.last_run_ns else None,
        next_run=timestamp(next_run_ns), last_error=p.last_error)


def policy_from_pb(p: Any) -> Any:
    from ..managers.model import SnapshotPolicy

    return SnapshotPolicy(name=p.name, schedule=p.schedule, retention=p.retention,
                          selector=dict(p.volume_selector))


def qos_policy_to_pb(p: Any, volumes: list[str]) -> Any:
    from ..v1 import qos_pb2

    return qos_pb2.QosPolicy(
        name=p.name, volumes=volumes, created_at=timestamp(p.created_ns),
        limits=qos_pb2.QosRates(iops=p.limits.iops, throughput_mbps=p.limits.throughput_mbps),
        guarantees=qos_pb2.QosRates(iops=p.guarantees.iops, throughput_mbps=p.guarantees.throughput_mbps),
        burstable=qos_pb2.QosBurst(enabled=p.burst.enabled, duration_seconds=p.burst.duration_s,
                                   iops_multiplier=p.burst.iops_multiplier,
                                   throughput_multiplier=p.burst.throughput_multiplier))


def qos_policy_from_pb(p: Any) -> Any:
    from ..qos.policy import Burst, QosPolicy, QosRates

    b = p.burstable
    return QosPolicy(name=p.name, limits=QosRates(p.limits.iops, p.limits.throughput_mbps),
                     guarantees=QosRates(p.guarantees.iops, p.guarantees.throughput_mbps),
                     burst=Burst(b.enabled, b.duration_seconds, b.iops_multiplier or 1.0,
                                 b.throughput_multiplier or 1.0))
