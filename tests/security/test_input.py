"""Malformed input at the API edge, sent as an attacker would (issue 9, findings 1 and 8).

Every request goes over the real unix socket to a real galleond. Each test asserts the exact
status (INVALID_ARGUMENT, never INTERNAL, UNKNOWN or RESOURCE_EXHAUSTED), a message of one
short line that quotes at most 64 characters of what was sent, and that nothing changed: the
volumes, classes and policies the API shows, the files of the data directory, the test's own
directory and the mount table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from node.util import user_error

from galleonfs.cli.output import to_dict
from galleonfs.meta.catalog import BACKUP_FILE
from galleonfs.rpc.client import Client
from galleonfs.rpc.status import ERROR_CLASS_KEY
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    key_pb2,
    key_pb2_grpc,
    qos_pb2,
    qos_pb2_grpc,
    snapshot_pb2,
    snapshot_pb2_grpc,
    storage_class_pb2,
    storage_class_pb2_grpc,
    types_pb2,
    volume_pb2,
    volume_pb2_grpc,
)

from .local_users import mount_table

MiB = 1024 * 1024
VICTIM = "victim"              # an existing, unmounted volume every attack aims at
MESSAGE_CHARS_MAX = 200
QUOTE_CHARS_MAX = 64
TEN_THOUSAND = "a" * 10_000


@pytest.fixture(scope="module")
def victim(module_daemon: RunningDaemon) -> Iterator[str]:
    """A volume with a snapshot, created once for the module's attacks."""
    with Client(module_daemon.address, timeout_s=60) as c:
        c.create_volume(VICTIM, 16 * MiB, labels={"app": "db"})
        c.create_snapshot(VICTIM, "good")
    yield VICTIM


@pytest.fixture
def channel(shared_daemon: RunningDaemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(shared_daemon.address) as ch:
        yield ch


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.volumes = volume_pb2_grpc.VolumeServiceStub(channel)
        self.snapshots = snapshot_pb2_grpc.SnapshotServiceStub(channel)
        self.policies = snapshot_pb2_grpc.SnapshotPolicyServiceStub(channel)
        self.classes = storage_class_pb2_grpc.StorageClassServiceStub(channel)
        self.qos = qos_pb2_grpc.QosServiceStub(channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(channel)
        self.keys = key_pb2_grpc.KeyServiceStub(channel)


@pytest.fixture
def stubs(channel: grpc.Channel, victim: str) -> Stubs:
    return Stubs(channel)


def host_state(daemon: RunningDaemon, tmp_path: Path) -> dict[str, Any]:
    """What an attack must not change. File names, not contents: the audit log grows with
    every refused call, and that is as it should be."""
    with Client(daemon.address, timeout_s=60) as c:
        api = {
            "volumes": [to_dict(v) for v in c.list_volumes()],
            "snapshots": sorted((s.volume, s.name, s.generation) for s in c.list_snapshots()),
            "classes": [to_dict(x) for x in c.list_storage_classes()],
            "policies": [to_dict(p) for p in c.list_policies()],
            "qos": [to_dict(q) for q in c.list_qos_policies()],
        }
    # The catalog's periodic backup writes node.lmdb.backup.tmp and renames it: a listing
    # that falls between the two sees it, whatever the test did.
    files = sorted(str(p.relative_to(daemon.data_dir)) for p in daemon.data_dir.rglob("*")
                   if "logs" not in p.parts and "run" not in p.parts
                   and p.name != BACKUP_FILE + ".tmp")
    mine = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    # Only mounts of this daemon and this test: other tests on the machine mount their own.
    ours = [m for m in mount_table() if m.startswith((str(daemon.base), str(tmp_path)))]
    return {"api": api, "data_dir": files, "tmp": mine, "mounts": ours}


def refused(call: Callable[..., Any], request: Any, sent: str = "") -> str:
    """Call; assert INVALID_ARGUMENT with the InvalidArgument class and a short message that
    quotes at most 64 characters of ``sent``; return the message."""
    with pytest.raises(grpc.RpcError) as info:
        reply = call(request, timeout=30)
        if hasattr(reply, "__next__"):           # a server stream (Rekey)
            list(reply)
    error = info.value
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), details)
    assert dict(error.trailing_metadata() or ()).get(ERROR_CLASS_KEY) == "InvalidArgument"
    assert_bounded(details, sent)
    return details


