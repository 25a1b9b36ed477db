"""Hostile values in every string and map field of every CSI request, one field at a time in
an otherwise valid request (an existing volume, paths in the test's directory): the driver
answers each with a status the specification names (never INTERNAL or
UNKNOWN, which would be an exception it did not expect), in one bounded line, and nothing
is mounted. The module's driver must also log no traceback (checked when it stops)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from node.util import mounts_under

from galleonfs.csi.v1 import csi_pb2
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

from .conftest import Csi
from .util import MiB, mount_cap, unique

HOSTILE = ["", "..", "../../etc/passwd", "/tmp/../etc", "relative/path", "a\nb", "nul\x00byte",
           "\u202eevil", "x" * 5000, "/" + "d/" * 3000, "@", "a@b@c", "%s%n{}", "ü" * 100,
           "00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000@snap"]
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.UNIMPLEMENTED,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.UNAUTHENTICATED}
SERVICES = {"Controller": csi_pb2.DESCRIPTOR.services_by_name["Controller"],
            "Node": csi_pb2.DESCRIPTOR.services_by_name["Node"]}


def requests(base: dict[str, Any] | None = None, services: tuple[str, ...] = ("Controller", "Node"),
             maps: bool = True) -> list[tuple[str, str, str, Any]]:
    """For every method, string field (and map field, with ``maps``): a request holding each
    hostile value in turn in that field, its other fields from ``base`` (else empty)."""
    cases = []
    for service_name in services:
        for method in SERVICES[service_name].methods:
            cls = getattr(csi_pb2, method.input_type.name)
            for field in method.input_type.fields:
                is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
                if field.type != FieldDescriptor.TYPE_STRING and not (is_map and maps):
                    continue
                for value in HOSTILE:
                    request = filled(cls, base or {})
                    if is_map:
                        getattr(request, field.name)[value or "k"] = value
                    else:
                        setattr(request, field.name, value)
                    cases.append((service_name, method.name, field.name, request))
    return cases


def filled(cls: Any, base: dict[str, Any]) -> Any:
    request = cls()
    for name, value in base.items():
        field = cls.DESCRIPTOR.fields_by_name.get(name)
        if field is None:
            continue
        if field.is_repeated:
            getattr(request, name).extend(value)
        elif field.message_type is not None:
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def call(stubs: dict[str, Any], cases: list[tuple[str, str, str, Any]]) -> int:
    for service, method, field, request in cases:
        try:
            getattr(stubs[service], method)(request, timeout=30)
            code, message = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            failed: Any = exc
            code, message = failed.code(), failed.details() or ""
        assert code in ALLOWED, (method, field, request, code, message)
        assert "\n" not in message and len(message) <= 1024, (method, field, message)
    return len(cases)


def test_hostile_strings_in_every_field(csi: Csi, shared_daemon: RunningDaemon) -> None:
    """Alone in an otherwise empty request: the required fields missing, the hostile one."""
    with Client(shared_daemon.address) as client:
        before = {v.id for v in client.list_volumes()}
    assert call({"Controller": csi.controller, "Node": csi.node}, requests()) > 400
    with Client(shared_daemon.address) as client:
        assert {v.id for v in client.list_volumes()} == before


def test_hostile_ids_and_paths_for_an_existing_volume(csi: Csi, tmp_path: Path) -> None:
    """Every Node call on a real volume, all valid but one id or path: nothing is mounted."""
    vid = csi.controller.CreateVolume(csi_pb2.CreateVolumeRequest(
        name=unique("fuzz"), volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=4 * MiB))).volume.volume_id
    base = {"volume_id": vid, "staging_target_path": str(tmp_path / "stage"),
            "target_path": str(tmp_path / "target"), "volume_path": str(tmp_path / "target"),
            "volume_capability": mount_cap(), "capacity_range": csi_pb2.CapacityRange(required_bytes=8 * MiB)}
    try:
        assert call({"Node": csi.node}, requests(base, ("Node",), maps=False)) > 200
        assert mounts_under(tmp_path) == []
    finally:
        csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))
