"""galleonfs.rpc.validate without a server: the rules reach every field of every request.

Walks the proto descriptors the way the interceptor does, so a field or an RPC added later is
covered here without editing this file. The attacker's view (a real daemon) is in
tests/security/test_input.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pool, message_factory

from galleonfs.errors import InvalidArgument
from galleonfs.rpc import validate
from galleonfs.rpc.server import SERVICE_NAMES


def request_classes() -> list[tuple[str, Any]]:
    pool = descriptor_pool.Default()
    out = []
    for service in SERVICE_NAMES:
        for method in pool.FindServiceByName(service).methods:
            out.append((f"{service}/{method.name}", message_factory.GetMessageClass(method.input_type)))
    return out


REQUESTS = request_classes()


def string_fields(descriptor: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths to every singular string field, nested messages included (maps and repeated
    fields are covered by their own tests)."""
    out = []
    for field in descriptor.fields:
        if field.is_repeated:
            continue
        if field.type == field.TYPE_STRING:
            out.append((*path, field.name))
        elif field.type == field.TYPE_MESSAGE and field.message_type.full_name.startswith("galleonfs."):
            out += string_fields(field.message_type, (*path, field.name))
    return out


def check_one(cls: Any, path: tuple[str, ...], value: Any) -> None:
    """Set the field at ``path`` of a fresh ``cls`` to ``value`` and check that field alone
    (a whole request would fail first on the fields this test leaves empty)."""
    parent = cls()
    for part in path[:-1]:
        parent = getattr(parent, part)
    field = parent.DESCRIPTOR.fields_by_name[path[-1]]
    if field.is_repeated:
        getattr(parent, path[-1]).append(value)
    else:
        setattr(parent, path[-1], value)
    validate.check_field(parent, field)


def test_every_rpc_is_seen() -> None:
    assert len(REQUESTS) >= 35, REQUESTS      # 8 services; a lost service would shrink this


def enum_fields(descriptor: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for field in descriptor.fields:
        if field.type == field.TYPE_ENUM:
            out.append((*path, field.name))
        elif field.type == field.TYPE_MESSAGE and not field.is_repeated:
            out += enum_fields(field.message_type, (*path, field.name))
    return out


STRINGS = [(m, cls, p) for m, cls in REQUESTS for p in string_fields(cls.DESCRIPTOR)]
ENUMS = [(m, cls, p) for m, cls in REQUESTS for p in enum_fields(cls.DESCRIPTOR)]


def test_the_walk_finds_the_fields() -> None:
    assert len(STRINGS) >= 45 and len(ENUMS) >= 4, (len(STRINGS), len(ENUMS))


@pytest.mark.parametrize(("method", "cls", "path"), STRINGS,
                         ids=[f"{m}:{'.'.join(p)}" for m, _, p in STRINGS])
def test_nul_newline_bidi_and_huge_refused_in_every_string_field(method: str, cls: Any,
                                                                 path: tuple[str, ...]) -> None:
    for bad in ("x\x00y", "name\n", "a\u202eb", "z" * 5000):
        with pytest.raises(InvalidArgument) as info:
            check_one(cls, path, bad)
        assert len(str(info.value)) <= 250, str(info.value)
        assert "z" * 65 not in str(info.value)


@pytest.mark.parametrize(("method", "cls", "path"), ENUMS,
                         ids=[f"{m}:{'.'.join(p)}" for m, _, p in ENUMS])
def test_unknown_enum_numbers_refused(method: str, cls: Any, path: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument, match=r"unknown .* 77"):
        check_one(cls, path, 77)


def test_required_names_are_required() -> None:
    from galleonfs.v1 import snapshot_pb2, volume_pb2

    cases = [
        (snapshot_pb2.DeleteSnapshotRequest(volume="v"), "name a snapshot"),
        (snapshot_pb2.RestoreSnapshotRequest(volume="v"), "name a snapshot"),
        (snapshot_pb2.DiffSnapshotsRequest(volume="v"), "name the snapshot to compare from"),
        (snapshot_pb2.MountSnapshotRequest(volume="v", path="/mnt/x"), "name a snapshot"),
        (volume_pb2.CloneVolumeRequest(volume="v", name="c"), "name the snapshot to clone"),
        (volume_pb2.GetVolumeRequest(), "name a volume"),
        (volume_pb2.MountVolumeRequest(name="v"), "absolute path"),
    ]
    for request, phrase in cases:
        with pytest.raises(InvalidArgument, match=phrase):
            validate.check_request(request)
    # Optional ones stay optional: the live volume, every volume, unassign.
    validate.check_request(snapshot_pb2.DiffSnapshotsRequest(volume="v", from_snapshot="a"))
    validate.check_request(snapshot_pb2.ListSnapshotsRequest())


def test_undecodable_bytes_become_a_marked_empty_request() -> None:
    from galleonfs.v1 import volume_pb2

    decode = validate.tolerant_decoder(volume_pb2.CreateVolumeRequest)
    good = decode(volume_pb2.CreateVolumeRequest(name="ok", size_bytes=1 << 20).SerializeToString())
    assert good.name == "ok"
    validate.check_request(good)
    bad = decode(b"\x0a\x02\xff\xfe")                 # field 1 (name): invalid UTF-8
    assert bad.name == ""
    with pytest.raises(InvalidArgument, match=r"could not be decoded .*UTF-8"):
        validate.check_request(bad)
    truncated = decode(b"\x0a\x7f")                   # a length beyond the end
    with pytest.raises(InvalidArgument, match=r"could not be decoded .*send a serialized "
                                              r"galleonfs\.v1\.CreateVolumeRequest"):
        validate.check_request(truncated)
