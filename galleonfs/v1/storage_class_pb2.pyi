from galleonfs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateStorageClassRequest(_message.Message):
    __slots__ = ("storage_class",)
    STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    storage_class: _types_pb2.StorageClass
    def __init__(self, storage_class: _Optional[_Union[_types_pb2.StorageClass, _Mapping]] = ...) -> None: ...

class GetStorageClassRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListStorageClassesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStorageClassesResponse(_message.Message):
    __slots__ = ("storage_classes",)
    STORAGE_CLASSES_FIELD_NUMBER: _ClassVar[int]
    storage_classes: _containers.RepeatedCompositeFieldContainer[_types_pb2.StorageClass]
    def __init__(self, storage_classes: _Optional[_Iterable[_Union[_types_pb2.StorageClass, _Mapping]]] = ...) -> None: ...

class DeleteStorageClassRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteStorageClassResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
