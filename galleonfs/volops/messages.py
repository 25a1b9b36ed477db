"""The volume operations' requests and replies: frozen dataclasses, one pair per operation.

A request class names its reply class as its type parameter (``SnapshotCreate`` is a
``VolumeRequest[SnapshotInfo]``), so ``await ops.run(SnapshotCreate("daily"))`` is typed
``SnapshotInfo`` wherever it runs: in the mount worker of a mounted volume, or in a helper
process that opens an unmounted one (``protocol.VolumeOps``). Both channels carry exactly
these classes, serialized by one codec (``codec.py``); the one implementation is
``local.EngineOps``.

Adding an operation: a request class here (its ``op`` name, its reply type, and whether it
only reads or touches every block), and one handler method in ``local.EngineOps``. Nothing
else: the transports are generic.

What it must not do: import anything that opens a volume. The daemon imports this module;
only the helper and the mount worker import ``local``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

from ..qos.policy import WorkerRates

R = TypeVar("R")

# Every request class by its ``op`` name: what a decoder may build from bytes it was sent.
REQUESTS: dict[str, type[Request[Any]]] = {}


class Request(Generic[R]):
    """A request whose answer is an ``R``. Subclasses are frozen dataclasses."""

    op: ClassVar[str]
    reply_type: ClassVar[type[Any]]
    read_only: ClassVar[bool] = False   # opened read-only offline (a volume marked for check too)
    bulk: ClassVar[bool] = False        # touches every block: the long timeout offline

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Request):
                (reply,) = get_args(base)
                if isinstance(reply, type):
                    cls.reply_type = reply
        if "op" in cls.__dict__:
            assert cls.op not in REQUESTS, f"two requests named {cls.op}"
            assert isinstance(getattr(cls, "reply_type", None), type), f"{cls.__name__} names no reply"
            REQUESTS[cls.op] = cls


class VolumeRequest(Request[R]):
    """An operation on one volume, answered wherever its engine is open (``VolumeOps``)."""


class CatalogRequest(Request[R]):
    """A helper job on the node catalog (it maps the file, so it never runs in galleond)."""


# --- replies -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    """An operation that answers nothing but its success."""


@dataclass(frozen=True)
class WorkerInfo:
    pid: int                 # the process that has the engine open (0: a helper)
    volume_id: str
    mountpoint: str          # "" when not mounted


@dataclass(frozen=True)
class SpaceState:
    """The volume's view of the host disk under it (``engine/space.py``)."""

    full: str = ""                   # why it refuses writes that need space; "" when it does not
    reserve_released: bool = False
    enospc_total: int = 0
    last_enospc: float = 0.0         # time.time() of the last refused write; 0: never
    disk: str = ""
    free_bytes: int = 0


@dataclass(frozen=True)
class VolumeStats:
    """What ``volume stats`` shows, built in one place (``EngineOps.stats``)."""

    size: int
    used_bytes: int
    inodes_used: int
    inodes_total: int
    generation: int
    # Why the volume must not be trusted as it is: the failsafe it entered, else the reason
    # it is marked for check; "" when neither.
    failsafe: str
    read_only: bool                  # mounted read-only (ReadOnlyMany)
    mounted: bool
    pid: int                         # the mount worker's (0 when not mounted)
    counters: dict[str, int] = field(default_factory=dict)
    fuse_errors: dict[str, int] = field(default_factory=dict)   # errno (as text) -> count
    commits: int = 0
    rates: dict[str, float] = field(default_factory=dict)      # recent rates; {} when not measured
    space: SpaceState = field(default_factory=SpaceState)


@dataclass(frozen=True)
class Fencing:
    """The primary term a mount serves under (cluster mode, ``vfs/fence.py``)."""

    epoch: int
    deadline: float                  # time.monotonic() past which it acknowledges nothing
    fenced: str                      # why it is fenced; "" while it serves


@dataclass(frozen=True)
class Resized:
    size: int


@dataclass(frozen=True)
class Committed:
    durable_lsn: int


@dataclass(frozen=True)
class Checkpointed:
    applied_lsn: int


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    id: str
    generation: int
    created_ns: int
    logical_bytes: int
    inodes: int
    freeable_bytes: int              # computed when asked: what deleting it would free now
    holds: tuple[str, ...] = ()      # clones (their volume ids) that depend on it


@dataclass(frozen=True)
class Snapshots:
    snapshots: tuple[SnapshotInfo, ...]


@dataclass(frozen=True)
class Freed:
    freed_bytes: int


@dataclass(frozen=True)
class Change:
    kind: str                # "+" created, "-" deleted, "M" modified, "R" renamed
    path: str
    new_path: str = ""
    type: str = ""           # "file", "dir", "symlink", "other"


@dataclass(frozen=True)
class Diff:
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Restored:
    changed: int             # records put back


@dataclass(frozen=True)
class Cloned:
    volume_id: str


@dataclass(frozen=True)
class Flattened:
    origin_volume: str
    origin_snapshot: str
    copied_bytes: int


@dataclass(frozen=True)
class Rekeyed:
    epoch: int


@dataclass(frozen=True)
class QosState:
    """The rates a worker enforces now, and its counters (the daemon's demand estimate)."""

    rates: WorkerRates
    requests: int
    bytes: int
    throttled_s: float


