"""Every request of the galleonfs.v1 API checked before its handler runs (one mechanism).

``RequestValidator`` is a server interceptor driven by the proto descriptors. It walks each
request message field by field and applies, in this order:

1. ``RULES``: a rule for one field of one message (a volume name that must be given, a mount
   point, a snapshot name, a label map, a size, the ``since`` of an audit query ...);
2. ``BY_FIELD_NAME``: a rule for string fields by their name (``volume``, ``snapshot``,
   ``path``, ``tenant`` ...), so that a message added later is checked the same way;
3. the rule of the field's type: strings are valid UTF-8, bounded
   (``limits.request_string_bytes_max``) and hold no control character; enums hold a number
   the enum defines; doubles are finite; timestamps are times protobuf can represent;
   repeated fields and maps are bounded; nested messages are walked the same way.

A refusal is an ``InvalidArgument`` whose sentence quotes at most ``limits.quote_chars_max``
characters of what was sent. The interceptor sits innermost, inside
``status.ErrorInterceptor``, so a refusal is answered like every other error (status, error
class in the trailing metadata), and the audit interceptor records it.

Undecodable requests: protobuf refuses to parse a string field that is not UTF-8, and grpcio
answers an exception in the request deserializer with INTERNAL and logs a traceback. So the
deserializer is wrapped: on failure it returns an empty request carrying a marker in an
unknown field (``MARKER_FIELD``, with protobuf's reason), which the handler turns into
INVALID_ARGUMENT. The marker travels inside the message because grpcio decodes on its polling
thread, not on the thread that then runs the handler; a client that sends that field itself
only gets its own request refused.

What it must not do: look anything up (whether a volume exists, its state, who may touch it:
that is for the managers and the authorizer), or change a request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory, unknown_fields

from .. import limits, names
from ..errors import InvalidArgument
from ..units import format_size

# Loaded for their side effect: every galleonfs.v1 message is in the default descriptor pool.
from ..v1 import (  # noqa: F401
    audit_pb2,
    backup_pb2,
    key_pb2,
    node_pb2,
    qos_pb2,
    snapshot_pb2,
    storage_class_pb2,
    volume_pb2,
)
from .wrapping import Stream, Unary, wrap

API_PREFIX = "/galleonfs.v1."
Rule = Callable[[Any], None]

# The highest field number protobuf allows (2^29 - 1): no galleonfs.v1 message will use it.
MARKER_FIELD = (1 << 29) - 1
_MARKER_REASON_BYTES_MAX = 200


# --- rules ----------------------------------------------------------------------------------------
def name(kind: names.Kind, *, empty: str | None = None) -> Rule:
    """A name of ``kind``; ``empty`` is the sentence for a missing one (None: optional)."""
    def rule(value: str) -> None:
        if not value:
            if empty is not None:
                raise InvalidArgument(empty)
            return
        names.check(value, kind)
    return rule


def path(*, required: bool) -> Rule:
    def rule(value: str) -> None:
        if not value:
            if required:
                raise InvalidArgument("give the mount point as an absolute path")
            return
        names.check_path(value)
    return rule


def labels(value: Mapping[str, str]) -> None:
    names.check_labels(value)


def size(value: int) -> None:
    if value > limits.volume_size_max_bytes:
        raise InvalidArgument(f"volume size {value} is out of range: use at most "
                              f"{format_size(limits.volume_size_max_bytes)}")


def schedule(value: str) -> None:
    names.check_text(value, "schedule", max_bytes=limits.schedule_max_chars)


_PARAMETER_KEY = re.compile(r"\A[a-z][a-z0-9_]*\Z")
_PARAMETER_VALUE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def class_parameters(value: Mapping[str, str]) -> None:
    """Storage-class parameters are short tokens ("block_size: 64K"); what each may be is the
    model's to say, once it is known to be a token."""
    if len(value) > limits.request_repeated_max:
        raise InvalidArgument(f"{len(value)} storage class parameters are too many")
    for key, text in value.items():
        if len(key) > limits.class_parameter_key_max_chars or not _PARAMETER_KEY.match(key):
            raise InvalidArgument(what="storage class parameter name", value=names.quote(key),
                                  expected="use lowercase letters, digits and '_'")
        if len(text) > limits.class_parameter_value_max_chars or not _PARAMETER_VALUE.match(text):
            raise InvalidArgument(
                f"storage class parameter {key}: invalid value {names.quote(text)}: use at most "
                f"{limits.class_parameter_value_max_chars} letters, digits, '.', '_', '+' and '-'")


