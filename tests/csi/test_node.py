"""The CSI Node service with real FUSE mounts: stage (galleond's mount of the volume at the
staging path), publish (more mount points of it, read-only where asked), unpublish and
unstage, each idempotent; what a workload does through the published path (bytes written
and read back, EROFS on a read-only publish, df after an online expansion); and clones from
a snapshot and from a volume, read through their own published paths; a volume in failsafe
reported abnormal."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import grpc
import pytest

from galleonfs.csi.controller import CLONE_PREFIX
from galleonfs.csi.v1 import csi_pb2
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.damage import flip_byte, locate

from .conftest import Csi
from .util import MiB, block_cap, fails, mount_cap, unique

pytestmark = pytest.mark.mount
Usage = csi_pb2.VolumeUsage


def create(csi: Csi, size: int = 8 * MiB, **fields: object) -> str:
    volume_id: str = csi.controller.CreateVolume(csi_pb2.CreateVolumeRequest(
        name=unique("node"), volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=size), **fields), timeout=60).volume.volume_id
    return volume_id


def stage(csi: Csi, volume_id: str, staging: Path) -> None:
    csi.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=volume_id, staging_target_path=str(staging), volume_capability=mount_cap()), timeout=60)


def publish(csi: Csi, volume_id: str, staging: Path, target: Path, *, readonly: bool = False) -> None:
    csi.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id, staging_target_path=str(staging), target_path=str(target),
        volume_capability=mount_cap(), readonly=readonly), timeout=60)


def unpublish(csi: Csi, volume_id: str, target: Path) -> None:
    csi.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id, target_path=str(target)), timeout=60)


def unstage(csi: Csi, volume_id: str, staging: Path) -> None:
    csi.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=volume_id, staging_target_path=str(staging)), timeout=60)


def test_stage_publish_write_read_expand_unpublish_unstage(csi: Csi, tmp_path: Path) -> None:
    volume_id = create(csi)
    staging = tmp_path / "plugins" / "globalmount"
    staging.mkdir(parents=True)                       # the CO makes the staging directory
    target, ro_target = tmp_path / "pods" / "a" / "mount", tmp_path / "pods" / "b" / "mount"
    target.parent.mkdir(parents=True)                 # and the target's parent; the SP the target
    ro_target.parent.mkdir(parents=True)

    code, message = fails(csi.node.NodePublishVolume, csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id, staging_target_path=str(staging), target_path=str(target),
        volume_capability=mount_cap()))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "NodeStageVolume first" in message
    for bad in (
        csi_pb2.NodeStageVolumeRequest(staging_target_path=str(staging), volume_capability=mount_cap()),
        csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, volume_capability=mount_cap()),
        csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging)),
        csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path="relative/path",
                                       volume_capability=mount_cap()),
        csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=f"{staging}/../x",
                                       volume_capability=mount_cap()),
        csi_pb2.NodeStageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging),
                                       volume_capability=block_cap()),
    ):
        assert fails(csi.node.NodeStageVolume, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert fails(csi.node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(
        volume_id="gone-volume", staging_target_path=str(staging),
        volume_capability=mount_cap()))[0] == grpc.StatusCode.NOT_FOUND
    try:
        stage(csi, volume_id, staging)
        stage(csi, volume_id, staging)                # idempotent
        publish(csi, volume_id, staging, target)
        publish(csi, volume_id, staging, target)      # idempotent
        code, _ = fails(csi.node.NodePublishVolume, csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=str(staging), target_path=str(target),
            volume_capability=mount_cap(), readonly=True))
        assert code == grpc.StatusCode.ALREADY_EXISTS

        data = os.urandom(300_000)
        (target / "app.bin").write_bytes(data)
        publish(csi, volume_id, staging, ro_target, readonly=True)
        assert (ro_target / "app.bin").read_bytes() == data
        with pytest.raises(OSError) as info:
            (ro_target / "new.txt").write_text("x")
        assert info.value.errno == errno.EROFS
        assert not (target / "new.txt").exists()

        stats = csi.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume_id, volume_path=str(target)))
        usage = {u.unit: u for u in stats.usage}
        assert usage[Usage.BYTES].total == 8 * MiB and usage[Usage.BYTES].used >= len(data)
        assert usage[Usage.INODES].used >= 2 and usage[Usage.INODES].total > usage[Usage.INODES].used
        assert not stats.volume_condition.abnormal
        assert fails(csi.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume_id, volume_path=str(tmp_path / "elsewhere")))[0] == grpc.StatusCode.NOT_FOUND
        assert fails(csi.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume_id, volume_path="relative"))[0] == grpc.StatusCode.INVALID_ARGUMENT

        # Online expansion: the controller grows it, df inside the published path sees it.
        before = os.statvfs(target)
        assert before.f_blocks * before.f_frsize == 8 * MiB
        csi.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MiB)))
        after = os.statvfs(target)
        assert after.f_blocks * after.f_frsize == 32 * MiB
        node = csi.node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume_id, volume_path=str(target),
            capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MiB)))
        assert node.capacity_bytes == 32 * MiB
        (target / "big.bin").write_bytes(os.urandom(12 * MiB))    # more than the old size holds
        os.sync()
    finally:
        for point in (target, ro_target):
            unpublish(csi, volume_id, point)
            unpublish(csi, volume_id, point)          # idempotent
            assert not point.exists()                 # the SP removes what it made
        unstage(csi, volume_id, staging)
        unstage(csi, volume_id, staging)
        assert staging.is_dir() and not os.path.ismount(staging)
    assert fails(csi.node.NodeUnpublishVolume, csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id))[0] == grpc.StatusCode.INVALID_ARGUMENT
    csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    assert fails(csi.node.NodeUnpublishVolume, csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id, target_path=str(target)))[0] == grpc.StatusCode.NOT_FOUND
    # A volume that is gone is NOT_FOUND before its path is looked at (csi-sanity sends a
    # relative one with an unknown volume).
    assert fails(csi.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=volume_id, volume_path="some/path"))[0] == grpc.StatusCode.NOT_FOUND
    assert fails(csi.node.NodeExpandVolume, csi_pb2.NodeExpandVolumeRequest(
        volume_id=volume_id, volume_path="some/path"))[0] == grpc.StatusCode.NOT_FOUND
    for method, request in ((csi.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id)),
                            (csi.node.NodeExpandVolume, csi_pb2.NodeExpandVolumeRequest(volume_id=volume_id))):
        assert fails(method, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_clones_from_a_snapshot_and_from_a_volume(csi: Csi, shared_daemon: RunningDaemon,
                                                  tmp_path: Path) -> None:
    source = create(csi)
    staging, target = tmp_path / "src-stage", tmp_path / "src"
    staging.mkdir()
    stage(csi, source, staging)
    publish(csi, source, staging, target)
    (target / "before.txt").write_text("taken\n")
    snap = csi.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=source, name=unique("snap"))).snapshot
    (target / "after.txt").write_text("later\n")      # not in the snapshot
    unpublish(csi, source, target)
    unstage(csi, source, staging)

    from_snapshot = create(csi, 16 * MiB, volume_content_source=csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)))
    by_volume = csi_pb2.CreateVolumeRequest(
        name=unique("fromvolume"), volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=8 * MiB),
        volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source)))
    from_volume = csi.controller.CreateVolume(by_volume).volume.volume_id
    assert csi.controller.CreateVolume(by_volume).volume.volume_id == from_volume     # idempotent
    by_volume.volume_content_source.volume.volume_id = from_snapshot
    code, _ = fails(csi.controller.CreateVolume, by_volume)
    assert code == grpc.StatusCode.ALREADY_EXISTS             # the same name from another source
    code, _ = fails(csi.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
        name=unique("small"), volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=4 * MiB, limit_bytes=4 * MiB),
        volume_content_source=csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id))))
    assert code == grpc.StatusCode.OUT_OF_RANGE       # smaller than its source
    code, _ = fails(csi.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
        name=unique("small"), volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=4 * MiB, limit_bytes=4 * MiB),
        volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source))))
    assert code == grpc.StatusCode.OUT_OF_RANGE       # and it left no snapshot on the source (below)
    seen = {}
    for volume_id in (from_snapshot, from_volume):
        staging, target = tmp_path / f"{volume_id}-stage", tmp_path / volume_id
        staging.mkdir()
        stage(csi, volume_id, staging)
        publish(csi, volume_id, staging, target)
        seen[volume_id] = sorted(p.name for p in target.iterdir() if not p.name.startswith("."))
        assert (target / "before.txt").read_text() == "taken\n"
        statvfs = os.statvfs(target)
        seen[volume_id].append(str(statvfs.f_blocks * statvfs.f_frsize // MiB))
        unpublish(csi, volume_id, target)
        unstage(csi, volume_id, staging)
    assert seen == {from_snapshot: ["before.txt", "16"], from_volume: ["after.txt", "before.txt", "8"]}

    # The snapshot lives inside its volume: the volume cannot go before it.
    code, message = fails(csi.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=source))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "snapshot" in message
    # The volume's clone depends on nothing already: no snapshot of the source was left behind.
    with Client(shared_daemon.address) as client:
        assert [s.name for s in client.list_snapshots(source)] == [snap.snapshot_id.split("@")[1]]
        assert client.get_volume(from_snapshot).origin_snapshot      # shares the snapshot's blocks
    # Deleting the snapshot makes its clone independent first; the clone keeps its bytes.
    csi.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    with Client(shared_daemon.address) as client:
        assert not client.get_volume(from_snapshot).origin_snapshot
        assert client.list_snapshots(source) == []
    staging, target = tmp_path / "again-stage", tmp_path / "again"
    staging.mkdir()
    stage(csi, from_snapshot, staging)
    publish(csi, from_snapshot, staging, target)
    assert (target / "before.txt").read_text() == "taken\n"
    unpublish(csi, from_snapshot, target)
    unstage(csi, from_snapshot, staging)
    # A snapshot the driver cut for a volume-source clone that then failed for good is its
    # own leftover: it does not keep the source from being deleted.
    with Client(shared_daemon.address) as client:
        client.create_snapshot(source, CLONE_PREFIX + "0" * 24)
    for volume_id in (from_snapshot, from_volume, source):
        csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))


@pytest.mark.allow_warnings          # the worker logs the bad block and the failsafe switch
def test_volume_stats_report_a_failsafe_volume_as_abnormal(csi: Csi, shared_daemon: RunningDaemon,
                                                           tmp_path: Path) -> None:
    volume_id = create(csi)
    staging, target = tmp_path / "stage", tmp_path / "target"
    staging.mkdir()
    data = os.urandom(4 * 65536)
    stage(csi, volume_id, staging)
    publish(csi, volume_id, staging, target)
    (target / "victim").write_bytes(data)
    unpublish(csi, volume_id, target)
    unstage(csi, volume_id, staging)
    volume_dir = shared_daemon.data_dir / "volumes" / volume_id
    flip_byte(volume_dir, locate(volume_dir, "victim", 1), 64 + 100)   # a bad disk, under the volume

    stage(csi, volume_id, staging)
    publish(csi, volume_id, staging, target)
    try:
        with pytest.raises(OSError) as info:
            (target / "victim").read_bytes()
        assert info.value.errno == errno.EIO                            # never wrong bytes
        stats = csi.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=volume_id, volume_path=str(target)))
        assert stats.volume_condition.abnormal
        assert stats.volume_condition.message.startswith("read-only after a fault")
    finally:
        unpublish(csi, volume_id, target)
        unstage(csi, volume_id, staging)
        csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
