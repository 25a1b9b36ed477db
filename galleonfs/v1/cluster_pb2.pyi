from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterNode(_message.Message):
    __slots__ = ("name", "zone", "rack", "address", "capacity_bytes", "free_bytes", "state", "peer_reachable", "peer_problem", "peer_rtt_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PEER_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    PEER_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    PEER_RTT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    zone: str
    rack: str
    address: str
    capacity_bytes: int
    free_bytes: int
    state: str
    peer_reachable: bool
    peer_problem: str
    peer_rtt_ms: float
    def __init__(self, name: _Optional[str] = ..., zone: _Optional[str] = ..., rack: _Optional[str] = ..., address: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., state: _Optional[str] = ..., peer_reachable: _Optional[bool] = ..., peer_problem: _Optional[str] = ..., peer_rtt_ms: _Optional[float] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("etcd_url", "this_node", "nodes", "problem")
    ETCD_URL_FIELD_NUMBER: _ClassVar[int]
    THIS_NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    etcd_url: str
    this_node: str
    nodes: _containers.RepeatedCompositeFieldContainer[ClusterNode]
    problem: str
    def __init__(self, etcd_url: _Optional[str] = ..., this_node: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[ClusterNode, _Mapping]]] = ..., problem: _Optional[str] = ...) -> None: ...

class CordonNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class UncordonNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class GetPlacementRequest(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: str
    def __init__(self, volume: _Optional[str] = ...) -> None: ...

class VolumePlacement(_message.Message):
    __slots__ = ("volume", "volume_id", "replicas", "nodes", "primary", "epoch", "missing", "note", "lease_holder")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    LEASE_HOLDER_FIELD_NUMBER: _ClassVar[int]
    volume: str
    volume_id: str
    replicas: int
    nodes: _containers.RepeatedScalarFieldContainer[str]
    primary: str
    epoch: int
    missing: int
    note: str
    lease_holder: str
    def __init__(self, volume: _Optional[str] = ..., volume_id: _Optional[str] = ..., replicas: _Optional[int] = ..., nodes: _Optional[_Iterable[str]] = ..., primary: _Optional[str] = ..., epoch: _Optional[int] = ..., missing: _Optional[int] = ..., note: _Optional[str] = ..., lease_holder: _Optional[str] = ...) -> None: ...