# What protobuf's Timestamp can represent: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_SECONDS_MIN = -62_135_596_800
_TIMESTAMP_SECONDS_MAX = 253_402_300_799


def timestamp(value: Any, what: str = "time") -> None:
    if not (_TIMESTAMP_SECONDS_MIN <= value.seconds <= _TIMESTAMP_SECONDS_MAX
            and 0 <= value.nanos < 10**9):
        raise InvalidArgument(f"{what} ({value.seconds} s, {value.nanos} ns) is not a valid time")


def since(value: Any) -> None:
    """``since`` of an audit query: unset, or a time from the epoch on (nothing is recorded
    earlier). A time ahead is allowed: it asks for records not yet written, and gets none."""
    timestamp(value, "since")
    if value.seconds < 0:
        raise InvalidArgument(f"since ({value.seconds} s after the epoch) is before 1970-01-01: "
                              f"give a later time")


def text(what: str) -> Rule:
    def rule(value: str) -> None:
        names.check_text(value, what)
    return rule


VOLUME_REF = name(names.VOLUME, empty="name a volume (its name or id)")
NEW_VOLUME = name(names.VOLUME, empty="a volume needs a name")
SNAPSHOT_REF = name(names.SNAPSHOT, empty="name a snapshot")
CLASS_REF = name(names.STORAGE_CLASS, empty="name a storage class")
POLICY_REF = name(names.SNAPSHOT_POLICY, empty="name a snapshot policy")
QOS_REF = name(names.QOS_POLICY, empty="name a QoS policy")

