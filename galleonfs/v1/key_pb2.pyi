from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RotateKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("volumes", "key_file", "previous_key_file")
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    KEY_FILE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_KEY_FILE_FIELD_NUMBER: _ClassVar[int]
    volumes: int
    key_file: str
    previous_key_file: str
    def __init__(self, volumes: _Optional[int] = ..., key_file: _Optional[str] = ..., previous_key_file: _Optional[str] = ...) -> None: ...

class RekeyVolumeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RekeyProgress(_message.Message):
    __slots__ = ("done", "total", "epoch")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    epoch: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...