def assert_bounded(details: str, sent: str) -> None:
    assert "\n" not in details and "\x00" not in details and "Traceback" not in details, details
    assert len(details) <= MESSAGE_CHARS_MAX, f"{len(details)} characters: {details}"
    if len(sent) > QUOTE_CHARS_MAX:
        assert sent[:QUOTE_CHARS_MAX + 1] not in details, details


# --- finding 1: a snapshot's name reached `mount --bind` ---------------------------------------
SNAPSHOT_NAME_ATTACKS = ["..", "", "../../..", ".", "a/b", "/", "good/..", "good\n", "\x00",
                         "good\x00", "-rf", "x\u202ey", TEN_THOUSAND]


@pytest.mark.parametrize("name", SNAPSHOT_NAME_ATTACKS, ids=repr)
def test_snapshot_mount_refuses_names_that_are_paths(shared_daemon: RunningDaemon, stubs: Stubs,
                                                     tmp_path: Path, name: str) -> None:
    target = tmp_path / "target"
    before = host_state(shared_daemon, tmp_path)
    details = refused(stubs.snapshots.Mount, snapshot_pb2.MountSnapshotRequest(
        volume=VICTIM, name=name, path=str(target)), name)
    assert "snapshot" in details
    assert host_state(shared_daemon, tmp_path) == before
    assert not target.exists(), "the mount point was created for a refused name"


@pytest.mark.parametrize("rpc", ["Create", "Get", "Delete", "Restore"])
@pytest.mark.parametrize("name", SNAPSHOT_NAME_ATTACKS, ids=repr)
def test_snapshot_calls_refuse_bad_names(shared_daemon: RunningDaemon, stubs: Stubs, tmp_path: Path,
                                         rpc: str, name: str) -> None:
    request_type = getattr(snapshot_pb2, f"{rpc}SnapshotRequest")
    before = host_state(shared_daemon, tmp_path)
    refused(getattr(stubs.snapshots, rpc), request_type(volume=VICTIM, name=name), name)
    assert host_state(shared_daemon, tmp_path) == before


def test_empty_snapshot_names_on_diff_and_clone(shared_daemon: RunningDaemon, stubs: Stubs,
                                                tmp_path: Path) -> None:
    before = host_state(shared_daemon, tmp_path)
    assert "name the snapshot to compare from" in refused(
        stubs.snapshots.Diff, snapshot_pb2.DiffSnapshotsRequest(volume=VICTIM, from_snapshot=""))
    refused(stubs.snapshots.Diff, snapshot_pb2.DiffSnapshotsRequest(
        volume=VICTIM, from_snapshot="good", to_snapshot=".."), "..")
    assert "name the snapshot to clone" in refused(
        stubs.volumes.Clone, volume_pb2.CloneVolumeRequest(volume=VICTIM, snapshot="", name="twin"))
    refused(stubs.volumes.Clone, volume_pb2.CloneVolumeRequest(volume=VICTIM, snapshot="../..", name="twin"),
            "../..")
    assert host_state(shared_daemon, tmp_path) == before


# --- finding 8: names with a trailing newline, NUL, 10,000 characters ---------------------------
def test_trailing_newline_cannot_make_a_look_alike(shared_daemon: RunningDaemon, stubs: Stubs,
                                                   tmp_path: Path) -> None:
    stubs.volumes.Create(volume_pb2.CreateVolumeRequest(name="base", size_bytes=8 * MiB), timeout=60)
    try:
        before = host_state(shared_daemon, tmp_path)
        for name in ("base\n", "base\r\n", "\nbase", "base\x00", "base\u2028"):
            details = refused(stubs.volumes.Create, volume_pb2.CreateVolumeRequest(
                name=name, size_bytes=8 * MiB))
            assert "invalid volume name" in details and "\\" in details   # the newline, escaped
        assert host_state(shared_daemon, tmp_path) == before
        assert [v.name for v in Client(shared_daemon.address).list_volumes()].count("base") == 1
    finally:
        stubs.volumes.Delete(volume_pb2.DeleteVolumeRequest(name="base"), timeout=60)


