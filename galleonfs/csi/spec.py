"""What the CSI specification asks of every request, checked in one place, and how CSI's
names map onto GalleonFS's.

Pure functions over the generated messages: no call to galleond and no gRPC status here.
A failed check raises ``CsiError`` with the status code the specification names for it
(INVALID_ARGUMENT for a missing or malformed field, OUT_OF_RANGE for a capacity range the
driver cannot meet, ...) and one sentence saying what is wrong and what to do.

Names. A CSI volume name is any string of up to 128 characters; a GalleonFS volume name is
a DNS label. A name that is already a DNS label is used as it is (Kubernetes' ``pvc-<uuid>``
is one); any other becomes ``csi-`` and 40 hex digits of its SHA-256, so the same CSI name
always lands on the same volume (idempotency by name). The CSI ``volume_id`` is the volume's
GalleonFS id (a UUID), so an id never names a later volume that reused a name. A snapshot id
is ``<volume id>@<snapshot name>`` ('@' appears in neither).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .. import limits, names
from ..errors import InvalidArgument
from .v1 import csi_pb2

Mode = csi_pb2.VolumeCapability.AccessMode.Mode

DRIVER_NAME = "csi.galleonfs.io"
TOPOLOGY_KEY = "topology.galleonfs.io/node"
# Labels on the volumes the driver creates: ListVolumes lists those only, never an
# operator's own volumes on the same node.
MANAGED_LABEL = "csi.galleonfs.io/managed"
# Without a capacity range the volume gets this size (the spec lets the plugin choose).
DEFAULT_SIZE_BYTES = 1 << 30
# Storage-class parameters that become a GalleonFS storage class (names.py's known keys).
CLASS_PARAMETERS = frozenset({"block_size", "replication_factor", "encryption", "compression",
                              "dedup", "write_concern"})
CLASS_PARAMETER = "storage_class"       # or: name an existing GalleonFS storage class
# Keys the external-provisioner adds itself (PVC name and namespace with
# --extra-create-metadata); they never choose anything here.
K8S_PREFIX = "csi.storage.k8s.io/"
FS_TYPES = frozenset({"", "galleonfs", "fuse.galleonfs"})
READER_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})
SUPPORTED_MODES = frozenset({Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_READER_ONLY,
                             Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER,
                             Mode.MULTI_NODE_MULTI_WRITER, Mode.SINGLE_NODE_SINGLE_WRITER,
                             Mode.SINGLE_NODE_MULTI_WRITER})
_UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class CsiError(Exception):
    """A request the driver answers with ``code`` (a ``grpc.StatusCode`` name) and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CsiError:
    return CsiError("INVALID_ARGUMENT", message)


def required(value: str, field: str) -> str:
    """A REQUIRED string field: present, bounded, printable."""
    if not value:
        raise invalid(f"{field} is missing: the CSI specification requires it")
    try:
        names.check_text(value, field, max_bytes=limits.path_max_bytes)
    except InvalidArgument as exc:
        raise invalid(str(exc)) from None
    return value


# The characters the specification bans from names (control characters other than the
# common whitespace \t, \n and \r).
_BANNED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def csi_name(value: str, field: str = "name") -> str:
    """A REQUIRED CO-chosen name (CreateVolume's, CreateSnapshot's): any Unicode string but
    the banned control characters, within the size limit. It is only ever hashed or matched
    against GalleonFS's name rules, never used as it is."""
    if not value:
        raise invalid(f"{field} is missing: the CSI specification requires it")
    if len(value.encode()) > limits.path_max_bytes:
        raise invalid(f"{field} is {len(value.encode())} bytes long; use at most {limits.path_max_bytes}")
    banned = _BANNED.search(value)
    if banned:
        raise invalid(f"{field} {names.quote(value)} holds the control character "
                      f"U+{ord(banned.group()):04X}, which the CSI specification bans; remove it")
    return value


def path(value: str, field: str) -> str:
    """A path CSI hands over (staging or target path): absolute, no '.' or '..', no control
    characters. It is passed to galleond as it is (galleond opens it component by component
    under its mount roots); the driver never builds a path from request strings."""
    required(value, field)
    try:
        return names.check_path(value, field)
    except InvalidArgument as exc:
        raise invalid(str(exc)) from None