@dataclass(frozen=True)
class Description:
    """A volume's own super record: what ``galleond recover-catalog`` rebuilds an entry from."""

    volume_id: str
    name: str
    size: int
    block_size: int
    encrypted: bool
    created_ns: int
    origin_volume_dir: str = ""
    origin_snapshot: str = ""
    note: str = ""           # why some fields may be stale ("" when read from an open engine)


@dataclass(frozen=True)
class Exported:
    """A snapshot's records in a spool file (``engine/export.py``), for a backup."""

    generation: int
    records: int
    used_bytes: int
    size: int
    block_size: int
    encrypted: bool


@dataclass(frozen=True)
class BlocksExported:
    blocks: int
    bytes: int


@dataclass(frozen=True)
class Loaded:
    stored: tuple[tuple[bytes, bytes], ...]     # (block id in the backup, id in this volume)


@dataclass(frozen=True)
class CatalogSummary:
    node_id: str
    volumes: tuple[str, ...]
    records: dict[str, int]          # database name -> record count


@dataclass(frozen=True)
class CatalogRecords:
    node_id: str
    volumes: tuple[str, ...]
    records: dict[str, int]
    dbs: dict[str, dict[str, str]]   # base64 database name -> base64 key -> base64 value


# --- volume requests ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Ping(VolumeRequest[WorkerInfo]):
    op = "ping"
    read_only = True


@dataclass(frozen=True)
class Stats(VolumeRequest[VolumeStats]):
    op = "stats"
    read_only = True


@dataclass(frozen=True)
class Space(VolumeRequest[SpaceState]):
    op = "space"
    read_only = True


@dataclass(frozen=True)
class Resize(VolumeRequest[Resized]):
    op = "resize"
    size: int


@dataclass(frozen=True)
class Commit(VolumeRequest[Committed]):
    op = "commit"


@dataclass(frozen=True)
class Checkpoint(VolumeRequest[Checkpointed]):
    op = "checkpoint"


@dataclass(frozen=True)
class SnapshotCreate(VolumeRequest[SnapshotInfo]):
    op = "snapshot_create"
    name: str


@dataclass(frozen=True)
class SnapshotDelete(VolumeRequest[Freed]):
    op = "snapshot_delete"
    name: str


@dataclass(frozen=True)
class SnapshotList(VolumeRequest[Snapshots]):
    op = "snapshot_list"
    read_only = True


@dataclass(frozen=True)
class SnapshotDiff(VolumeRequest[Diff]):
    op = "snapshot_diff"
    read_only = True
    old: str
    new: str | None = None           # None: the live tree


@dataclass(frozen=True)
class SnapshotRelease(VolumeRequest[Done]):
    """A clone (``clone_id``) no longer depends on snapshot ``name`` of this volume."""

    op = "snapshot_release"
    name: str
    clone_id: str


@dataclass(frozen=True)
class SnapshotRestore(VolumeRequest[Restored]):
    op = "snapshot_restore"
    bulk = True
    name: str


@dataclass(frozen=True)
class Clone(VolumeRequest[Cloned]):
    """Make ``target_dir`` a clone of this volume at ``snapshot``."""

    op = "clone"
    bulk = True
    snapshot: str
    target_dir: str
    clone_id: str
    name: str
    size: int = 0                    # 0: the origin's size


@dataclass(frozen=True)
class Flatten(VolumeRequest[Flattened]):
    op = "flatten"
    bulk = True


@dataclass(frozen=True)
class Rekey(VolumeRequest[Rekeyed]):
    op = "rekey"
    bulk = True


@dataclass(frozen=True)
class SetQos(VolumeRequest[QosState]):
    """Enforce ``rates`` from now on (None: no limit)."""

    op = "qos"
    rates: WorkerRates | None = None


@dataclass(frozen=True)
class PrimaryTerm(VolumeRequest[Fencing]):
    """Cluster mode: acknowledge changes until ``deadline`` (time.monotonic(), one clock
    for every process on the host) under ``epoch``; ``deadline`` 0 fences now."""

    op = "primary_term"
    epoch: int = 0
    deadline: float = 0.0


@dataclass(frozen=True)
class Describe(VolumeRequest[Description]):
    op = "describe"
    read_only = True


@dataclass(frozen=True)
class BackupExport(VolumeRequest[Exported]):
    """Write snapshot ``snapshot``'s records (only those changed since snapshot ``since``,
    when given) to ``path``, a spool file the daemon named from ids."""

    op = "backup_export"
    read_only = True
    bulk = True
    snapshot: str
    path: str
    since: str | None = None


@dataclass(frozen=True)
class BackupBlocks(VolumeRequest[BlocksExported]):
    """Write the plaintext of the blocks listed in ``ids_path`` to ``out_path``."""

    op = "backup_blocks"
    read_only = True
    bulk = True
    snapshot: str
    ids_path: str
    out_path: str


@dataclass(frozen=True)
class BackupLoad(VolumeRequest[Loaded]):
    """Load restored records and blocks (spool files) into this new, unmounted volume."""

    op = "backup_load"
    bulk = True
    records_path: str
    blocks_path: str
    known_path: str                  # blocks stored by earlier loads: [backup id, volume id]
    first: bool = False


# --- catalog jobs (helper only) -------------------------------------------------------------------
@dataclass(frozen=True)
class CheckCatalog(CatalogRequest[CatalogSummary]):
    op = "catalog_check"
    read_only = True
    path: str


@dataclass(frozen=True)
class DumpCatalog(CatalogRequest[CatalogRecords]):
    op = "catalog_dump"
    read_only = True
    path: str
