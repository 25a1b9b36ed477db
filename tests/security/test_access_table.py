"""The access table (galleonfs/rpc/auth.py) covers every method galleond serves, and a method
that is not in it is refused to everyone, admin included."""

from __future__ import annotations

import importlib
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import galleonfs.v1
from galleonfs.errors import PermissionDenied
from galleonfs.managers.access import Role
from galleonfs.rpc.auth import METHOD_RULES, Principal, Rule, authorize
from galleonfs.testing.daemon import RunningDaemon


def _methods_of(file_descriptor: object) -> set[str]:
    return {f"/{service.full_name}/{method.name}"
            for service in file_descriptor.services_by_name.values()      # type: ignore[attr-defined]
            for method in service.methods}


def test_every_method_of_the_api_has_exactly_one_rule() -> None:
    package = Path(galleonfs.v1.__file__).parent
    methods: set[str] = set()
    for path in sorted(package.glob("*_pb2.py")):
        module = importlib.import_module(f"galleonfs.v1.{path.stem}")
        methods |= _methods_of(module.DESCRIPTOR)
    methods |= _methods_of(health_pb2.DESCRIPTOR) | _methods_of(reflection_pb2.DESCRIPTOR)
    assert "/galleonfs.v1.TokenService/Create" in methods and len(methods) > 40
    assert sorted(methods - set(METHOD_RULES)) == []          # nothing served without a rule
    assert sorted(set(METHOD_RULES) - methods) == []          # no rule for a method that is gone


def test_every_method_the_running_daemon_serves_has_a_rule(shared_daemon: RunningDaemon) -> None:
    """From the daemon's own descriptors (reflection), so a service registered on the server
    but missing from the table cannot slip through."""
    with grpc.insecure_channel(shared_daemon.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed = next(iter(stub.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30)))
        services = [s.name for s in listed.list_services_response.service]
        served = set()
        for name in services:
            reply = next(iter(stub.ServerReflectionInfo(iter([
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)]), timeout=30)))
            for raw in reply.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                for service in proto.service:
                    full = f"{proto.package}.{service.name}"
                    if full == name:
                        served |= {f"/{full}/{m.name}" for m in service.method}
    assert len(services) == 16 and len(served) > 40
    assert sorted(served - set(METHOD_RULES)) == []


@pytest.mark.parametrize("role", list(Role))
def test_a_method_missing_from_the_table_is_refused_to_every_role(role: Role) -> None:
    with pytest.raises(PermissionDenied) as info:
        authorize("/galleonfs.v1.NewService/Do", None, Principal("uid 0", role))
    assert str(info.value) == "NewService/Do is not in galleond's access table, so nobody may call it"


def test_roles_are_ordered_and_tenants_kept_off_node_wide_methods() -> None:
    rule = Rule(Role.OPERATOR, False)
    authorize("/m", rule, Principal("uid 0", Role.ADMIN))
    authorize("/m", rule, Principal("token t", Role.OPERATOR))
    with pytest.raises(PermissionDenied, match="token v is a viewer; m needs operator"):
        authorize("/m", rule, Principal("token v", Role.VIEWER))
    with pytest.raises(PermissionDenied, match=r"token t \(tenant acme\) is bound to a tenant"):
        authorize("/m", rule, Principal("token t", Role.OPERATOR, "acme"))
    # Every write needs at least an operator; every rule a viewer may use is a read.
    for method, r in METHOD_RULES.items():
        verb = method.rsplit("/", 1)[1]
        if r.role == Role.VIEWER:
            assert verb.startswith(("Get", "List", "Diff", "Verify", "ServerReflectionInfo")), method