NAME_ATTACKS = ["..", "../../..", "base\n", "a\x00b", "Upper", "a/b", TEN_THOUSAND]


@pytest.mark.parametrize("name", NAME_ATTACKS, ids=lambda n: repr(n[:20]))
def test_every_kind_of_name_is_checked(shared_daemon: RunningDaemon, stubs: Stubs, tmp_path: Path,
                                       name: str) -> None:
    before = host_state(shared_daemon, tmp_path)
    V, S, Q = volume_pb2, snapshot_pb2, qos_pb2
    calls = [
        (stubs.volumes.Create, V.CreateVolumeRequest(name=name, size_bytes=8 * MiB), "volume"),
        (stubs.volumes.Create, V.CreateVolumeRequest(name="ok", size_bytes=8 * MiB, storage_class=name),
         "storage class"),
        (stubs.volumes.Clone, V.CloneVolumeRequest(volume=VICTIM, snapshot="good", name=name), "volume"),
        (stubs.volumes.Get, V.GetVolumeRequest(name=name), "volume"),
        (stubs.volumes.Delete, V.DeleteVolumeRequest(name=name, force=True), "volume"),
        (stubs.volumes.Expand, V.ExpandVolumeRequest(name=name, size_bytes=32 * MiB), "volume"),
        (stubs.volumes.Mount, V.MountVolumeRequest(name=name, path=str(tmp_path / "m")), "volume"),
        (stubs.volumes.Unmount, V.UnmountVolumeRequest(name=name), "volume"),
        (stubs.volumes.GetStats, V.GetVolumeStatsRequest(name=name), "volume"),
        (stubs.volumes.Flatten, V.FlattenVolumeRequest(name=name), "volume"),
        (stubs.snapshots.List, S.ListSnapshotsRequest(volume=name), "volume"),
        (stubs.classes.Create, storage_class_pb2.CreateStorageClassRequest(
            storage_class=types_pb2.StorageClass(name=name)), "storage class"),
        (stubs.classes.Delete, storage_class_pb2.DeleteStorageClassRequest(name=name), "storage class"),
        (stubs.policies.Create, S.CreateSnapshotPolicyRequest(policy=S.SnapshotPolicy(
            name=name, schedule="0 0 1 1 *", retention=1)), "snapshot policy"),
        (stubs.policies.Delete, S.DeleteSnapshotPolicyRequest(name=name), "snapshot policy"),
        (stubs.qos.Create, Q.CreateQosPolicyRequest(policy=Q.QosPolicy(name=name)), "QoS policy"),
        (stubs.qos.Assign, Q.AssignQosPolicyRequest(policy=name, volume=VICTIM), "QoS policy"),
        (stubs.qos.Assign, Q.AssignQosPolicyRequest(policy="", volume=name), "volume"),
        (stubs.audit.List, audit_pb2.ListAuditRecordsRequest(volume=name), "volume"),
        (stubs.keys.Rekey, key_pb2.RekeyVolumeRequest(name=name), "volume"),
    ]
    for call, request, what in calls:
        details = refused(call, request, name)
        assert what in details, (type(request).__name__, details)
    assert host_state(shared_daemon, tmp_path) == before


# "Upper" and "a/b" are fine label keys (Kubernetes' rules); these are not keys nor values.
LABEL_ATTACKS = ["..", "base\n", "a\x00b", "a/b/c", "-x", "x\u202ey", TEN_THOUSAND]


