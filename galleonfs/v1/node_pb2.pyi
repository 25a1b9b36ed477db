import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetNodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "hostname", "version", "data_dir", "listen", "started_at", "capacity_bytes", "available_bytes", "provisioned_bytes", "volumes_by_state", "mount_workers_up", "mount_workers_expected", "ready", "problems", "metrics_url")
    class VolumesByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROVISIONED_BYTES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    MOUNT_WORKERS_UP_FIELD_NUMBER: _ClassVar[int]
    MOUNT_WORKERS_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    METRICS_URL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    version: str
    data_dir: str
    listen: _containers.RepeatedScalarFieldContainer[str]
    started_at: _timestamp_pb2.Timestamp
    capacity_bytes: int
    available_bytes: int
    provisioned_bytes: int
    volumes_by_state: _containers.ScalarMap[str, int]
    mount_workers_up: int
    mount_workers_expected: int
    ready: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    metrics_url: str
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., data_dir: _Optional[str] = ..., listen: _Optional[_Iterable[str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., capacity_bytes: _Optional[int] = ..., available_bytes: _Optional[int] = ..., provisioned_bytes: _Optional[int] = ..., volumes_by_state: _Optional[_Mapping[str, int]] = ..., mount_workers_up: _Optional[int] = ..., mount_workers_expected: _Optional[int] = ..., ready: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., metrics_url: _Optional[str] = ...) -> None: ...
