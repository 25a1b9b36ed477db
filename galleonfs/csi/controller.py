"""CSI Controller: volumes and snapshots, made and removed through galleond.

Every CreateVolume is idempotent by name (``spec.volume_name``): a second call with the same
name and compatible arguments answers the same volume; one whose capacity, storage class or
content source the existing volume does not match is ALREADY_EXISTS. A volume is created
ReadWriteMany on the GalleonFS side whatever the CSI access mode (ReadOnlyMany when every
requested mode is read-only): the staging mount and each publish are separate mount points
of one FUSE mount on the node, and which workloads may write is the orchestrator's to
enforce across nodes and pods.

Content sources: a snapshot becomes a clone that shares the snapshot's blocks (instant);
DeleteSnapshot flattens such clones first, so the CO may delete a snapshot whatever was
restored from it. A volume source is cloned from a snapshot taken for the purpose, then
flattened and the snapshot deleted, so the new volume depends on nothing. Snapshots live
inside their volume, so DeleteVolume of a volume that has snapshots is FAILED_PRECONDITION
(the specification's answer for snapshots that are not independent of their volume).

Volumes live on the node whose galleond made them (cluster mode, issue 12, will lift
that): the driver advertises VOLUME_ACCESSIBILITY_CONSTRAINTS with the topology segment
``topology.galleonfs.io/node`` = galleond's node id, so the orchestrator schedules the
workload where its volume is.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading

import grpc
from google.protobuf import wrappers_pb2

from ..errors import AlreadyExists, Busy, NotFound
from ..rpc.client import Client
from ..v1 import snapshot_pb2, types_pb2
from . import spec
from .service import Backend, find_volume, rpc
from .spec import CsiError, invalid, required
from .v1 import csi_pb2, csi_pb2_grpc

RPC = csi_pb2.ControllerServiceCapability.RPC
SOURCE_LABEL = "csi.galleonfs.io/source"     # what a volume was created from (idempotency)
CLONE_PREFIX = "csi-clone-"                  # the snapshot a volume-source clone is cut from
CAPABILITIES = (RPC.CREATE_DELETE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY, RPC.CREATE_DELETE_SNAPSHOT,
                RPC.LIST_SNAPSHOTS, RPC.CLONE_VOLUME, RPC.EXPAND_VOLUME)


def node_topology(client: Client) -> csi_pb2.Topology:
    return csi_pb2.Topology(segments={spec.TOPOLOGY_KEY: client.node_status().node_id})


def _digest(text: str, chars: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def _clone_snapshot(volume_name: str) -> str:
    """The snapshot of its source a volume-source clone named ``volume_name`` is cut from."""
    return CLONE_PREFIX + _digest(volume_name, 24)


class Controller(csi_pb2_grpc.ControllerServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # Snapshot name -> the id of the volume holding it. CSI snapshot names are unique
        # across volumes, GalleonFS's per volume, and listing every volume's snapshots costs
        # a helper process per unmounted volume (0.3-0.5 s each, measured): so one listing,
        # at the first CreateSnapshot, then kept up by this driver's own creates and deletes.
        self._owners: dict[str, str] | None = None
        self._owners_lock = threading.Lock()

    # --- volumes -----------------------------------------------------------------------------------
    @rpc
    def CreateVolume(self, request: csi_pb2.CreateVolumeRequest,
                     context: grpc.ServicerContext) -> csi_pb2.CreateVolumeResponse:
        name = spec.volume_name(spec.csi_name(request.name))
        spec.check_capabilities(request.volume_capabilities)
        params = spec.parse_parameters(request.parameters)
        capacity = request.capacity_range if request.HasField("capacity_range") else None
        source = request.volume_content_source if request.HasField("volume_content_source") else None
        with self.backend.guard(name), self.backend.galleond(request.secrets) as client:
            topology = node_topology(client)
            self._check_topology(request.accessibility_requirements, topology)
            label = self._source_label(source)
            try:
                volume = client.get_volume(name)
            except NotFound:
                volume = self._create(client, name, request, params, capacity, source, label)
            else:
                self._check_compatible(volume, params, capacity, label)
            if source is not None and label.startswith("volume."):
                volume = self._finish_clone(client, volume, source.volume.volume_id)
            return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(
                capacity_bytes=volume.size_bytes, volume_id=volume.id,
                content_source=source, accessible_topology=[topology]))

    def _check_topology(self, wanted: csi_pb2.TopologyRequirement, ours: csi_pb2.Topology) -> None:
        if not wanted.requisite:
            return
        if not any(dict(t.segments) == dict(ours.segments) for t in wanted.requisite):
            raise CsiError("RESOURCE_EXHAUSTED", f"cannot provision in the requested topology: this "
                                                 f"controller's galleond is {spec.TOPOLOGY_KEY}="
                                                 f"{ours.segments[spec.TOPOLOGY_KEY]}")

    @staticmethod
    def _source_label(source: csi_pb2.VolumeContentSource | None) -> str:
        if source is None:
            return "none"
        kind = source.WhichOneof("type")
        if kind == "snapshot":
            return "snapshot." + _digest(required(source.snapshot.snapshot_id, "snapshot_id"), 40)
        if kind == "volume":
            return "volume." + _digest(required(source.volume.volume_id, "volume_id"), 40)
        raise invalid("volume_content_source: name a snapshot or a volume")

    def _create(self, client: Client, name: str, request: csi_pb2.CreateVolumeRequest,
                params: spec.Parameters, capacity: csi_pb2.CapacityRange | None,
                source: csi_pb2.VolumeContentSource | None, label: str) -> types_pb2.Volume:
        labels = {spec.MANAGED_LABEL: "true", SOURCE_LABEL: label}
        readers = all(spec.reader_only(c) for c in request.volume_capabilities)
        if params.class_parameters:
            self._ensure_class(client, params)
        if source is None:
            modes = [types_pb2.READ_ONLY_MANY if readers else types_pb2.READ_WRITE_MANY]
            return client.create_volume(name, spec.size_for(capacity), storage_class=params.storage_class,
                                        access_modes=modes, labels=labels)
        if source.WhichOneof("type") == "snapshot":
            ref = spec.split_snapshot_id(source.snapshot.snapshot_id)
            origin, snapshot = self._snapshot(client, ref, source.snapshot.snapshot_id)
        else:
            origin = find_volume(client, source.volume.volume_id)
            snapshot = _clone_snapshot(name)
        size = spec.size_for(capacity, at_least=origin.size_bytes)
        if params.storage_class and params.storage_class != origin.storage_class:
            raise invalid(f"a clone keeps its source's storage class {origin.storage_class!r}; "
                          f"the parameters ask for {params.storage_class!r}")
        if source.WhichOneof("type") == "volume":
            # Only now that the request is known to be good: a refused one leaves nothing.
            with contextlib.suppress(AlreadyExists):     # a retry: the first attempt's snapshot
                client.create_snapshot(origin.name, snapshot)
        return client.clone_volume(origin.name, snapshot, name, size=size, labels=labels)

    @staticmethod
    def _snapshot(client: Client, ref: tuple[str, str] | None, text: str) -> tuple[types_pb2.Volume, str]:
        if ref is None:
            raise CsiError("NOT_FOUND", f"snapshot {text[:64]!r} does not exist")
        try:
            origin = find_volume(client, ref[0])
            client.get_snapshot(origin.name, ref[1])
        except (CsiError, NotFound):
            raise CsiError("NOT_FOUND", f"snapshot {text[:64]!r} does not exist") from None
        return origin, ref[1]

    @staticmethod
    def _ensure_class(client: Client, params: spec.Parameters) -> None:
        with contextlib.suppress(AlreadyExists):      # named by its parameters' hash: the same class
            client.create_storage_class(types_pb2.StorageClass(
                name=params.storage_class, parameters=params.class_parameters))

    @staticmethod
    def _finish_clone(client: Client, volume: types_pb2.Volume, source_id: str) -> types_pb2.Volume:
        """A clone of a volume depends on nothing once done: flatten it and drop the snapshot
        it was cut from. A retry after a failure half way does what is left."""
        snapshot = _clone_snapshot(volume.name)
        if volume.origin_snapshot == snapshot:
            volume = client.flatten_volume(volume.id)
        with contextlib.suppress(NotFound):           # done before, or the source is gone
            client.delete_snapshot(source_id, snapshot)
        return volume

    @staticmethod
    def _check_compatible(volume: types_pb2.Volume, params: spec.Parameters,
                          capacity: csi_pb2.CapacityRange | None, label: str) -> None:
        why = ""
        if not spec.fits(volume.size_bytes, capacity):
            why = f"its size is {volume.size_bytes} bytes, outside the capacity range asked for"
        elif params.storage_class and volume.storage_class != params.storage_class:
            why = f"its storage class is {volume.storage_class!r}, not {params.storage_class!r}"
        elif volume.labels.get(SOURCE_LABEL, "none") != label:
            why = "it was created from another content source"
        if why:
            raise CsiError("ALREADY_EXISTS", f"a volume of that name exists but {why}; choose another "
                                             f"name or delete it first")

    @rpc
    def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest,
                     context: grpc.ServicerContext) -> csi_pb2.DeleteVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        with self.backend.guard(volume_id), self.backend.galleond(request.secrets) as client:
            try:
                volume = find_volume(client, volume_id)
                snapshots = client.list_snapshots(volume.id)
                for leftover in [s for s in snapshots if s.name.startswith(CLONE_PREFIX) and not s.clones]:
                    # Cut for a volume-source clone whose CreateVolume failed and was never
                    # retried: the driver's own, never the CO's.
                    client.delete_snapshot(volume.id, leftover.name)
                    snapshots.remove(leftover)
                if snapshots:
                    # A GalleonFS snapshot lives inside its volume: deleting the volume would
                    # take the CO's snapshots with it. The specification's answer for a
                    # plugin whose snapshots are not independent is FAILED_PRECONDITION.
                    raise CsiError("FAILED_PRECONDITION", f"volume {volume_id[:64]!r} has {len(snapshots)} "
                                                          f"snapshot(s), which live inside it; delete them first")
                client.delete_volume(volume.id)
            except (CsiError, NotFound) as exc:
                if isinstance(exc, CsiError) and exc.code != "NOT_FOUND":
                    raise
                # Gone already: success, as the specification asks of a repeated delete.
        return csi_pb2.DeleteVolumeResponse()

    @rpc
    def ControllerExpandVolume(self, request: csi_pb2.ControllerExpandVolumeRequest,
                               context: grpc.ServicerContext) -> csi_pb2.ControllerExpandVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        if not request.HasField("capacity_range"):
            raise invalid("capacity_range is missing: the CSI specification requires it")
        if request.HasField("volume_capability"):
            spec.check_capability(request.volume_capability)
        size = spec.size_for(request.capacity_range)
        with self.backend.guard(volume_id), self.backend.galleond(request.secrets) as client:
            volume = find_volume(client, volume_id)
            if volume.size_bytes < size:
                volume = client.expand_volume(volume.id, size)
            elif request.capacity_range.limit_bytes and volume.size_bytes > request.capacity_range.limit_bytes:
                raise CsiError("OUT_OF_RANGE", f"volume is {volume.size_bytes} bytes already, more than "
                                               f"limit_bytes; GalleonFS volumes do not shrink")
        # galleond grows a mounted volume in place: df shows the new size at once, nothing
        # is left for the node to do.
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=volume.size_bytes,
                                                      node_expansion_required=False)

    # No PUBLISH_UNPUBLISH_VOLUME capability: nothing is attached to a node before it mounts.
    @rpc
    def ControllerPublishVolume(self, request: csi_pb2.ControllerPublishVolumeRequest,
                                context: grpc.ServicerContext) -> csi_pb2.ControllerPublishVolumeResponse:
        raise CsiError("UNIMPLEMENTED", "ControllerPublishVolume is not offered: GalleonFS volumes "
                                        "need no attach step (no PUBLISH_UNPUBLISH_VOLUME capability)")

    @rpc
    def ControllerUnpublishVolume(self, request: csi_pb2.ControllerUnpublishVolumeRequest,
                                  context: grpc.ServicerContext) -> csi_pb2.ControllerUnpublishVolumeResponse:
        raise CsiError("UNIMPLEMENTED", "ControllerUnpublishVolume is not offered: GalleonFS volumes "
                                        "need no attach step (no PUBLISH_UNPUBLISH_VOLUME capability)")

    @rpc
    def ValidateVolumeCapabilities(self, request: csi_pb2.ValidateVolumeCapabilitiesRequest,
                                   context: grpc.ServicerContext) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        volume_id = required(request.volume_id, "volume_id")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities is missing: the CSI specification requires at least one")
        with self.backend.galleond(request.secrets) as client:
            find_volume(client, volume_id)
        problem = spec.unsupported_capability(request.volume_capabilities)
        if problem is None:
            try:
                spec.parse_parameters(request.parameters)
            except CsiError as exc:
                problem = exc.message
        if problem is not None:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=problem)
        Confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=Confirmed(
            volume_context=request.volume_context, volume_capabilities=request.volume_capabilities,
            parameters=request.parameters))

    @rpc
    def ListVolumes(self, request: csi_pb2.ListVolumesRequest,
                    context: grpc.ServicerContext) -> csi_pb2.ListVolumesResponse:
        client = self.backend.client
        # Oldest first: a volume made between two pages lands on a later page, never before
        # the token (csi-sanity checks exactly that).
        volumes = sorted(client.list_volumes({spec.MANAGED_LABEL: "true"}),
                         key=lambda v: spec.list_key(v.created_at.ToNanoseconds(), v.id))
        keys = [spec.list_key(v.created_at.ToNanoseconds(), v.id) for v in volumes]
        chosen, token = spec.page(volumes, keys, request.max_entries, request.starting_token)
        topology = node_topology(client)
        Entry = csi_pb2.ListVolumesResponse.Entry
        return csi_pb2.ListVolumesResponse(next_token=token, entries=[
            Entry(volume=csi_pb2.Volume(capacity_bytes=v.size_bytes, volume_id=v.id,
                                        accessible_topology=[topology])) for v in chosen])

    @rpc
    def GetCapacity(self, request: csi_pb2.GetCapacityRequest,
                    context: grpc.ServicerContext) -> csi_pb2.GetCapacityResponse:
        client = self.backend.client
        status = client.node_status()
        topology = node_topology(client)
        usable = spec.unsupported_capability(request.volume_capabilities) is None
        if request.HasField("accessible_topology") and \
                dict(request.accessible_topology.segments) != dict(topology.segments):
            usable = False
        if request.parameters:
            spec.parse_parameters(request.parameters)
        # galleond admits a volume while the sizes of all volumes fit the data directory's
        # file system (times overcommit_ratio, 1.0 by default; node status gives both sums).
        available = max(0, status.capacity_bytes - status.provisioned_bytes) if usable else 0
        return csi_pb2.GetCapacityResponse(available_capacity=available,
                                           maximum_volume_size=wrappers_pb2.Int64Value(value=available))

    @rpc
    def ControllerGetCapabilities(self, request: csi_pb2.ControllerGetCapabilitiesRequest,
                                  context: grpc.ServicerContext) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES])

    # --- snapshots ---------------------------------------------------------------------------------
    @rpc
    def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest,
                       context: grpc.ServicerContext) -> csi_pb2.CreateSnapshotResponse:
        source_id = required(request.source_volume_id, "source_volume_id")
        name = spec.snapshot_name(spec.csi_name(request.name))
        with self.backend.guard("snapshot " + name), self.backend.galleond(request.secrets) as client:
            volume = find_volume(client, source_id)
            owner = self._owner(client, name)
            if owner is not None and owner != volume.id:
                try:
                    client.get_snapshot(owner, name)
                except NotFound:
                    self._forget(name, owner)           # deleted behind the driver's back
                else:
                    raise CsiError("ALREADY_EXISTS", f"a snapshot named {request.name[:64]!r} exists of "
                                                     f"another volume; choose another name")
            try:
                snapshot = client.create_snapshot(volume.id, name)
            except AlreadyExists:
                snapshot = client.get_snapshot(volume.id, name)      # a repeat: the same snapshot
            with self._owners_lock:
                if self._owners is not None:
                    self._owners[name] = volume.id
        return csi_pb2.CreateSnapshotResponse(snapshot=self._snapshot_message(snapshot, volume.size_bytes))

    def _owner(self, client: Client, name: str) -> str | None:
        with self._owners_lock:
            if self._owners is None:
                owners: dict[str, str] = {}
                for snapshot in client.list_snapshots():
                    owners.setdefault(snapshot.name, snapshot.volume_id)
                self._owners = owners
            return self._owners.get(name)

    def _forget(self, name: str, volume_id: str) -> None:
        with self._owners_lock:
            if self._owners is not None and self._owners.get(name) == volume_id:
                del self._owners[name]

    @staticmethod
    def _snapshot_message(snapshot: snapshot_pb2.Snapshot, size: int) -> csi_pb2.Snapshot:
        # size_bytes: what a volume restored from it needs, the volume's size (not the bytes
        # used), since a clone is at least as big as its origin.
        return csi_pb2.Snapshot(size_bytes=size, snapshot_id=spec.snapshot_id(snapshot.volume_id, snapshot.name),
                                source_volume_id=snapshot.volume_id, creation_time=snapshot.created_at,
                                ready_to_use=True)

    @rpc
    def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest,
                       context: grpc.ServicerContext) -> csi_pb2.DeleteSnapshotResponse:
        text = required(request.snapshot_id, "snapshot_id")
        ref = spec.split_snapshot_id(text)
        if ref is None:
            return csi_pb2.DeleteSnapshotResponse()      # names nothing: nothing to delete
        with self.backend.guard(text), self.backend.galleond(request.secrets) as client:
            try:
                volume = client.get_volume(ref[0])
                try:
                    client.delete_snapshot(volume.id, ref[1])
                except Busy:
                    # Volumes restored from it share its blocks; they become independent
                    # first (a flatten copies the shared blocks), so the CO can delete a
                    # snapshot whatever was restored from it.
                    for clone in client.get_snapshot(volume.id, ref[1]).clones:
                        with contextlib.suppress(NotFound):
                            client.flatten_volume(clone)
                    client.delete_snapshot(volume.id, ref[1])
                self._forget(ref[1], volume.id)
            except NotFound:
                pass                                      # gone already: success
        return csi_pb2.DeleteSnapshotResponse()

    @rpc
    def ListSnapshots(self, request: csi_pb2.ListSnapshotsRequest,
                      context: grpc.ServicerContext) -> csi_pb2.ListSnapshotsResponse:
        with self.backend.galleond(request.secrets) as client:
            snapshots = self._matching(client, request)
            sizes = {v.id: v.size_bytes for v in client.list_volumes()}
        def key(s: snapshot_pb2.Snapshot) -> str:
            return spec.list_key(s.created_at.ToNanoseconds(), spec.snapshot_id(s.volume_id, s.name))
        snapshots.sort(key=key)
        keys = [key(s) for s in snapshots]
        chosen, token = spec.page(snapshots, keys, request.max_entries, request.starting_token)
        Entry = csi_pb2.ListSnapshotsResponse.Entry
        return csi_pb2.ListSnapshotsResponse(next_token=token, entries=[
            Entry(snapshot=self._snapshot_message(s, sizes.get(s.volume_id, 0))) for s in chosen])

    @staticmethod
    def _matching(client: Client, request: csi_pb2.ListSnapshotsRequest) -> list[snapshot_pb2.Snapshot]:
        if request.snapshot_id:
            ref = spec.split_snapshot_id(request.snapshot_id)
            if ref is None or (request.source_volume_id and request.source_volume_id != ref[0]):
                return []
            try:
                return [client.get_snapshot(ref[0], ref[1])]
            except NotFound:
                return []
        if request.source_volume_id:
            if not spec.could_be_volume(request.source_volume_id):
                return []
            try:
                volume = client.get_volume(request.source_volume_id)
            except NotFound:
                return []
            return client.list_snapshots(volume.name)
        return client.list_snapshots()
