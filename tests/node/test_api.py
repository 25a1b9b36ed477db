"""The gRPC API as an orchestrator sees it: health checking, reflection, status codes with
messages, and generated code that matches the .proto files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from galleonfs.errors import AlreadyExists, Busy, ExitCode, InvalidArgument, NotFound, Unavailable
from galleonfs.rpc.client import Client
from galleonfs.rpc.status import ERROR_CLASS_KEY
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import (
    storage_class_pb2,
    storage_class_pb2_grpc,
    types_pb2,
    volume_pb2,
    volume_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
SERVICES = [
    "galleonfs.v1.AuditService",
    "galleonfs.v1.BackupPolicyService",
    "galleonfs.v1.BackupService",
    "galleonfs.v1.BackupTargetService",
    "galleonfs.v1.ClusterService",
    "galleonfs.v1.KeyService",
    "galleonfs.v1.NodeService",
    "galleonfs.v1.QosService",
    "galleonfs.v1.SnapshotPolicyService",
    "galleonfs.v1.SnapshotService",
    "galleonfs.v1.StorageClassService",
    "galleonfs.v1.TenantService",
    "galleonfs.v1.TokenService",
    "galleonfs.v1.VolumeService",
]


@pytest.fixture
def channel(shared_daemon: RunningDaemon) -> grpc.Channel:
    with grpc.insecure_channel(shared_daemon.address) as ch:
        yield ch


def test_health_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", *SERVICES]:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="galleonfs.v1.Nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_api(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="galleonfs.v1.VolumeService"),
    ]), timeout=5))
    names = sorted(s.name for s in replies[0].list_services_response.service)
    assert [n for n in names if n.startswith("galleonfs.v1.")] == SERVICES
    assert "grpc.health.v1.Health" in names
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in replies[1].file_descriptor_response.file_descriptor_proto]
    described = {f.name: f for f in files}
    volume_file = described["galleonfs/v1/volume.proto"]
    methods = [m.name for m in volume_file.service[0].method]
    assert methods == ["Create", "Get", "List", "Delete", "Expand", "Mount", "Unmount", "GetStats",
                       "Clone", "Flatten"]


def rpc_error(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)  # type: ignore[operator]
    return info.value


def error_class(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(ERROR_CLASS_KEY)


def test_errors_map_to_status_codes(shared_daemon: RunningDaemon, channel: grpc.Channel,
                                    tmp_path: Path) -> None:
    volumes = volume_pb2_grpc.VolumeServiceStub(channel)
    classes = storage_class_pb2_grpc.StorageClassServiceStub(channel)
    volumes.Create(volume_pb2.CreateVolumeRequest(name="api", size_bytes=8 * MiB), timeout=30)

    def check(call: object, request: object, code: grpc.StatusCode, cls: str, phrase: str) -> None:
        error = rpc_error(call, request)
        assert error.code() == code, (error.code(), error.details())
        assert error_class(error) == cls
        assert phrase in error.details()
        assert "Traceback" not in error.details() and "\n" not in error.details()

    V, pb = volume_pb2, types_pb2
    check(volumes.Get, V.GetVolumeRequest(name="missing"), grpc.StatusCode.NOT_FOUND, "NotFound",
          "volume 'missing' does not exist")
    check(volumes.Get, V.GetVolumeRequest(name=""), grpc.StatusCode.INVALID_ARGUMENT,
          "InvalidArgument", "name a volume")
    check(volumes.Create, V.CreateVolumeRequest(name="api", size_bytes=8 * MiB),
          grpc.StatusCode.ALREADY_EXISTS, "AlreadyExists", "'api' already exists")
    check(volumes.Create, V.CreateVolumeRequest(name="Bad/Name", size_bytes=8 * MiB),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "invalid volume name")
    check(volumes.Create, V.CreateVolumeRequest(name="tiny", size_bytes=0),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "out of range")
    check(volumes.Create, V.CreateVolumeRequest(name="odd", size_bytes=8 * MiB, access_modes=[9]),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "unknown access mode 9")
    check(volumes.Create, V.CreateVolumeRequest(name="odd", size_bytes=8 * MiB, type=7),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "unknown volume type 7")
    check(volumes.Create, V.CreateVolumeRequest(name="enc", size_bytes=8 * MiB, storage_class="encrypted"),
          grpc.StatusCode.FAILED_PRECONDITION, "FailedPrecondition", "no key source")
    check(volumes.Mount, V.MountVolumeRequest(name="api", path="relative/path"),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "must be an absolute path")
    check(volumes.Unmount, V.UnmountVolumeRequest(name="api", path="/x"),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "one of the two")
    check(volumes.Unmount, V.UnmountVolumeRequest(name="api"),
          grpc.StatusCode.FAILED_PRECONDITION, "FailedPrecondition", "is not mounted")
    check(volumes.Expand, V.ExpandVolumeRequest(name="api", size_bytes=MiB),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "shrinking")
    check(classes.Get, storage_class_pb2.GetStorageClassRequest(name="nope"),
          grpc.StatusCode.NOT_FOUND, "NotFound", "storage class 'nope' does not exist")
    check(classes.Create, storage_class_pb2.CreateStorageClassRequest(
              storage_class=pb.StorageClass(name="odd", parameters={"foo": "bar"})),
          grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "unknown storage class parameter 'foo'")
    check(classes.Delete, storage_class_pb2.DeleteStorageClassRequest(name="local"),
          grpc.StatusCode.FAILED_PRECONDITION, "FailedPrecondition", "built in")

    mnt = tmp_path / "mnt"
    volumes.Mount(V.MountVolumeRequest(name="api", path=str(mnt)), timeout=30)
    try:
        check(volumes.Delete, V.DeleteVolumeRequest(name="api"), grpc.StatusCode.FAILED_PRECONDITION,
              "Busy", "unmount it first")
        check(volumes.Mount, V.MountVolumeRequest(name="api", path=str(tmp_path / "again")),
              grpc.StatusCode.FAILED_PRECONDITION, "Busy", "ReadWriteOnce")
    finally:
        volumes.Unmount(V.UnmountVolumeRequest(path=str(mnt)), timeout=30)
    volumes.Delete(V.DeleteVolumeRequest(name="api"), timeout=30)


def test_client_rebuilds_the_daemons_error(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    """The Python client raises the daemon's own class, so exit codes survive the trip."""
    with Client(shared_daemon.address) as c:
        c.create_volume("client-errors", 8 * MiB)
        c.mount_volume("client-errors", str(tmp_path / "m"))
        try:
            with pytest.raises(Busy) as busy:
                c.delete_volume("client-errors")
            assert busy.value.exit_code == ExitCode.BUSY
            assert "client-errors is mounted on" in str(busy.value)
            # --force unmounts first
            reply = c.delete_volume("client-errors", force=True)
        except BaseException:
            c.unmount_volume("client-errors")
            raise
        assert reply.id and not reply.data_retained
        with pytest.raises(NotFound):
            c.get_volume("client-errors")
        with pytest.raises(AlreadyExists):
            c.create_storage_class(types_pb2.StorageClass(name="local"))
        with pytest.raises(InvalidArgument):
            c.create_volume("x", 0)
    with Client(f"unix:{tmp_path}/nobody.sock", timeout_s=5) as c, pytest.raises(Unavailable) as info:
        c.list_volumes()
    assert info.value.exit_code == ExitCode.UNAVAILABLE and "is it running?" in str(info.value)