@pytest.mark.parametrize("text", LABEL_ATTACKS, ids=lambda n: repr(n[:20]))
def test_labels_are_checked(shared_daemon: RunningDaemon, stubs: Stubs, tmp_path: Path, text: str) -> None:
    before = host_state(shared_daemon, tmp_path)
    V, S = volume_pb2, snapshot_pb2
    calls = [
        (stubs.volumes.Create, V.CreateVolumeRequest(name="ok", size_bytes=8 * MiB, labels={text: "v"}),
         "label key"),
        (stubs.volumes.Create, V.CreateVolumeRequest(name="ok", size_bytes=8 * MiB, labels={"k": text}),
         "value"),
        (stubs.volumes.Clone, V.CloneVolumeRequest(volume=VICTIM, snapshot="good", name="ok",
                                                   labels={"k": text}), "value"),
        (stubs.volumes.List, V.ListVolumesRequest(label_selector={"app": text}), "value"),
        (stubs.policies.Create, S.CreateSnapshotPolicyRequest(policy=S.SnapshotPolicy(
            name="ok", schedule="0 0 1 1 *", retention=1, volume_selector={text: "x"})), "label key"),
    ]
    for call, request, what in calls:
        details = refused(call, request, text)
        assert what in details, (type(request).__name__, details)
    assert host_state(shared_daemon, tmp_path) == before


def test_ten_thousand_characters_are_never_echoed(shared_daemon: RunningDaemon, stubs: Stubs,
                                                  tmp_path: Path) -> None:
    """A 10,000-character name once came back whole in the status; with a longer one the
    answer became RESOURCE_EXHAUSTED (gRPC's metadata limit)."""
    for size in (10_000, 100_000, 1_000_000):
        name = "b" * size
        details = refused(stubs.volumes.Get, volume_pb2.GetVolumeRequest(name=name), name)
        assert f"({size} characters)" in details


