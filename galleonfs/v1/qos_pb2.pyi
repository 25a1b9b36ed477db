import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QosRates(_message.Message):
    __slots__ = ("iops", "throughput_mbps")
    IOPS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_MBPS_FIELD_NUMBER: _ClassVar[int]
    iops: float
    throughput_mbps: float
    def __init__(self, iops: _Optional[float] = ..., throughput_mbps: _Optional[float] = ...) -> None: ...

class QosBurst(_message.Message):
    __slots__ = ("enabled", "duration_seconds", "iops_multiplier", "throughput_multiplier")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IOPS_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    duration_seconds: float
    iops_multiplier: float
    throughput_multiplier: float
    def __init__(self, enabled: _Optional[bool] = ..., duration_seconds: _Optional[float] = ..., iops_multiplier: _Optional[float] = ..., throughput_multiplier: _Optional[float] = ...) -> None: ...

class QosPolicy(_message.Message):
    __slots__ = ("name", "limits", "guarantees", "burstable", "volumes", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    GUARANTEES_FIELD_NUMBER: _ClassVar[int]
    BURSTABLE_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: QosRates
    guarantees: QosRates
    burstable: QosBurst
    volumes: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Union[QosRates, _Mapping]] = ..., guarantees: _Optional[_Union[QosRates, _Mapping]] = ..., burstable: _Optional[_Union[QosBurst, _Mapping]] = ..., volumes: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateQosPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: QosPolicy
    def __init__(self, policy: _Optional[_Union[QosPolicy, _Mapping]] = ...) -> None: ...

class UpdateQosPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: QosPolicy
    def __init__(self, policy: _Optional[_Union[QosPolicy, _Mapping]] = ...) -> None: ...

class GetQosPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListQosPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQosPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[QosPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[QosPolicy, _Mapping]]] = ...) -> None: ...

class DeleteQosPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteQosPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AssignQosPolicyRequest(_message.Message):
    __slots__ = ("policy", "volume")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    policy: str
    volume: str
    def __init__(self, policy: _Optional[str] = ..., volume: _Optional[str] = ...) -> None: ...

class AssignQosPolicyResponse(_message.Message):
    __slots__ = ("volume", "policy", "previous_policy")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_POLICY_FIELD_NUMBER: _ClassVar[int]
    volume: str
    policy: str
    previous_policy: str
    def __init__(self, volume: _Optional[str] = ..., policy: _Optional[str] = ..., previous_policy: _Optional[str] = ...) -> None: ...