def volume_name(csi_name: str) -> str:
    """The GalleonFS volume name a CSI volume name maps to (see the module docstring)."""
    if len(csi_name) <= limits.dns_label_max_chars and names.VOLUME.pattern.match(csi_name):
        return csi_name
    return "csi-" + hashlib.sha256(csi_name.encode()).hexdigest()[:40]


def snapshot_name(csi_name: str) -> str:
    if len(csi_name) <= limits.snapshot_name_max_chars and names.SNAPSHOT.pattern.match(csi_name):
        return csi_name
    return "csi-" + hashlib.sha256(csi_name.encode()).hexdigest()[:40]


def could_be_volume(volume_id: str) -> bool:
    """Whether ``volume_id`` can name a GalleonFS volume at all (its id, or a name for a
    volume an operator made and handed to the orchestrator). Anything else names nothing:
    NOT_FOUND, as for an id that is well formed but gone."""
    return bool(_UUID.match(volume_id)) or (
        len(volume_id) <= limits.dns_label_max_chars and bool(names.VOLUME.pattern.match(volume_id)))


def snapshot_id(volume_id: str, name: str) -> str:
    return f"{volume_id}@{name}"


def split_snapshot_id(text: str) -> tuple[str, str] | None:
    """``(volume id, snapshot name)``, or None when ``text`` cannot be a snapshot id."""
    volume, at, name = text.partition("@")
    if not at or not could_be_volume(volume) or not names.SNAPSHOT.pattern.match(name) \
            or len(name) > limits.snapshot_name_max_chars:
        return None
    return volume, name


# --- capabilities ----------------------------------------------------------------------------------
def check_capability(cap: csi_pb2.VolumeCapability, field: str = "volume_capability") -> None:
    """A capability the driver can serve: a mount (never a block device) of a supported
    access mode, with a file system type and mount flags it knows."""
    kind = cap.WhichOneof("access_type")
    if kind == "block":
        raise invalid(f"{field}: the block access type is not supported: GalleonFS volumes are "
                      f"file systems; ask for a mount (in Kubernetes, volumeMode: Filesystem)")
    if kind != "mount":
        raise invalid(f"{field}: give an access type (mount); the CSI specification requires one")
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        raise invalid(f"{field}: the access mode is missing; the CSI specification requires one")
    if cap.access_mode.mode not in SUPPORTED_MODES:
        raise invalid(f"{field}: access mode {cap.access_mode.mode} is not known to this driver")
    if cap.mount.fs_type not in FS_TYPES:
        raise invalid(f"{field}: file system type {names.quote(cap.mount.fs_type)} is not supported: "
                      f"GalleonFS volumes are GalleonFS; leave fsType empty")
    for flag in cap.mount.mount_flags:
        if flag not in ("ro", "rw"):
            raise invalid(f"{field}: mount flag {names.quote(flag)} is not supported (only ro and rw); "
                          f"remove it from the storage class's mountOptions")


def check_capabilities(caps: Sequence[csi_pb2.VolumeCapability]) -> None:
    if not caps:
        raise invalid("volume_capabilities is missing: the CSI specification requires at least one")
    for i, cap in enumerate(caps):
        check_capability(cap, f"volume_capabilities[{i}]")


def unsupported_capability(caps: Iterable[csi_pb2.VolumeCapability]) -> str | None:
    """Why one of ``caps`` cannot be served (ValidateVolumeCapabilities' message), or None."""
    for i, cap in enumerate(caps):
        try:
            check_capability(cap, f"volume_capabilities[{i}]")
        except CsiError as exc:
            return exc.message
    return None


def reader_only(cap: csi_pb2.VolumeCapability) -> bool:
    return cap.access_mode.mode in READER_MODES or "ro" in cap.mount.mount_flags