_V = "galleonfs.v1."
RULES: dict[tuple[str, str], Rule] = {
    # VolumeService
    (_V + "CreateVolumeRequest", "name"): NEW_VOLUME,
    (_V + "CreateVolumeRequest", "size_bytes"): size,
    (_V + "CreateVolumeRequest", "labels"): labels,
    (_V + "GetVolumeRequest", "name"): VOLUME_REF,
    (_V + "ListVolumesRequest", "label_selector"): labels,
    (_V + "DeleteVolumeRequest", "name"): VOLUME_REF,
    (_V + "ExpandVolumeRequest", "name"): VOLUME_REF,
    (_V + "ExpandVolumeRequest", "size_bytes"): size,
    (_V + "MountVolumeRequest", "name"): VOLUME_REF,
    (_V + "MountVolumeRequest", "path"): path(required=True),
    (_V + "UnmountVolumeRequest", "name"): name(names.VOLUME),    # a name or a path: the
    (_V + "UnmountVolumeRequest", "path"): path(required=False),  # manager wants one of the two
    (_V + "GetVolumeStatsRequest", "name"): VOLUME_REF,
    (_V + "CloneVolumeRequest", "volume"): VOLUME_REF,
    (_V + "CloneVolumeRequest", "snapshot"): name(names.SNAPSHOT, empty="name the snapshot to clone"),
    (_V + "CloneVolumeRequest", "name"): name(names.VOLUME, empty="a clone needs a name"),
    (_V + "CloneVolumeRequest", "size_bytes"): size,
    (_V + "CloneVolumeRequest", "labels"): labels,
    (_V + "FlattenVolumeRequest", "name"): VOLUME_REF,
    # StorageClassService
    (_V + "StorageClass", "name"): name(names.STORAGE_CLASS, empty="a storage class needs a name"),
    (_V + "StorageClass", "parameters"): class_parameters,
    (_V + "GetStorageClassRequest", "name"): CLASS_REF,
    (_V + "DeleteStorageClassRequest", "name"): CLASS_REF,
    # SnapshotService
    (_V + "CreateSnapshotRequest", "volume"): VOLUME_REF,
    (_V + "CreateSnapshotRequest", "name"): name(names.SNAPSHOT, empty="a snapshot needs a name"),
    (_V + "GetSnapshotRequest", "volume"): VOLUME_REF,
    (_V + "GetSnapshotRequest", "name"): SNAPSHOT_REF,
    (_V + "DeleteSnapshotRequest", "volume"): VOLUME_REF,
    (_V + "DeleteSnapshotRequest", "name"): SNAPSHOT_REF,
    (_V + "RestoreSnapshotRequest", "volume"): VOLUME_REF,
    (_V + "RestoreSnapshotRequest", "name"): SNAPSHOT_REF,
    (_V + "DiffSnapshotsRequest", "volume"): VOLUME_REF,
    (_V + "DiffSnapshotsRequest", "from_snapshot"): name(
        names.SNAPSHOT, empty="name the snapshot to compare from"),
    (_V + "DiffSnapshotsRequest", "to_snapshot"): name(names.SNAPSHOT),   # empty: the live volume
    (_V + "MountSnapshotRequest", "volume"): VOLUME_REF,
    (_V + "MountSnapshotRequest", "name"): SNAPSHOT_REF,
    (_V + "MountSnapshotRequest", "path"): path(required=True),
    # SnapshotPolicyService
    (_V + "SnapshotPolicy", "name"): name(names.SNAPSHOT_POLICY, empty="a snapshot policy needs a name"),
    (_V + "SnapshotPolicy", "schedule"): schedule,
    (_V + "SnapshotPolicy", "volume_selector"): labels,
    (_V + "GetSnapshotPolicyRequest", "name"): POLICY_REF,
    (_V + "DeleteSnapshotPolicyRequest", "name"): POLICY_REF,
    # QosService
    (_V + "QosPolicy", "name"): name(names.QOS_POLICY, empty="a QoS policy needs a name"),
    (_V + "GetQosPolicyRequest", "name"): QOS_REF,
    (_V + "DeleteQosPolicyRequest", "name"): QOS_REF,
    (_V + "AssignQosPolicyRequest", "policy"): name(names.QOS_POLICY),    # empty: unassign
    (_V + "AssignQosPolicyRequest", "volume"): VOLUME_REF,
    # AuditService
    (_V + "ListAuditRecordsRequest", "since"): since,
    (_V + "ListAuditRecordsRequest", "volume"): name(names.VOLUME),
    # BackupTargetService, BackupService, BackupPolicyService
    (_V + "BackupTarget", "name"): name(names.BACKUP_TARGET, empty="a backup target needs a name"),
    (_V + "BackupTarget", "url"): text("target address"),
    (_V + "DeleteBackupTargetRequest", "name"): name(names.BACKUP_TARGET, empty="name a backup target"),
    (_V + "CreateBackupRequest", "volume"): VOLUME_REF,
    (_V + "CreateBackupRequest", "target"): name(names.BACKUP_TARGET, empty="name a backup target (--target)"),
    (_V + "ListBackupsRequest", "target"): name(names.BACKUP_TARGET),
    (_V + "VerifyBackupsRequest", "target"): name(names.BACKUP_TARGET, empty="name a backup target"),
    (_V + "RestoreBackupRequest", "name"): name(names.VOLUME, empty="name the new volume (--to)"),
    (_V + "BackupPolicy", "name"): name(names.BACKUP_POLICY, empty="a backup policy needs a name"),
    (_V + "BackupPolicy", "target"): name(names.BACKUP_TARGET, empty="a backup policy needs a --target"),
    (_V + "BackupPolicy", "schedule"): schedule,
    (_V + "BackupPolicy", "volume_selector"): labels,
    (_V + "DeleteBackupPolicyRequest", "name"): name(names.BACKUP_POLICY, empty="name a backup policy"),
    # KeyService
    (_V + "RekeyVolumeRequest", "name"): VOLUME_REF,
}

# String fields of any message, by name, when RULES has no entry for them: optional there.
BY_FIELD_NAME: dict[str, Rule] = {
    "volume": name(names.VOLUME),
    "snapshot": name(names.SNAPSHOT),
    "storage_class": name(names.STORAGE_CLASS),
    "path": path(required=False),
    "tenant": name(names.TENANT),
    "principal": name(names.PRINCIPAL),
}


# --- the walk -------------------------------------------------------------------------------------
def _words(camel: str) -> str:
    """``VolumeBindingMode`` -> ``volume binding mode``, for messages."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", camel).lower()


def _scalar(field: Any, value: Any, label: str) -> None:
    """The rule of a field's type, for one value (an element of a repeated field or map)."""
    if field.type == field.TYPE_STRING:
        names.check_text(value, label)
    elif field.type == field.TYPE_ENUM:
        if value not in field.enum_type.values_by_number:
            known = ", ".join(v.name for v in field.enum_type.values)
            raise InvalidArgument(f"unknown {_words(field.enum_type.name)} {value}: use one of {known}")
    elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        if not math.isfinite(value):
            raise InvalidArgument(f"{label} must be a finite number, not {value}")
    elif field.type == field.TYPE_MESSAGE:
        check_message(value, prefix=f"{label}.")


