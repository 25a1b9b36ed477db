import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VolumeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOLUME_TYPE_UNSPECIFIED: _ClassVar[VolumeType]
    EPHEMERAL: _ClassVar[VolumeType]
    PERSISTENT: _ClassVar[VolumeType]
    SHARED: _ClassVar[VolumeType]

class VolumeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOLUME_STATE_UNSPECIFIED: _ClassVar[VolumeState]
    PROVISIONING: _ClassVar[VolumeState]
    AVAILABLE: _ClassVar[VolumeState]
    MOUNTED: _ClassVar[VolumeState]
    EXPANDING: _ClassVar[VolumeState]
    DELETING: _ClassVar[VolumeState]
    FAILED: _ClassVar[VolumeState]

class AccessMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_MODE_UNSPECIFIED: _ClassVar[AccessMode]
    READ_WRITE_ONCE: _ClassVar[AccessMode]
    READ_ONLY_MANY: _ClassVar[AccessMode]
    READ_WRITE_MANY: _ClassVar[AccessMode]

class ReclaimPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECLAIM_POLICY_UNSPECIFIED: _ClassVar[ReclaimPolicy]
    DELETE: _ClassVar[ReclaimPolicy]
    RETAIN: _ClassVar[ReclaimPolicy]

class VolumeBindingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOLUME_BINDING_MODE_UNSPECIFIED: _ClassVar[VolumeBindingMode]
    IMMEDIATE: _ClassVar[VolumeBindingMode]
    WAIT_FOR_FIRST_CONSUMER: _ClassVar[VolumeBindingMode]
VOLUME_TYPE_UNSPECIFIED: VolumeType
EPHEMERAL: VolumeType
PERSISTENT: VolumeType
SHARED: VolumeType
VOLUME_STATE_UNSPECIFIED: VolumeState
PROVISIONING: VolumeState
AVAILABLE: VolumeState
MOUNTED: VolumeState
EXPANDING: VolumeState
DELETING: VolumeState
FAILED: VolumeState
ACCESS_MODE_UNSPECIFIED: AccessMode
READ_WRITE_ONCE: AccessMode
READ_ONLY_MANY: AccessMode
READ_WRITE_MANY: AccessMode
RECLAIM_POLICY_UNSPECIFIED: ReclaimPolicy
DELETE: ReclaimPolicy
RETAIN: ReclaimPolicy
VOLUME_BINDING_MODE_UNSPECIFIED: VolumeBindingMode
IMMEDIATE: VolumeBindingMode
WAIT_FOR_FIRST_CONSUMER: VolumeBindingMode

class MountPoint(_message.Message):
    __slots__ = ("path", "read_only", "mounted_at", "snapshot")
    PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    MOUNTED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    path: str
    read_only: bool
    mounted_at: _timestamp_pb2.Timestamp
    snapshot: str
    def __init__(self, path: _Optional[str] = ..., read_only: _Optional[bool] = ..., mounted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[str] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("id", "name", "type", "state", "size_bytes", "access_modes", "storage_class", "labels", "created_at", "updated_at", "mount_points", "block_size_bytes", "message", "origin_volume", "origin_snapshot", "tenant")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_MODES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MOUNT_POINTS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_VOLUME_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: VolumeType
    state: VolumeState
    size_bytes: int
    access_modes: _containers.RepeatedScalarFieldContainer[AccessMode]
    storage_class: str
    labels: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    mount_points: _containers.RepeatedCompositeFieldContainer[MountPoint]
    block_size_bytes: int
    message: str
    origin_volume: str
    origin_snapshot: str
    tenant: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[VolumeType, str]] = ..., state: _Optional[_Union[VolumeState, str]] = ..., size_bytes: _Optional[int] = ..., access_modes: _Optional[_Iterable[_Union[AccessMode, str]]] = ..., storage_class: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mount_points: _Optional[_Iterable[_Union[MountPoint, _Mapping]]] = ..., block_size_bytes: _Optional[int] = ..., message: _Optional[str] = ..., origin_volume: _Optional[str] = ..., origin_snapshot: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class StorageClass(_message.Message):
    __slots__ = ("name", "parameters", "reclaim_policy", "volume_binding_mode", "builtin", "is_default", "created_at")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RECLAIM_POLICY_FIELD_NUMBER: _ClassVar[int]
    VOLUME_BINDING_MODE_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    parameters: _containers.ScalarMap[str, str]
    reclaim_policy: ReclaimPolicy
    volume_binding_mode: VolumeBindingMode
    builtin: bool
    is_default: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., reclaim_policy: _Optional[_Union[ReclaimPolicy, str]] = ..., volume_binding_mode: _Optional[_Union[VolumeBindingMode, str]] = ..., builtin: _Optional[bool] = ..., is_default: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