def test_status_messages_are_bounded_even_for_valid_input(shared_daemon: RunningDaemon, stubs: Stubs,
                                                          tmp_path: Path) -> None:
    """The backstop: a valid 4,000-byte path is echoed by a NOT_FOUND deeper down, and the
    answer still carries at most 1 KiB of message."""
    path = "/" + "/".join(["p" * 60] * 64)
    with pytest.raises(grpc.RpcError) as info:
        stubs.volumes.Unmount(volume_pb2.UnmountVolumeRequest(path=path), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = info.value.details()
    assert "no volume is mounted on /ppp" in details
    assert len(details.encode()) <= 1024 and details.endswith("…"), len(details.encode())


# --- paths ------------------------------------------------------------------------------------------
def test_bad_mount_points_are_refused_before_anything_is_created(shared_daemon: RunningDaemon,
                                                                  stubs: Stubs, tmp_path: Path) -> None:
    base = str(tmp_path)
    attacks = [
        (base + "/m\x00x", "control character"),
        (base + "/m\nx", "control character"),
        (base + "/a" * 3000, "too long"),
        (base + "/a" * 70, "components"),
        (base + "/" + "n" * 256, "longer than 255 bytes"),
        ("relative/path", "must be an absolute path"),
        (base + "/../../etc/cron.d", "'..' component"),
        ("", "absolute path"),
    ]
    before = host_state(shared_daemon, tmp_path)
    for path, phrase in attacks:
        assert phrase in refused(stubs.volumes.Mount, volume_pb2.MountVolumeRequest(
            name=VICTIM, path=path), path)
        assert phrase in refused(stubs.snapshots.Mount, snapshot_pb2.MountSnapshotRequest(
            volume=VICTIM, name="good", path=path), path)
        if path:
            assert phrase in refused(stubs.volumes.Unmount, volume_pb2.UnmountVolumeRequest(path=path), path)
    assert host_state(shared_daemon, tmp_path) == before


# --- numbers, enums, times ---------------------------------------------------------------------------
def test_absurd_numbers_and_unknown_enums(shared_daemon: RunningDaemon, stubs: Stubs, tmp_path: Path) -> None:
    before = host_state(shared_daemon, tmp_path)
    digits = "9" * 5000
    cls = types_pb2.StorageClass
    cases = [
        (stubs.classes.Create, storage_class_pb2.CreateStorageClassRequest(
            storage_class=cls(name="huge", parameters={"block_size": digits})), "block_size", digits),
        (stubs.classes.Create, storage_class_pb2.CreateStorageClassRequest(
            storage_class=cls(name="huge", parameters={"block_size": "9" * 400})), "block_size", ""),
        (stubs.classes.Create, storage_class_pb2.CreateStorageClassRequest(
            storage_class=cls(name="odd", reclaim_policy=5)), "unknown reclaim policy 5", ""),
        (stubs.classes.Create, storage_class_pb2.CreateStorageClassRequest(
            storage_class=cls(name="odd", volume_binding_mode=9)), "unknown volume binding mode 9", ""),
        (stubs.volumes.Create, volume_pb2.CreateVolumeRequest(name="odd", size_bytes=8 * MiB, type=77),
         "unknown volume type 77", ""),
        (stubs.volumes.Create, volume_pb2.CreateVolumeRequest(name="odd", size_bytes=8 * MiB,
                                                              access_modes=[1, -5]), "unknown access mode -5", ""),
        (stubs.volumes.Create, volume_pb2.CreateVolumeRequest(name="odd", size_bytes=2**64 - 1),
         "out of range", ""),
        (stubs.volumes.Clone, volume_pb2.CloneVolumeRequest(volume=VICTIM, snapshot="good", name="odd",
                                                            size_bytes=2**63), "out of range", ""),
        (stubs.qos.Create, qos_pb2.CreateQosPolicyRequest(policy=qos_pb2.QosPolicy(
            name="nan", limits=qos_pb2.QosRates(iops=float("nan")))), "finite", ""),
        (stubs.qos.Create, qos_pb2.CreateQosPolicyRequest(policy=qos_pb2.QosPolicy(
            name="inf", burstable=qos_pb2.QosBurst(duration_seconds=float("inf")))), "finite", ""),
    ]
    for call, request, phrase, sent in cases:
        assert phrase in refused(call, request, sent)
    assert host_state(shared_daemon, tmp_path) == before


@pytest.mark.parametrize(("seconds", "nanos", "phrase"), [
    (-10**15, 0, "not a valid time"),          # before year 1: not even a Timestamp
    (-62_135_596_800, 0, "before 1970-01-01"), # year 1, valid protobuf, before the epoch
    (-1, 0, "before 1970-01-01"),
    (253_402_300_800, 0, "not a valid time"),  # year 10000
    (10**15, 0, "not a valid time"),
    (0, -1, "not a valid time"),
    (0, 10**9, "not a valid time"),
])
def test_since_far_in_the_past_or_future(stubs: Stubs, seconds: int, nanos: int, phrase: str) -> None:
    request = audit_pb2.ListAuditRecordsRequest()
    request.since.seconds = seconds
    request.since.nanos = nanos
    assert phrase in refused(stubs.audit.List, request)


def test_a_reasonable_since_still_works(stubs: Stubs) -> None:
    request = audit_pb2.ListAuditRecordsRequest()
    request.since.seconds = 1
    reply = stubs.audit.List(request, timeout=30)
    assert any(r.method == "galleonfs.v1.VolumeService/Create" for r in reply.records)
    request.since.seconds = 253_402_300_799          # the last second of year 9999: none yet
    assert list(stubs.audit.List(request, timeout=30).records) == []


# --- bytes that do not decode ----------------------------------------------------------------------
def raw_call(channel: grpc.Channel, method: str, payload: bytes, *, stream: bool = False) -> grpc.RpcError:
    """Send hand-built bytes as the request (no serializer: what an attacker's client does)."""
    call = (channel.unary_stream if stream else channel.unary_unary)(method)
    with pytest.raises(grpc.RpcError) as info:
        reply = call(payload, timeout=30)
        if stream:
            list(reply)
    return info.value


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2) of a protobuf message, by hand."""
    assert number < 16 and len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


BAD_UTF8 = [b"\xff\xfe", b"base\xc0\xaf", b"\xed\xa0\x80", b"ok\x80"]


@pytest.mark.parametrize("method", [
    "/galleonfs.v1.VolumeService/Create", "/galleonfs.v1.VolumeService/Get",
    "/galleonfs.v1.VolumeService/Delete", "/galleonfs.v1.SnapshotService/Mount",
    "/galleonfs.v1.StorageClassService/Get", "/galleonfs.v1.QosService/Delete",
    "/galleonfs.v1.KeyService/Rekey",
])
def test_invalid_utf8_is_invalid_argument(shared_daemon: RunningDaemon, channel: grpc.Channel,
                                          victim: str, tmp_path: Path, method: str) -> None:
    before = host_state(shared_daemon, tmp_path)
    for bad in BAD_UTF8:
        error = raw_call(channel, method, field(1, bad), stream=method.endswith("/Rekey"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        assert "could not be decoded" in error.details() and "UTF-8" in error.details()
        assert_bounded(error.details(), "")
    # Garbage that is not a message at all: a length running past the end, a bad wire type.
    for garbage in (b"\x0a\x7fabc", b"\x0f", b"\xff" * 20):
        error = raw_call(channel, method, garbage, stream=method.endswith("/Rekey"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert host_state(shared_daemon, tmp_path) == before
    assert "Exception deserializing" not in shared_daemon.log()


def test_undecodable_calls_are_audited_as_refused(shared_daemon: RunningDaemon, channel: grpc.Channel,
                                                  victim: str) -> None:
    raw_call(channel, "/galleonfs.v1.VolumeService/Delete", field(1, b"victim\xff"))
    with Client(shared_daemon.address) as c:
        last = list(c.list_audit().records)[-1]
        assert VICTIM in [v.name for v in c.list_volumes()]
    assert last.method == "galleonfs.v1.VolumeService/Delete"
    assert last.code == "INVALID_ARGUMENT" and "could not be decoded" in last.message


# --- the command line -------------------------------------------------------------------------------
def ctl_bytes(daemon: RunningDaemon, *args: bytes) -> subprocess.CompletedProcess[str]:
    """galleonctl with raw argv bytes (a shell passes whatever bytes it was given)."""
    return subprocess.run([sys.executable.encode(), b"-m", b"galleonfs.cli.galleonctl", b"--address",
                           daemon.address.encode(), *args], capture_output=True, text=True,
                          timeout=120, env=daemon.env)


def test_cli_prints_one_bounded_line(shared_daemon: RunningDaemon, victim: str, tmp_path: Path) -> None:
    before = host_state(shared_daemon, tmp_path)
    user_error(shared_daemon.ctl("volume", "create", "base\n", "--size", "8M"), 2,
               "invalid volume name 'base\\n'")
    message = user_error(shared_daemon.ctl("volume", "create", TEN_THOUSAND, "--size", "8M"), 2,
                         "invalid volume name", "(10000 characters)")
    assert len(message) <= MESSAGE_CHARS_MAX
    user_error(shared_daemon.ctl("snapshot", "mount", f"{VICTIM}@..", str(tmp_path / "m")), 2,
               "invalid snapshot name '..'")
    user_error(shared_daemon.ctl("snapshot", "delete", f"{VICTIM}@"), 2, "VOLUME@SNAPSHOT")
    user_error(shared_daemon.ctl("audit", "list", "--since", "100000000d"), 2, "invalid --since")
    user_error(ctl_bytes(shared_daemon, b"volume", b"create", b"bad\xff", b"--size", b"8M"), 2,
               "not valid UTF-8")
    user_error(ctl_bytes(shared_daemon, b"volume", b"mount", VICTIM.encode(),
                         os.fsencode(tmp_path) + b"/\xff"), 2, "not valid UTF-8")
    assert host_state(shared_daemon, tmp_path) == before


def test_standalone_mkfs_checks_the_name(tmp_path: Path) -> None:
    """`galleonfs mkfs --name` follows galleond's rules: no look-alike 'base\\n' on disk either."""
    volume_dir = tmp_path / "vol"
    for name, phrase in (("base\n", "invalid volume name 'base\\n'"), ("../x", "invalid volume name"),
                         (TEN_THOUSAND, "(10000 characters)")):
        done = subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonfs", "mkfs", str(volume_dir),
                               "--size", "16M", "--name", name], capture_output=True, text=True, timeout=120)
        message = user_error(done, 2, phrase, prog="galleonfs")
        assert len(message) <= MESSAGE_CHARS_MAX
        assert not volume_dir.exists()
