import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from galleonfs.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackupTarget(_message.Message):
    __slots__ = ("name", "url", "endpoint", "region", "credentials_env", "key_env", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_ENV_FIELD_NUMBER: _ClassVar[int]
    KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    endpoint: str
    region: str
    credentials_env: str
    key_env: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., endpoint: _Optional[str] = ..., region: _Optional[str] = ..., credentials_env: _Optional[str] = ..., key_env: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateBackupTargetRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: BackupTarget
    def __init__(self, target: _Optional[_Union[BackupTarget, _Mapping]] = ...) -> None: ...

class CreateBackupTargetResponse(_message.Message):
    __slots__ = ("target", "repository_created")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_CREATED_FIELD_NUMBER: _ClassVar[int]
    target: BackupTarget
    repository_created: bool
    def __init__(self, target: _Optional[_Union[BackupTarget, _Mapping]] = ..., repository_created: _Optional[bool] = ...) -> None: ...

class ListBackupTargetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackupTargetsResponse(_message.Message):
    __slots__ = ("targets",)
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[BackupTarget]
    def __init__(self, targets: _Optional[_Iterable[_Union[BackupTarget, _Mapping]]] = ...) -> None: ...

class DeleteBackupTargetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBackupTargetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Backup(_message.Message):
    __slots__ = ("id", "volume", "volume_id", "target", "snapshot", "generation", "time", "parent", "size_bytes", "used_bytes", "bytes_new", "records", "meta")
    class MetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_NEW_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    id: str
    volume: str
    volume_id: str
    target: str
    snapshot: str
    generation: int
    time: _timestamp_pb2.Timestamp
    parent: str
    size_bytes: int
    used_bytes: int
    bytes_new: int
    records: int
    meta: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., volume: _Optional[str] = ..., volume_id: _Optional[str] = ..., target: _Optional[str] = ..., snapshot: _Optional[str] = ..., generation: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parent: _Optional[str] = ..., size_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., bytes_new: _Optional[int] = ..., records: _Optional[int] = ..., meta: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BackupProgress(_message.Message):
    __slots__ = ("phase", "bytes_done", "bytes_total", "bytes_transferred", "rate_bytes_per_second", "eta_seconds", "done")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_TRANSFERRED_FIELD_NUMBER: _ClassVar[int]
    RATE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    phase: str
    bytes_done: int
    bytes_total: int
    bytes_transferred: int
    rate_bytes_per_second: float
    eta_seconds: float
    done: bool
    def __init__(self, phase: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., bytes_transferred: _Optional[int] = ..., rate_bytes_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., done: _Optional[bool] = ...) -> None: ...

class VerifyReport(_message.Message):
    __slots__ = ("ok", "problems", "backups", "packs", "blobs", "bytes_read")
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    PACKS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    backups: int
    packs: int
    blobs: int
    bytes_read: int
    def __init__(self, ok: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., backups: _Optional[int] = ..., packs: _Optional[int] = ..., blobs: _Optional[int] = ..., bytes_read: _Optional[int] = ...) -> None: ...

class BackupEvent(_message.Message):
    __slots__ = ("progress", "backup", "volume", "report")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    progress: BackupProgress
    backup: Backup
    volume: _types_pb2.Volume
    report: VerifyReport
    def __init__(self, progress: _Optional[_Union[BackupProgress, _Mapping]] = ..., backup: _Optional[_Union[Backup, _Mapping]] = ..., volume: _Optional[_Union[_types_pb2.Volume, _Mapping]] = ..., report: _Optional[_Union[VerifyReport, _Mapping]] = ...) -> None: ...

class CreateBackupRequest(_message.Message):
    __slots__ = ("volume", "target", "snapshot")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    volume: str
    target: str
    snapshot: str
    def __init__(self, volume: _Optional[str] = ..., target: _Optional[str] = ..., snapshot: _Optional[str] = ...) -> None: ...

class GetBackupRequest(_message.Message):
    __slots__ = ("backup",)
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    backup: str
    def __init__(self, backup: _Optional[str] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ("volume", "target")
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    volume: str
    target: str
    def __init__(self, volume: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups",)
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[Backup]
    def __init__(self, backups: _Optional[_Iterable[_Union[Backup, _Mapping]]] = ...) -> None: ...

class DeleteBackupRequest(_message.Message):
    __slots__ = ("backup",)
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    backup: str
    def __init__(self, backup: _Optional[str] = ...) -> None: ...

class DeleteBackupResponse(_message.Message):
    __slots__ = ("backup", "freed_bytes", "gc_error")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GC_ERROR_FIELD_NUMBER: _ClassVar[int]
    backup: Backup
    freed_bytes: int
    gc_error: str
    def __init__(self, backup: _Optional[_Union[Backup, _Mapping]] = ..., freed_bytes: _Optional[int] = ..., gc_error: _Optional[str] = ...) -> None: ...

class RestoreBackupRequest(_message.Message):
    __slots__ = ("backup", "name", "storage_class")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    backup: str
    name: str
    storage_class: str
    def __init__(self, backup: _Optional[str] = ..., name: _Optional[str] = ..., storage_class: _Optional[str] = ...) -> None: ...

class VerifyBackupsRequest(_message.Message):
    __slots__ = ("target", "deep")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    target: str
    deep: bool
    def __init__(self, target: _Optional[str] = ..., deep: _Optional[bool] = ...) -> None: ...

class BackupPolicy(_message.Message):
    __slots__ = ("name", "schedule", "target", "volume_selector", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "pre_hook", "post_hook", "hook_timeout_seconds", "created_at", "last_run", "next_run", "last_error")
    class VolumeSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VOLUME_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_DAILY_FIELD_NUMBER: _ClassVar[int]
    KEEP_WEEKLY_FIELD_NUMBER: _ClassVar[int]
    KEEP_MONTHLY_FIELD_NUMBER: _ClassVar[int]
    PRE_HOOK_FIELD_NUMBER: _ClassVar[int]
    POST_HOOK_FIELD_NUMBER: _ClassVar[int]
    HOOK_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    schedule: str
    target: str
    volume_selector: _containers.ScalarMap[str, str]
    keep_last: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    pre_hook: str
    post_hook: str
    hook_timeout_seconds: float
    created_at: _timestamp_pb2.Timestamp
    last_run: _timestamp_pb2.Timestamp
    next_run: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, name: _Optional[str] = ..., schedule: _Optional[str] = ..., target: _Optional[str] = ..., volume_selector: _Optional[_Mapping[str, str]] = ..., keep_last: _Optional[int] = ..., keep_daily: _Optional[int] = ..., keep_weekly: _Optional[int] = ..., keep_monthly: _Optional[int] = ..., pre_hook: _Optional[str] = ..., post_hook: _Optional[str] = ..., hook_timeout_seconds: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_run: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class CreateBackupPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: BackupPolicy
    def __init__(self, policy: _Optional[_Union[BackupPolicy, _Mapping]] = ...) -> None: ...

class ListBackupPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackupPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[BackupPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[BackupPolicy, _Mapping]]] = ...) -> None: ...

class DeleteBackupPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBackupPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
