"""The node's data model: volumes and storage classes, their validation and their states.

Plain dataclasses with JSON round trips (the catalog stores JSON), checked on the way in:
a name that breaks DNS-label rules, an unknown storage-class parameter, a state change the
table below does not allow: each is a ``GalleonError`` with one sentence saying what to do.

What it must not do: I/O. The managers load and store these through the catalog.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import limits, names
from ..errors import FailedPrecondition, InvalidArgument
from ..units import format_size, parse_size


class VolumeType(enum.StrEnum):
    EPHEMERAL = "ephemeral"
    PERSISTENT = "persistent"
    SHARED = "shared"


class VolumeState(enum.StrEnum):
    PROVISIONING = "provisioning"
    AVAILABLE = "available"
    MOUNTED = "mounted"
    EXPANDING = "expanding"
    DELETING = "deleting"
    FAILED = "failed"


class AccessMode(enum.StrEnum):
    RWO = "ReadWriteOnce"
    ROX = "ReadOnlyMany"
    RWX = "ReadWriteMany"

    @classmethod
    def parse(cls, text: str) -> AccessMode:
        key = text.strip().lower().replace("-", "").replace("_", "")
        for mode in cls:
            if key in (mode.value.lower(), mode.name.lower()):
                return mode
        raise InvalidArgument(f"unknown access mode {text!r}: use ReadWriteOnce (RWO), "
                              f"ReadOnlyMany (ROX) or ReadWriteMany (RWX)")


class ReclaimPolicy(enum.StrEnum):
    DELETE = "delete"
    RETAIN = "retain"


class BindingMode(enum.StrEnum):
    IMMEDIATE = "Immediate"
    WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"


# Which state may follow which (DESIGN: "only legal transitions").
TRANSITIONS: dict[VolumeState, frozenset[VolumeState]] = {
    VolumeState.PROVISIONING: frozenset({VolumeState.AVAILABLE, VolumeState.FAILED}),
    VolumeState.AVAILABLE: frozenset({VolumeState.MOUNTED, VolumeState.EXPANDING,
                                      VolumeState.DELETING, VolumeState.FAILED}),
    VolumeState.MOUNTED: frozenset({VolumeState.AVAILABLE, VolumeState.EXPANDING,
                                    VolumeState.DELETING, VolumeState.FAILED}),
    VolumeState.EXPANDING: frozenset({VolumeState.AVAILABLE, VolumeState.MOUNTED,
                                      VolumeState.FAILED}),
    VolumeState.FAILED: frozenset({VolumeState.AVAILABLE, VolumeState.MOUNTED,
                                   VolumeState.DELETING}),
    VolumeState.DELETING: frozenset(),
}

# One source of truth for names: ``galleonfs.names`` (anchored patterns, bounded lengths).
_KINDS = {k.what: k for k in (names.VOLUME, names.STORAGE_CLASS, names.SNAPSHOT_POLICY, names.QOS_POLICY)}


def check_name(name: str, what: str = "volume") -> str:
    return names.check(name, _KINDS[what])


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    return names.check_labels(labels)


def now_ns() -> int:
    return time.time_ns()


@dataclass
class MountPoint:
    path: str
    read_only: bool = False
    mounted_at_ns: int = 0
    snapshot: str = ""          # set when the mount point shows one snapshot of the volume
    # The mount GalleonFS made there (workers/mounts.py): unmount acts on it only. 0 in
    # catalogs written before ids were recorded (unmount then checks the path's mount).
    mount_id: int = 0           # as in /proc/self/mountinfo
    mount_unique_id: int = 0    # statx STATX_MNT_ID_UNIQUE (never reused); 0 if unknown


@dataclass
class Volume:
    id: str
    name: str
    size: int
    storage_class: str
    type: VolumeType = VolumeType.PERSISTENT
    state: VolumeState = VolumeState.PROVISIONING
    access_modes: list[AccessMode] = field(default_factory=lambda: [AccessMode.RWO])
    labels: dict[str, str] = field(default_factory=dict)
    block_size: int = limits.block_size_default_bytes
    created_ns: int = field(default_factory=now_ns)
    updated_ns: int = field(default_factory=now_ns)
    mount_points: list[MountPoint] = field(default_factory=list)
    message: str = ""
    origin_volume: str = ""     # a clone: the volume id and snapshot it shares blocks with
    origin_snapshot: str = ""
    tenant: str = ""            # the tenant it belongs to ("" = none; managers/tenancy.py)

    def move_to(self, state: VolumeState, message: str = "") -> None:
        if state != self.state and state not in TRANSITIONS[self.state]:
            raise FailedPrecondition(
                f"volume {self.name} is {self.state.value} and cannot become {state.value}"
            )
        self.state = state
        self.message = message
        self.updated_ns = now_ns()

    @property
    def writable_modes(self) -> bool:
        return AccessMode.RWO in self.access_modes or AccessMode.RWX in self.access_modes

    def mount_point(self, path: str) -> MountPoint | None:
        return next((m for m in self.mount_points if m.path == path), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.type.value
        data["state"] = self.state.value
        data["access_modes"] = [m.value for m in self.access_modes]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Volume:
        data = dict(data)
        data["type"] = VolumeType(data["type"])
        data["state"] = VolumeState(data["state"])
        data["access_modes"] = [AccessMode(m) for m in data["access_modes"]]
        data["mount_points"] = [MountPoint(**m) for m in data["mount_points"]]
        return cls(**data)

    @property
    def writers(self) -> list[str]:
        return [m.path for m in self.mount_points if not m.read_only]


@dataclass
class SnapshotPolicy:
    """Take a snapshot of every matching volume on a cron schedule; keep the newest N."""

    name: str
    schedule: str
    retention: int
    selector: dict[str, str] = field(default_factory=dict)
    created_ns: int = field(default_factory=now_ns)
    last_run_ns: int = 0
    last_error: str = ""

    def validate(self) -> SnapshotPolicy:
        check_name(self.name, "snapshot policy")
        check_labels(self.selector)
        names.check_text(self.schedule, "schedule", max_bytes=limits.schedule_max_chars)
        fields = self.schedule.split()
        if len(fields) not in (5, 6):
            raise InvalidArgument(f"invalid schedule {names.quote(self.schedule)}: use cron's five fields "
                                  f"(minute hour day month weekday), or six with seconds last")
        from croniter import croniter

        if not croniter.is_valid(self.schedule):
            raise InvalidArgument(f"invalid schedule {names.quote(self.schedule)}: not a cron expression")
        if not 1 <= self.retention <= 10000:
            raise InvalidArgument(f"retention must be from 1 to 10000, not {self.retention}")
        return self

    def next_run_ns(self, after_ns: int) -> int:
        from croniter import croniter

        return int(croniter(self.schedule, after_ns / 1e9).get_next(float) * 1e9)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotPolicy:
        return cls(**data)


# --- storage classes ---------------------------------------------------------------------------
def _block_size(value: str) -> str:
    size = parse_size(value, what="block size")
    if not limits.block_size_min_bytes <= size <= limits.block_size_max_bytes or size & (size - 1):
        raise InvalidArgument(f"block_size {names.quote(value)} must be a power of two from 4K to 1M")
    return format_size(size)


def _choice(*allowed: str) -> Any:
    def check(value: str) -> str:
        if value.lower() not in allowed:
            raise InvalidArgument(f"must be one of {', '.join(allowed)}, not {names.quote(value)}")
        return value.lower()
    return check


def _replication(value: str) -> str:
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise InvalidArgument(f"replication_factor must be a whole number from 1 to 5, not {names.quote(value)}")
    return value


# Known parameters, with their validators. Later issues give some of them effect; until
# then a value other than the default is refused at volume creation (see ``unsupported``).
PARAMETERS: dict[str, Any] = {
    "block_size": _block_size,
    "replication_factor": _replication,
    "encryption": _choice("none", "aes-256-gcm"),
    "compression": _choice("none", "lz4", "zstd"),
    "dedup": _choice("on", "off"),
    "write_concern": _choice("acknowledged", "durable", "replicated", "distributed"),
}
SUPPORTED_NOW = {"replication_factor": {"1"}, "write_concern": {"acknowledged", "durable"}}


@dataclass
class StorageClass:
    name: str
    parameters: dict[str, str] = field(default_factory=dict)
    reclaim_policy: ReclaimPolicy = ReclaimPolicy.DELETE
    binding_mode: BindingMode = BindingMode.IMMEDIATE
    builtin: bool = False
    is_default: bool = False
    created_ns: int = field(default_factory=now_ns)

    def validate(self) -> StorageClass:
        check_name(self.name, "storage class")
        clean = {}
        for key, value in self.parameters.items():
            check = PARAMETERS.get(key)
            if check is None:
                raise InvalidArgument(
                    f"unknown storage class parameter {names.quote(key)}; known parameters: "
                    f"{', '.join(sorted(PARAMETERS))}"
                )
            try:
                clean[key] = check(str(value))
            except InvalidArgument as exc:
                raise InvalidArgument(f"storage class parameter {key}: {exc}") from None
        self.parameters = clean
        return self

    def unsupported(self) -> list[str]:
        """Parameters whose value this version cannot honour yet (never silently ignored)."""
        return [f"{k}={v}" for k, v in self.parameters.items()
                if k in SUPPORTED_NOW and v not in SUPPORTED_NOW[k]]

    @property
    def block_size(self) -> int:
        return parse_size(self.parameters.get("block_size", "64K"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reclaim_policy"] = self.reclaim_policy.value
        data["binding_mode"] = self.binding_mode.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StorageClass:
        data = dict(data)
        data["reclaim_policy"] = ReclaimPolicy(data["reclaim_policy"])
        data["binding_mode"] = BindingMode(data["binding_mode"])
        return cls(**data)


BUILTIN_CLASSES = (
    StorageClass("local", {"block_size": "64K"}, builtin=True, is_default=True),
    StorageClass("encrypted", {"block_size": "64K", "encryption": "aes-256-gcm"}, builtin=True),
)