# --- capacity --------------------------------------------------------------------------------------
def size_for(capacity: csi_pb2.CapacityRange | None, *, at_least: int = 0) -> int:
    """The size to create: exactly ``required_bytes`` when given (at least ``at_least``, a
    source's size, and GalleonFS's minimum), else the default bounded by ``limit_bytes``."""
    required_bytes = capacity.required_bytes if capacity is not None else 0
    limit_bytes = capacity.limit_bytes if capacity is not None else 0
    if required_bytes < 0 or limit_bytes < 0:
        raise invalid("capacity_range: required_bytes and limit_bytes must not be negative")
    if limit_bytes and required_bytes > limit_bytes:
        raise CsiError("OUT_OF_RANGE", f"capacity_range: required_bytes {required_bytes} is more than "
                                       f"limit_bytes {limit_bytes}")
    floor = max(at_least, limits.volume_size_min_bytes)
    if required_bytes:
        size = max(required_bytes, floor)
    else:
        size = max(min(DEFAULT_SIZE_BYTES, limit_bytes or DEFAULT_SIZE_BYTES), floor)
    if limit_bytes and size > limit_bytes:
        raise CsiError("OUT_OF_RANGE", f"capacity_range: a volume here needs at least {floor} bytes "
                                       f"(GalleonFS's minimum, or the source's size), more than "
                                       f"limit_bytes {limit_bytes}")
    if size > limits.volume_size_max_bytes:
        raise CsiError("OUT_OF_RANGE", f"capacity_range: {size} bytes is more than GalleonFS's largest "
                                       f"volume ({limits.volume_size_max_bytes} bytes)")
    return size


def fits(size: int, capacity: csi_pb2.CapacityRange | None) -> bool:
    """Whether an existing volume of ``size`` bytes satisfies ``capacity``."""
    if capacity is None:
        return True
    if capacity.required_bytes and size < capacity.required_bytes:
        return False
    return not (capacity.limit_bytes and size > capacity.limit_bytes)


# --- storage-class parameters ----------------------------------------------------------------------
@dataclass(frozen=True)
class Parameters:
    storage_class: str                   # "" for galleond's default class
    class_parameters: dict[str, str]     # non-empty: the class to make (named by its hash)


def parse_parameters(params: Mapping[str, str]) -> Parameters:
    """A StorageClass's parameters: ``storage_class`` (an existing GalleonFS class), or the
    GalleonFS storage-class parameters themselves; the provisioner's own keys are ignored."""
    chosen = ""
    wanted: dict[str, str] = {}
    for key, value in sorted(params.items()):
        if key.startswith(K8S_PREFIX):
            continue
        if key == CLASS_PARAMETER:
            chosen = value
        elif key in CLASS_PARAMETERS:
            wanted[key] = value
        else:
            known = ", ".join(sorted({CLASS_PARAMETER, *CLASS_PARAMETERS}))
            raise invalid(f"parameter {names.quote(key)} is not known; use {known}")
    if chosen and wanted:
        raise invalid(f"parameters: give either {CLASS_PARAMETER} or storage-class parameters "
                      f"({', '.join(sorted(wanted))}), not both")
    if chosen:
        try:
            names.check(chosen, names.STORAGE_CLASS)
        except InvalidArgument as exc:
            raise invalid(str(exc)) from None
    if wanted:
        digest = hashlib.sha256(repr(sorted(wanted.items())).encode()).hexdigest()[:16]
        chosen = f"csi-{digest}"
    return Parameters(chosen, wanted)


# --- pagination ------------------------------------------------------------------------------------
Item = TypeVar("Item")


def list_key(created_ns: int, ident: str) -> str:
    """The order ListVolumes and ListSnapshots page in: creation time, then id."""
    return f"{created_ns:020d}/{ident}"


def page(items: Sequence[Item], keys: Sequence[str], max_entries: int,
         starting_token: str) -> tuple[list[Item], str]:
    """One page of ``items`` (sorted by ``keys``, see ``list_key``) after ``starting_token``;
    the next token.

    A token is the last key returned, base64-encoded, so that a page never repeats or skips
    an entry when entries before it are added or removed between calls. A token this driver
    could not have made is ABORTED, as the specification says for ListVolumes and
    ListSnapshots."""
    if max_entries < 0:
        raise invalid("max_entries must not be negative")
    start = 0
    if starting_token:
        try:
            after = base64.urlsafe_b64decode(starting_token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise CsiError("ABORTED", f"starting_token {names.quote(starting_token)} was not made by "
                                      f"this driver; list again from the start") from None
        if not after.startswith("k:"):
            raise CsiError("ABORTED", f"starting_token {names.quote(starting_token)} was not made by "
                                      f"this driver; list again from the start")
        start = sum(1 for k in keys if k <= after[2:])
    end = len(items) if not max_entries else min(len(items), start + max_entries)
    token = ""
    if end < len(items):
        token = base64.urlsafe_b64encode(f"k:{keys[end - 1]}".encode()).decode()
    return list(items[start:end]), token