def check_field(message: Any, field: Any, prefix: str = "") -> None:
    """One field of ``message`` by its rule (see the module docstring for which rule)."""
    value = getattr(message, field.name)
    rule = RULES.get((message.DESCRIPTOR.full_name, field.name))
    if rule is None and field.type == field.TYPE_STRING:
        rule = BY_FIELD_NAME.get(field.name)
    if rule is not None:
        rule(value)
        return
    label = prefix + field.name
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if len(value) > limits.request_repeated_max:
            raise InvalidArgument(f"{label} has {len(value)} entries: at most {limits.request_repeated_max}")
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for key in value:
            _scalar(key_field, key, f"a key of {label}")
            _scalar(value_field, value[key], f"{label}[{names.quote(str(key))}]")
    elif field.is_repeated:
        if len(value) > limits.request_repeated_max:
            raise InvalidArgument(f"{label} has {len(value)} items: at most {limits.request_repeated_max}")
        for item in value:
            _scalar(field, item, label)
    elif entry is not None and entry.full_name == "google.protobuf.Timestamp":
        timestamp(value, label)
    else:
        _scalar(field, value, label)


def check_message(message: Any, *, prefix: str = "") -> None:
    """Raise ``InvalidArgument`` for the first field of ``message`` that breaks its rule."""
    for field in message.DESCRIPTOR.fields:
        check_field(message, field, prefix)


def check_request(request: Any) -> None:
    unknowns = unknown_fields.UnknownFieldSet(request)
    for unknown in (unknowns[i] for i in range(len(unknowns))):
        if unknown.field_number == MARKER_FIELD:
            reason = names.bounded(names.one_line(bytes(unknown.data).decode(errors="replace")),
                                   _MARKER_REASON_BYTES_MAX)
            hint = ("strings must be valid UTF-8" if "UTF-8" in reason
                    else f"send a serialized {request.DESCRIPTOR.full_name}")
            raise InvalidArgument(f"the request could not be decoded ({reason}); {hint}")
    check_message(request)


# --- decoding -------------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _marker(reason: str) -> bytes:
    payload = reason.encode(errors="replace")[:_MARKER_REASON_BYTES_MAX]
    return _varint(MARKER_FIELD << 3 | 2) + _varint(len(payload)) + payload


def tolerant_decoder(cls: Any) -> Callable[[bytes], Any]:
    """``cls.FromString`` that never raises: bytes that do not decode give an empty ``cls``
    marked as undecodable (see the module docstring)."""
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:   # protobuf's DecodeError, or anything its parser raises
            return cls.FromString(_marker(str(exc) or type(exc).__name__))
    return decode


def _input_class(method: str) -> Any:
    """The request class of a full method name (``/galleonfs.v1.VolumeService/Create``)."""
    service, _, verb = method.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).methods_by_name.get(verb)
    except KeyError:
        return None
    return None if found is None else message_factory.GetMessageClass(found.input_type)


# --- the interceptor --------------------------------------------------------------------------------
class RequestValidator(grpc.ServerInterceptor):
    def __init__(self, prefix: str = API_PREFIX) -> None:
        # ``prefix``: the methods it checks; the peer server passes "/galleonfs.peer.v1.".
        self._prefix = prefix
        self._classes: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        if method not in self._classes:
            self._classes[method] = _input_class(method)
        cls = self._classes[method]
        if cls is None:
            return handler
        decode = tolerant_decoder(cls)
        def unary(inner: Unary) -> Unary:
            def checked(request: Any, context: grpc.ServicerContext) -> Any:
                check_request(request)
                return inner(request, context)
            return checked

        def stream(inner: Stream) -> Stream:
            def checked(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                check_request(request)
                yield from inner(request, context)
            return checked

        return wrap(handler, unary=unary, stream=stream, deserializer=decode)


def _check_table() -> None:
    """Every entry of RULES names a field that exists: a renamed field must not silently
    fall back to the generic rule (a programmer error, so an assertion at import)."""
    pool = descriptor_pool.Default()
    for message_name, field_name in RULES:
        descriptor = pool.FindMessageTypeByName(message_name)
        assert field_name in descriptor.fields_by_name, (message_name, field_name)


_check_table()
