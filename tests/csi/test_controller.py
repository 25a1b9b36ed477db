"""The CSI Identity and Controller services, over the wire against a real galleond, from
the specification's tables: required fields missing -> INVALID_ARGUMENT, idempotency by
name, ALREADY_EXISTS for an incompatible repeat, OUT_OF_RANGE, NOT_FOUND, pagination
tokens (ABORTED for a token the driver did not make), snapshots."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc

from galleonfs.csi.v1 import csi_pb2, csi_pb2_grpc
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

from .conftest import Csi, start_driver, stop_driver
from .util import MiB, block_cap, fails, mount_cap, unique

Rpc = csi_pb2.ControllerServiceCapability.RPC


def create(csi: Csi, name: str, size: int = 8 * MiB, **fields: Any) -> csi_pb2.Volume:
    request = csi_pb2.CreateVolumeRequest(
        name=name, volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=size), **fields)
    volume: csi_pb2.Volume = csi.controller.CreateVolume(request, timeout=60).volume
    return volume


def delete(csi: Csi, volume_id: str) -> None:
    csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=60)


def test_identity(csi: Csi) -> None:
    info = csi.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "csi.galleonfs.io" and info.vendor_version
    caps = csi.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
    services = {c.service.type for c in caps if c.HasField("service")}
    assert csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE in services
    expansion = [c.volume_expansion.type for c in caps if c.HasField("volume_expansion")]
    assert expansion == [csi_pb2.PluginCapability.VolumeExpansion.ONLINE]
    probe = csi.identity.Probe(csi_pb2.ProbeRequest())
    assert probe.HasField("ready") and probe.ready.value is True
    controller = csi.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest())
    assert {c.rpc.type for c in controller.capabilities} == {
        Rpc.CREATE_DELETE_VOLUME, Rpc.LIST_VOLUMES, Rpc.GET_CAPACITY, Rpc.CREATE_DELETE_SNAPSHOT,
        Rpc.LIST_SNAPSHOTS, Rpc.CLONE_VOLUME, Rpc.EXPAND_VOLUME}
    # Not offered: an attach step, and so its RPCs answer UNIMPLEMENTED.
    code, _ = fails(csi.controller.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
        volume_id="x", node_id="test-node", volume_capability=mount_cap()))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_create_volume_required_fields_and_bad_input(csi: Csi) -> None:
    cases = [
        csi_pb2.CreateVolumeRequest(volume_capabilities=[mount_cap()]),                     # no name
        csi_pb2.CreateVolumeRequest(name=unique("nocaps")),                                  # no capabilities
        csi_pb2.CreateVolumeRequest(name=unique("block"), volume_capabilities=[block_cap()]),
        csi_pb2.CreateVolumeRequest(name=unique("nomode"), volume_capabilities=[
            csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume())]),
        csi_pb2.CreateVolumeRequest(name=unique("param"), volume_capabilities=[mount_cap()],
                                    parameters={"colour": "blue"}),
        csi_pb2.CreateVolumeRequest(name=unique("ext4"), volume_capabilities=[csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="ext4"), access_mode=mount_cap().access_mode)]),
        csi_pb2.CreateVolumeRequest(name="bad\x01name", volume_capabilities=[mount_cap()]),
    ]
    messages = []
    for request in cases:
        code, message = fails(csi.controller.CreateVolume, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (request, message)
        messages.append(message)
    assert "name is missing" in messages[0] and "volume_capabilities is missing" in messages[1]
    assert "block access type is not supported" in messages[2]
    assert "'colour' is not known" in messages[4]


def test_create_is_idempotent_by_name_and_honours_the_capacity_exactly(
        csi: Csi, shared_daemon: RunningDaemon) -> None:
    name = f"pvc-{uuid.uuid4()}"                   # Kubernetes' names are DNS labels: kept as they are
    first = create(csi, name, 9 * MiB + 4096)
    again = create(csi, name, 9 * MiB + 4096)
    assert first.volume_id == again.volume_id and first.capacity_bytes == 9 * MiB + 4096
    segments = dict(first.accessible_topology[0].segments)
    info = csi.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert dict(info.accessible_topology.segments) == segments and info.node_id == "test-node"
    with Client(shared_daemon.address) as client:
        volume = client.get_volume(first.volume_id)
        assert volume.name == name and volume.size_bytes == 9 * MiB + 4096
    code, message = fails(csi.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
        name=name, volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=20 * MiB)))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "capacity range" in message
    # Any string is a CSI name: one that is no DNS label maps to a stable hashed name.
    odd = create(csi, "Sanity Volume\t/ ü " + name)        # a tab is allowed, U+0001 is not
    assert create(csi, "Sanity Volume\t/ ü " + name).volume_id == odd.volume_id != first.volume_id
    for volume_id in (first.volume_id, odd.volume_id):
        delete(csi, volume_id)
        delete(csi, volume_id)                       # again: success, it is gone
    code, _ = fails(csi.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    delete(csi, "never-existed")


def test_capacity_ranges(csi: Csi) -> None:
    def ask(required: int, limit: int) -> csi_pb2.CreateVolumeRequest:
        return csi_pb2.CreateVolumeRequest(name=unique("cap"), volume_capabilities=[mount_cap()],
                                           capacity_range=csi_pb2.CapacityRange(required_bytes=required,
                                                                                limit_bytes=limit))
    for required, limit in ((20 * MiB, 10 * MiB), (0, 4096), (1 << 62, 0)):
        code, message = fails(csi.controller.CreateVolume, ask(required, limit))
        assert code == grpc.StatusCode.OUT_OF_RANGE, message
    only_limit = csi.controller.CreateVolume(ask(0, 5 * MiB)).volume
    assert only_limit.capacity_bytes == 5 * MiB
    delete(csi, only_limit.volume_id)


def test_not_found_and_validate_capabilities(csi: Csi) -> None:
    missing = str(uuid.uuid4())
    for method, request in [
        (csi.controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=missing, volume_capabilities=[mount_cap()])),
        (csi.controller.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
            volume_id=missing, capacity_range=csi_pb2.CapacityRange(required_bytes=20 * MiB))),
        (csi.controller.CreateSnapshot, csi_pb2.CreateSnapshotRequest(source_volume_id=missing, name="s")),
        (csi.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
            name=unique("fromnothing"), volume_capabilities=[mount_cap()],
            volume_content_source=csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=f"{missing}@gone")))),
        # Ids that cannot name a GalleonFS volume at all are NOT_FOUND too, not a parse error.
        (csi.controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id="Not A Volume!", volume_capabilities=[mount_cap()])),
    ]:
        code, message = fails(method, request)
        assert code == grpc.StatusCode.NOT_FOUND, message
    volume = create(csi, unique("validate"))
    try:
        code, _ = fails(csi.controller.ValidateVolumeCapabilities,
                        csi_pb2.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        good = csi.controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[mount_cap()]))
        assert list(good.confirmed.volume_capabilities) == [mount_cap()]
        bad = csi.controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[block_cap()]))
        assert not bad.HasField("confirmed") and "block" in bad.message
    finally:
        delete(csi, volume.volume_id)


def test_list_volumes_pages_without_repeats(csi: Csi) -> None:
    made = [create(csi, unique("list")).volume_id for _ in range(3)]
    try:
        seen: list[str] = []
        token = ""
        for _ in range(20):
            reply = csi.controller.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2, starting_token=token))
            assert len(reply.entries) <= 2
            seen += [e.volume.volume_id for e in reply.entries]
            token = reply.next_token
            if not token:
                break
        assert len(seen) == len(set(seen)) and set(made) <= set(seen)
        everything = csi.controller.ListVolumes(csi_pb2.ListVolumesRequest())
        assert sorted(e.volume.volume_id for e in everything.entries) == sorted(seen)
        assert not everything.next_token

        # Between two pages, the last volume of the first page goes and a new one comes: the
        # token still works, and the rest is everything not on the first page, the new one too.
        first = csi.controller.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2))
        page_one = [e.volume.volume_id for e in first.entries]
        assert len(page_one) == 2 and first.next_token
        delete(csi, page_one[-1])
        if page_one[-1] in made:
            made.remove(page_one[-1])
        made.append(create(csi, unique("late")).volume_id)
        rest = csi.controller.ListVolumes(csi_pb2.ListVolumesRequest(starting_token=first.next_token))
        now = [e.volume.volume_id for e in csi.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries]
        assert sorted(e.volume.volume_id for e in rest.entries) == sorted(set(now) - set(page_one))
        assert made[-1] in {e.volume.volume_id for e in rest.entries}

        code, _ = fails(csi.controller.ListVolumes, csi_pb2.ListVolumesRequest(starting_token="invalid-token"))
        assert code == grpc.StatusCode.ABORTED
    finally:
        for volume_id in made:
            delete(csi, volume_id)


def test_get_capacity(csi: Csi, shared_daemon: RunningDaemon) -> None:
    reply = csi.controller.GetCapacity(csi_pb2.GetCapacityRequest(volume_capabilities=[mount_cap()]))
    with Client(shared_daemon.address) as client:
        status = client.node_status()
    assert reply.available_capacity == status.capacity_bytes - status.provisioned_bytes > 0
    assert csi.controller.GetCapacity(csi_pb2.GetCapacityRequest(
        volume_capabilities=[block_cap()])).available_capacity == 0


def test_snapshots(csi: Csi, shared_daemon: RunningDaemon) -> None:
    volume, other = create(csi, unique("snapsrc")), create(csi, unique("snapother"))
    snapshots: list[str] = []
    try:
        request = csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id, name=unique("snap"))
        snap = csi.controller.CreateSnapshot(request).snapshot
        snapshots.append(snap.snapshot_id)
        assert csi.controller.CreateSnapshot(request).snapshot.snapshot_id == snap.snapshot_id
        assert snap.source_volume_id == volume.volume_id and snap.ready_to_use
        assert snap.size_bytes == volume.capacity_bytes and snap.creation_time.seconds > 0
        code, _ = fails(csi.controller.CreateSnapshot, csi_pb2.CreateSnapshotRequest(
            source_volume_id=other.volume_id, name=request.name))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        for bad in (csi_pb2.CreateSnapshotRequest(name="x"),
                    csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id)):
            assert fails(csi.controller.CreateSnapshot, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT
        for i in range(3):
            snapshots.append(csi.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                source_volume_id=volume.volume_id, name=unique(f"page{i}"))).snapshot.snapshot_id)

        by_id = csi.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=snap.snapshot_id))
        assert [e.snapshot.snapshot_id for e in by_id.entries] == [snap.snapshot_id]
        assert not csi.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(
            snapshot_id=f"{volume.volume_id}@nope")).entries
        seen: list[str] = []
        token = ""
        while True:
            reply = csi.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(
                source_volume_id=volume.volume_id, max_entries=3, starting_token=token))
            assert len(reply.entries) <= 3
            seen += [e.snapshot.snapshot_id for e in reply.entries]
            token = reply.next_token
            if not token:
                break
        assert sorted(seen) == sorted(snapshots)
        code, _ = fails(csi.controller.ListSnapshots, csi_pb2.ListSnapshotsRequest(starting_token="zzz"))
        assert code == grpc.StatusCode.ABORTED

        for snapshot_id in snapshots:
            csi.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))
            csi.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))
        snapshots.clear()
        assert not csi.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(
            source_volume_id=volume.volume_id)).entries
        assert fails(csi.controller.DeleteSnapshot,
                     csi_pb2.DeleteSnapshotRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT
        # Deleted behind the driver's back (galleonctl): the name is free for another volume.
        moved = csi_pb2.CreateSnapshotRequest(source_volume_id=volume.volume_id, name=unique("moved"))
        gone = csi.controller.CreateSnapshot(moved).snapshot
        with Client(shared_daemon.address) as client:
            client.delete_snapshot(volume.volume_id, gone.snapshot_id.split("@")[1])
        moved.source_volume_id = other.volume_id
        snapshots.append(csi.controller.CreateSnapshot(moved).snapshot.snapshot_id)
        assert snapshots[-1].startswith(other.volume_id + "@")
    finally:
        for snapshot_id in snapshots:
            csi.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))
        delete(csi, volume.volume_id)
        delete(csi, other.volume_id)


def test_expand_and_its_errors(csi: Csi) -> None:
    volume = create(csi, unique("grow"))
    try:
        code, _ = fails(csi.controller.ControllerExpandVolume,
                        csi_pb2.ControllerExpandVolumeRequest(volume_id=volume.volume_id))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        grown = csi.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MiB)))
        assert grown.capacity_bytes == 16 * MiB and not grown.node_expansion_required
        code, _ = fails(csi.controller.ControllerExpandVolume, csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=20 * MiB),
            volume_capability=block_cap()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        delete(csi, volume.volume_id)


def test_secrets_carry_the_galleond_token(csi: Csi, shared_daemon: RunningDaemon) -> None:
    """A ``token`` in a request's CSI secrets is the credential galleond sees for that call
    (the driver's own otherwise): a viewer's token may not create, a wrong one is refused."""
    with Client(shared_daemon.address) as client:
        viewer = client.create_token(unique("viewer"), "viewer", ttl_s=600).secret
        operator = client.create_token(unique("operator"), "operator", ttl_s=600).secret

    def ask(token: str) -> csi_pb2.CreateVolumeRequest:
        return csi_pb2.CreateVolumeRequest(name=unique("secret"), volume_capabilities=[mount_cap()],
                                           capacity_range=csi_pb2.CapacityRange(required_bytes=4 * MiB),
                                           secrets={"token": token})
    assert fails(csi.controller.CreateVolume, ask(viewer))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert fails(csi.controller.CreateVolume, ask("gfs1.not-a-token"))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert fails(csi.controller.CreateVolume, ask("two\nlines"))[0] == grpc.StatusCode.UNAUTHENTICATED
    made = csi.controller.CreateVolume(ask(operator)).volume
    csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=made.volume_id, secrets={"token": operator}))


def test_probe_without_galleond_and_bad_endpoints(tmp_path: Path) -> None:
    proc, sock, log = start_driver(tmp_path, f"unix:{tmp_path}/no-galleond.sock", "--mode", "node")
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            identity = csi_pb2_grpc.IdentityStub(channel)
            code, message = fails(identity.Probe, csi_pb2.ProbeRequest())
            assert code == grpc.StatusCode.UNAVAILABLE and "is it running?" in message
            caps = identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
            assert csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE not in {
                c.service.type for c in caps if c.HasField("service")}
            code, _ = fails(csi_pb2_grpc.ControllerStub(channel).CreateVolume,
                            csi_pb2.CreateVolumeRequest(name="x"))
            assert code == grpc.StatusCode.UNIMPLEMENTED     # --mode node serves no Controller
    finally:
        stop_driver(proc, log)
    (tmp_path / "plain").write_text("not a socket")
    for endpoint, words in ((f"unix://{tmp_path}/plain", "is not a socket"),
                            ("unix://relative.sock", "absolute path")):
        done = subprocess.run([sys.executable, "-m", "galleonfs.csi.main", "--endpoint", endpoint],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "plain").read_text() == "not a socket"