def test_codegen_is_fresh() -> None:
    done = subprocess.run([sys.executable, "-m", "galleonfs.rpc.codegen", "--check"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "generated gRPC code is fresh"


def test_codegen_check_detects_stale_code(tmp_path: Path) -> None:
    """On a copy of the tree: a changed .proto, or a hand-edited generated file, is stale."""
    (tmp_path / "galleonfs" / "rpc").mkdir(parents=True)
    shutil.copy(REPO / "galleonfs" / "rpc" / "codegen.py", tmp_path / "galleonfs" / "rpc")
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    for package in ("v1", "csi/v1", "peer/v1"):
        shutil.copytree(REPO / "galleonfs" / package, tmp_path / "galleonfs" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    script = str(tmp_path / "galleonfs" / "rpc" / "codegen.py")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)

    assert check().returncode == 0
    proto = tmp_path / "proto" / "galleonfs" / "v1" / "node.proto"
    original = proto.read_text()
    proto.write_text(original.replace("repeated string problems = 14;",
                                      "repeated string problems = 14;\n  string zone = 999;"))
    done = check()
    assert done.returncode == 1
    assert "node_pb2.py" in done.stderr and "node_pb2.pyi" in done.stderr
    assert "volume_pb2.py" not in done.stderr
    proto.write_text(original)
    assert check().returncode == 0

    generated = tmp_path / "galleonfs" / "v1" / "volume_pb2_grpc.py"
    generated.write_text(generated.read_text() + "\n# edited by hand\n")
    done = check()
    assert done.returncode == 1 and "volume_pb2_grpc.py" in done.stderr
