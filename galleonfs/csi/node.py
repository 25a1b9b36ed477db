"""CSI Node: the volume's mount on this node, through galleond.

NodeStageVolume asks galleond to mount the volume at the staging path: galleond starts
the volume's mount worker (its one FUSE mount) and bind-mounts it there. Each
NodePublishVolume is one more mount point of that same FUSE mount at the target path
(read-only when ``readonly`` is set or the access mode is read-only), so every pod on the
node shares one page cache and one writer process. galleond checks and pins every path
under its ``mount_roots`` (the kubelet's directory in a cluster) and mounts with
``nosuid,nodev``; the driver only passes on the paths CSI handed it.

Idempotency is read off galleond's record of the volume's mount points: a path already
mounted as asked is success, mounted otherwise is ALREADY_EXISTS, absent on unpublish or
unstage is success. A second call for the same volume and path while one is in flight is
ABORTED; calls for other paths of the volume (two pods starting at once) go ahead, and
galleond serialises them on the volume.
"""

from __future__ import annotations

import contextlib
import os

import grpc

from ..rpc.client import Client
from . import spec
from .service import Backend, find_volume, mounted_at, rpc
from .spec import CsiError, path, required
from .v1 import csi_pb2, csi_pb2_grpc

RPC = csi_pb2.NodeServiceCapability.RPC
CAPABILITIES = (RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME, RPC.VOLUME_CONDITION)
Usage = csi_pb2.VolumeUsage


class Node(csi_pb2_grpc.NodeServicer):
    def __init__(self, backend: Backend, *, node_id: str, max_volumes: int = 0) -> None:
        self.backend = backend
        self.node_id = node_id
        self.max_volumes = max_volumes

    @rpc
    def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest,
                        context: grpc.ServicerContext) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        staging = path(request.staging_target_path, "staging_target_path")
        if not request.HasField("volume_capability"):
            raise spec.invalid("volume_capability is missing: the CSI specification requires it")
        spec.check_capability(request.volume_capability)
        read_only = spec.reader_only(request.volume_capability)
        with self.backend.guard(f"{volume_id} {staging}"), self.backend.galleond(request.secrets) as client:
            self._mount(client, volume_id, staging, read_only)
        return csi_pb2.NodeStageVolumeResponse()

    @rpc
    def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodeUnstageVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        staging = path(request.staging_target_path, "staging_target_path")
        with self.backend.guard(f"{volume_id} {staging}"):
            self._unmount(self.backend.client, volume_id, staging)
        return csi_pb2.NodeUnstageVolumeResponse()

    @rpc
    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        staging = path(request.staging_target_path, "staging_target_path")
        target = path(request.target_path, "target_path")
        if not request.HasField("volume_capability"):
            raise spec.invalid("volume_capability is missing: the CSI specification requires it")
        spec.check_capability(request.volume_capability)
        read_only = request.readonly or spec.reader_only(request.volume_capability)
        with self.backend.guard(f"{volume_id} {target}"), self.backend.galleond(request.secrets) as client:
            volume = find_volume(client, volume_id)
            if mounted_at(volume, staging) is None:
                raise CsiError("FAILED_PRECONDITION", f"volume {volume_id[:64]!r} is not staged at "
                                                      f"{staging[:128]!r}: call NodeStageVolume first")
            self._mount(client, volume_id, target, read_only)
        return csi_pb2.NodePublishVolumeResponse()

    @rpc
    def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeUnpublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        target = path(request.target_path, "target_path")
        with self.backend.guard(f"{volume_id} {target}"):
            if self._unmount(self.backend.client, volume_id, target):
                # galleond made the directory if it was missing; the specification asks the
                # plugin to remove what it made. rmdir only: never a tree, never a mount.
                with contextlib.suppress(OSError):
                    os.rmdir(target)
        return csi_pb2.NodeUnpublishVolumeResponse()

    @staticmethod
    def _mount(client: Client, volume_id: str, where: str, read_only: bool) -> None:
        volume = find_volume(client, volume_id)
        point = mounted_at(volume, where)
        if point is not None:
            if point.read_only != read_only:
                raise CsiError("ALREADY_EXISTS", f"volume {volume_id[:64]!r} is mounted at {where[:128]!r} "
                                                 f"{'read-only' if point.read_only else 'read-write'} already")
            return
        client.mount_volume(volume.id, where, read_only=read_only)

    @staticmethod
    def _unmount(client: Client, volume_id: str, where: str) -> bool:
        """Unmount ``where``; False when it was not mounted (success all the same)."""
        volume = find_volume(client, volume_id)
        if mounted_at(volume, where) is None:
            return False
        client.unmount_volume(path=where)
        return True

    @rpc
    def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest,
                           context: grpc.ServicerContext) -> csi_pb2.NodeGetVolumeStatsResponse:
        volume_id = required(request.volume_id, "volume_id")
        required(request.volume_path, "volume_path")
        client = self.backend.client
        volume = find_volume(client, volume_id)       # NOT_FOUND first, whatever the path
        where = path(request.volume_path, "volume_path")
        if mounted_at(volume, where) is None:
            raise CsiError("NOT_FOUND", f"volume {volume_id[:64]!r} is not mounted at {where[:128]!r}")
        stats = client.volume_stats(volume.id)
        condition = csi_pb2.VolumeCondition(
            abnormal=stats.failsafe,
            message=(f"read-only after a fault: {stats.failsafe_reason}" if stats.failsafe else "healthy"))
        return csi_pb2.NodeGetVolumeStatsResponse(volume_condition=condition, usage=[
            Usage(unit=Usage.BYTES, total=stats.size_bytes, used=stats.used_bytes, available=stats.free_bytes),
            Usage(unit=Usage.INODES, total=stats.inodes_total, used=stats.inodes_used,
                  available=max(0, stats.inodes_total - stats.inodes_used))])

    @rpc
    def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest,
                         context: grpc.ServicerContext) -> csi_pb2.NodeExpandVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        required(request.volume_path, "volume_path")
        if request.HasField("volume_capability"):
            spec.check_capability(request.volume_capability)
        with self.backend.guard(volume_id), self.backend.galleond(request.secrets) as client:
            volume = find_volume(client, volume_id)   # NOT_FOUND first, whatever the path
            where = path(request.volume_path, "volume_path")
            if mounted_at(volume, where) is None:
                raise CsiError("NOT_FOUND", f"volume {volume_id[:64]!r} is not mounted at {where[:128]!r}")
            # ControllerExpandVolume grew it already (the mount sees it at once); a node-side
            # call with a larger range grows it here the same way.
            if request.HasField("capacity_range"):
                size = spec.size_for(request.capacity_range)
                if size > volume.size_bytes:
                    volume = client.expand_volume(volume.id, size)
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=volume.size_bytes)

    @rpc
    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES])

    @rpc
    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                    context: grpc.ServicerContext) -> csi_pb2.NodeGetInfoResponse:
        galleond_node = self.backend.client.node_status().node_id
        return csi_pb2.NodeGetInfoResponse(
            node_id=self.node_id, max_volumes_per_node=self.max_volumes,
            accessible_topology=csi_pb2.Topology(segments={spec.TOPOLOGY_KEY: galleond_node}))
