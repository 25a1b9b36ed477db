from galleonfs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CloneVolumeRequest(_message.Message):
    __slots__ = ("volume", "snapshot", "name", "size_bytes", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    volume: str
    snapshot: str
    name: str
    size_bytes: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, volume: _Optional[str] = ..., snapshot: _Optional[str] = ..., name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FlattenVolumeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateVolumeRequest(_message.Message):
    __slots__ = ("name", "size_bytes", "storage_class", "access_modes", "type", "labels", "replicas", "allow_degraded")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_MODES_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    storage_class: str
    access_modes: _containers.RepeatedScalarFieldContainer[_types_pb2.AccessMode]
    type: _types_pb2.VolumeType
    labels: _containers.ScalarMap[str, str]
    replicas: int
    allow_degraded: bool
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., storage_class: _Optional[str] = ..., access_modes: _Optional[_Iterable[_Union[_types_pb2.AccessMode, str]]] = ..., type: _Optional[_Union[_types_pb2.VolumeType, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[int] = ..., allow_degraded: _Optional[bool] = ...) -> None: ...

class GetVolumeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListVolumesRequest(_message.Message):
    __slots__ = ("label_selector",)
    class LabelSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    label_selector: _containers.ScalarMap[str, str]
    def __init__(self, label_selector: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListVolumesResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[_types_pb2.Volume]
    def __init__(self, volumes: _Optional[_Iterable[_Union[_types_pb2.Volume, _Mapping]]] = ...) -> None: ...

class DeleteVolumeRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteVolumeResponse(_message.Message):
    __slots__ = ("id", "data_retained", "retained_path")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_RETAINED_FIELD_NUMBER: _ClassVar[int]
    RETAINED_PATH_FIELD_NUMBER: _ClassVar[int]
    id: str
    data_retained: bool
    retained_path: str
    def __init__(self, id: _Optional[str] = ..., data_retained: _Optional[bool] = ..., retained_path: _Optional[str] = ...) -> None: ...

class ExpandVolumeRequest(_message.Message):
    __slots__ = ("name", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class MountVolumeRequest(_message.Message):
    __slots__ = ("name", "path", "read_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    read_only: bool
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class UnmountVolumeRequest(_message.Message):
    __slots__ = ("name", "path", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class GetVolumeStatsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VolumeStats(_message.Message):
    __slots__ = ("id", "name", "size_bytes", "used_bytes", "free_bytes", "inodes_used", "inodes_total", "disk_bytes", "mounted", "worker_pid", "counters", "failsafe", "failsafe_reason", "rates")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INODES_USED_FIELD_NUMBER: _ClassVar[int]
    INODES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MOUNTED_FIELD_NUMBER: _ClassVar[int]
    WORKER_PID_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_REASON_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    size_bytes: int
    used_bytes: int
    free_bytes: int
    inodes_used: int
    inodes_total: int
    disk_bytes: int
    mounted: bool
    worker_pid: int
    counters: _containers.ScalarMap[str, int]
    failsafe: bool
    failsafe_reason: str
    rates: VolumeRates
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., inodes_used: _Optional[int] = ..., inodes_total: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., mounted: _Optional[bool] = ..., worker_pid: _Optional[int] = ..., counters: _Optional[_Mapping[str, int]] = ..., failsafe: _Optional[bool] = ..., failsafe_reason: _Optional[str] = ..., rates: _Optional[_Union[VolumeRates, _Mapping]] = ...) -> None: ...

class VolumeRates(_message.Message):
    __slots__ = ("window_seconds", "requests_per_second", "read_ops_per_second", "write_ops_per_second", "read_bytes_per_second", "write_bytes_per_second", "latency_p50_seconds", "latency_p99_seconds", "requests_total", "read_bytes_total", "written_bytes_total")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    READ_OPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WRITE_OPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WRITE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    requests_per_second: float
    read_ops_per_second: float
    write_ops_per_second: float
    read_bytes_per_second: float
    write_bytes_per_second: float
    latency_p50_seconds: float
    latency_p99_seconds: float
    requests_total: int
    read_bytes_total: int
    written_bytes_total: int
    def __init__(self, window_seconds: _Optional[float] = ..., requests_per_second: _Optional[float] = ..., read_ops_per_second: _Optional[float] = ..., write_ops_per_second: _Optional[float] = ..., read_bytes_per_second: _Optional[float] = ..., write_bytes_per_second: _Optional[float] = ..., latency_p50_seconds: _Optional[float] = ..., latency_p99_seconds: _Optional[float] = ..., requests_total: _Optional[int] = ..., read_bytes_total: _Optional[int] = ..., written_bytes_total: _Optional[int] = ...) -> None: ...
