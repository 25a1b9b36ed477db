"""``Client``: the gRPC client of galleond, for galleonctl, orchestrators' glue and tests.

Methods return protobuf messages. A failed call raises the same ``GalleonError`` class
the daemon raised (its class name travels in trailing metadata), so the caller's exit code
and message are the daemon's; an unreachable daemon is ``Unavailable`` with a hint.

Credentials (``rpc.auth`` on the daemon's side): on a unix socket the kernel tells galleond
who the caller is. Over TCP the channel is TLS (``tls_ca`` to trust the daemon's
certificate, else the system's roots; ``tls_cert``/``tls_key`` for a client certificate),
except to a loopback address with no TLS option given (galleond's ``insecure_listen``). A
``token`` goes with every call as ``authorization: Bearer ...``; it is never sent in
plaintext to an address that is not loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2

from ..errors import GalleonError, InvalidArgument, PermissionDenied, Unavailable, error_from_status
from ..v1 import (
    audit_pb2,
    audit_pb2_grpc,
    backup_pb2,
    backup_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    key_pb2,
    key_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    qos_pb2,
    qos_pb2_grpc,
    snapshot_pb2,
    snapshot_pb2_grpc,
    storage_class_pb2,
    storage_class_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    types_pb2,
    volume_pb2,
    volume_pb2_grpc,
)
from .address import parse_address
from .status import ERROR_CLASS_KEY

DEFAULT_TIMEOUT_S = 120.0      # a mount waits for its worker, a delete for data removal

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class Client:
    def __init__(self, address: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                 token: str | None = None) -> None:
        self.address = parse_address(address)
        self.tls = False
        self._client_cert = bool(tls_cert)
        if self.address.unix_path is None and (tls_ca or tls_cert or tls_key or not _loopback(self.address.host)):
            self._channel = grpc.secure_channel(self.address.grpc_target,
                                                _tls_credentials(tls_ca, tls_cert, tls_key))
            self.tls = True
        else:
            self._channel = grpc.insecure_channel(self.address.grpc_target)
        self._metadata = (("authorization", f"Bearer {token.strip()}"),) if token else ()
        self.timeout_s = timeout_s
        self.volumes = volume_pb2_grpc.VolumeServiceStub(self._channel)
        self.classes = storage_class_pb2_grpc.StorageClassServiceStub(self._channel)
        self.node = node_pb2_grpc.NodeServiceStub(self._channel)
        self.snapshots = snapshot_pb2_grpc.SnapshotServiceStub(self._channel)
        self.policies = snapshot_pb2_grpc.SnapshotPolicyServiceStub(self._channel)
        self.qos = qos_pb2_grpc.QosServiceStub(self._channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self.keys = key_pb2_grpc.KeyServiceStub(self._channel)
        self.tokens = token_pb2_grpc.TokenServiceStub(self._channel)
        self.tenants = tenant_pb2_grpc.TenantServiceStub(self._channel)
        self.cluster = cluster_pb2_grpc.ClusterServiceStub(self._channel)
        self.backup_targets = backup_pb2_grpc.BackupTargetServiceStub(self._channel)
        self.backups = backup_pb2_grpc.BackupServiceStub(self._channel)
        self.backup_policies = backup_pb2_grpc.BackupPolicyServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: grpc.UnaryUnaryMultiCallable[Request, Reply], request: Request) -> Reply:
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def serving(self, timeout_s: float = 2.0) -> bool:
        """Whether galleond's standard health service answers SERVING (it is open to anyone,
        and says so only once the mounts of the last run are restored)."""
        check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        try:
            reply = check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _error(self, exc: grpc.RpcError) -> GalleonError:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE and not _class_name(exc) and self.tls:
            # A refused handshake (no client certificate, another CA, expired) looks like an
            # unreachable server to grpcio; its own words say which.
            return Unavailable(f"cannot reach galleond at {self.address} over TLS: "
                               f"{_tls_problem(exc.details() or '', self._client_cert)}")
        path = self.address.unix_path
        if (code == grpc.StatusCode.UNAVAILABLE and not _class_name(exc) and path and os.path.exists(path)
                and not os.access(path, os.R_OK | os.W_OK)):
            return PermissionDenied(f"no permission to connect to {path}: galleond lets in root and "
                                    f"the members of its operator group; ask an admin for access or a token")
        if code == grpc.StatusCode.UNAVAILABLE and not _class_name(exc):
            return Unavailable(
                f"cannot reach galleond at {self.address}: is it running? (start it with "
                f"`galleond`, or point --address / GALLEONFS_ADDRESS at it)")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unavailable(f"galleond at {self.address} did not answer within {self.timeout_s:.0f} s")
        return error_from_status(code.name, exc.details() or code.name, _class_name(exc))

    def stream(self, method: grpc.UnaryStreamMultiCallable[Request, Reply], request: Request) -> Iterator[Reply]:
        """A server-streaming call (progress, then a result): no deadline, since the stream
        shows it is alive; errors as from ``call``."""
        try:
            yield from method(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # --- backups (issue 13) --------------------------------------------------------------------------
    def create_backup_target(self, target: backup_pb2.BackupTarget) -> backup_pb2.CreateBackupTargetResponse:
        return self.call(self.backup_targets.Create, backup_pb2.CreateBackupTargetRequest(target=target))

    def list_backup_targets(self) -> list[backup_pb2.BackupTarget]:
        return list(self.call(self.backup_targets.List, backup_pb2.ListBackupTargetsRequest()).targets)

    def delete_backup_target(self, name: str) -> None:
        self.call(self.backup_targets.Delete, backup_pb2.DeleteBackupTargetRequest(name=name))

    def create_backup(self, volume: str, target: str, snapshot: str = "") -> Iterator[backup_pb2.BackupEvent]:
        return self.stream(self.backups.Create, backup_pb2.CreateBackupRequest(
            volume=volume, target=target, snapshot=snapshot))

    def get_backup(self, ref: str) -> backup_pb2.Backup:
        return self.call(self.backups.Get, backup_pb2.GetBackupRequest(backup=ref))

    def list_backups(self, volume: str = "", target: str = "") -> list[backup_pb2.Backup]:
        return list(self.call(self.backups.List, backup_pb2.ListBackupsRequest(volume=volume, target=target)).backups)

    def delete_backup(self, ref: str) -> backup_pb2.DeleteBackupResponse:
        return self.call(self.backups.Delete, backup_pb2.DeleteBackupRequest(backup=ref))

    def restore_backup(self, ref: str, name: str, storage_class: str = "") -> Iterator[backup_pb2.BackupEvent]:
        return self.stream(self.backups.Restore, backup_pb2.RestoreBackupRequest(
            backup=ref, name=name, storage_class=storage_class))

    def verify_backups(self, target: str, deep: bool = False) -> Iterator[backup_pb2.BackupEvent]:
        return self.stream(self.backups.Verify, backup_pb2.VerifyBackupsRequest(target=target, deep=deep))

    def create_backup_policy(self, policy: backup_pb2.BackupPolicy) -> backup_pb2.BackupPolicy:
        return self.call(self.backup_policies.Create, backup_pb2.CreateBackupPolicyRequest(policy=policy))

    def list_backup_policies(self) -> list[backup_pb2.BackupPolicy]:
        return list(self.call(self.backup_policies.List, backup_pb2.ListBackupPoliciesRequest()).policies)

    def delete_backup_policy(self, name: str) -> None:
        self.call(self.backup_policies.Delete, backup_pb2.DeleteBackupPolicyRequest(name=name))

    # --- volumes -----------------------------------------------------------------------------------
    def create_volume(self, name: str, size: int, *, storage_class: str = "",
                      access_modes: Iterable[types_pb2.AccessMode] = (),
                      type: types_pb2.VolumeType = types_pb2.VOLUME_TYPE_UNSPECIFIED,
                      labels: dict[str, str] | None = None, replicas: int = 0,
                      allow_degraded: bool = False) -> types_pb2.Volume:
        return self.call(self.volumes.Create, volume_pb2.CreateVolumeRequest(
            name=name, size_bytes=size, storage_class=storage_class,
            access_modes=access_modes, type=type, labels=labels or {}, replicas=replicas,
            allow_degraded=allow_degraded))

    def get_volume(self, name: str) -> types_pb2.Volume:
        return self.call(self.volumes.Get, volume_pb2.GetVolumeRequest(name=name))

    def list_volumes(self, selector: dict[str, str] | None = None) -> list[types_pb2.Volume]:
        reply = self.call(self.volumes.List, volume_pb2.ListVolumesRequest(label_selector=selector or {}))
        return list(reply.volumes)

    def delete_volume(self, name: str, *, force: bool = False) -> volume_pb2.DeleteVolumeResponse:
        return self.call(self.volumes.Delete, volume_pb2.DeleteVolumeRequest(name=name, force=force))

    def expand_volume(self, name: str, size: int) -> types_pb2.Volume:
        return self.call(self.volumes.Expand, volume_pb2.ExpandVolumeRequest(name=name, size_bytes=size))

    def mount_volume(self, name: str, path: str, *, read_only: bool = False) -> types_pb2.Volume:
        return self.call(self.volumes.Mount, volume_pb2.MountVolumeRequest(name=name, path=path,
                                                                           read_only=read_only))

    def unmount_volume(self, name: str = "", path: str = "", *, force: bool = False) -> types_pb2.Volume:
        return self.call(self.volumes.Unmount, volume_pb2.UnmountVolumeRequest(name=name, path=path,
                                                                               force=force))

    def volume_stats(self, name: str) -> volume_pb2.VolumeStats:
        return self.call(self.volumes.GetStats, volume_pb2.GetVolumeStatsRequest(name=name))

    def clone_volume(self, volume: str, snapshot: str, name: str, *, size: int = 0,
                     labels: dict[str, str] | None = None) -> types_pb2.Volume:
        return self.call(self.volumes.Clone, volume_pb2.CloneVolumeRequest(
            volume=volume, snapshot=snapshot, name=name, size_bytes=size, labels=labels or {}))

    def flatten_volume(self, name: str) -> types_pb2.Volume:
        return self.call(self.volumes.Flatten, volume_pb2.FlattenVolumeRequest(name=name))

    # --- keys --------------------------------------------------------------------------------------
    def rotate_key(self) -> key_pb2.RotateKeyResponse:
        return self.call(self.keys.Rotate, key_pb2.RotateKeyRequest())

    def rekey_volume(self, name: str) -> Iterator[key_pb2.RekeyProgress]:
        """Progress messages until the rekey is done (no deadline: it takes what it takes)."""
        try:
            yield from self.keys.Rekey(key_pb2.RekeyVolumeRequest(name=name), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # --- snapshots ---------------------------------------------------------------------------------
    def create_snapshot(self, volume: str, name: str) -> snapshot_pb2.Snapshot:
        return self.call(self.snapshots.Create, snapshot_pb2.CreateSnapshotRequest(volume=volume, name=name))

    def get_snapshot(self, volume: str, name: str) -> snapshot_pb2.Snapshot:
        return self.call(self.snapshots.Get, snapshot_pb2.GetSnapshotRequest(volume=volume, name=name))

    def list_snapshots(self, volume: str = "") -> list[snapshot_pb2.Snapshot]:
        return list(self.call(self.snapshots.List, snapshot_pb2.ListSnapshotsRequest(volume=volume)).snapshots)

    def delete_snapshot(self, volume: str, name: str) -> snapshot_pb2.DeleteSnapshotResponse:
        return self.call(self.snapshots.Delete, snapshot_pb2.DeleteSnapshotRequest(volume=volume, name=name))

    def restore_snapshot(self, volume: str, name: str, *, force: bool = False) -> types_pb2.Volume:
        return self.call(self.snapshots.Restore, snapshot_pb2.RestoreSnapshotRequest(
            volume=volume, name=name, force=force))

    def diff_snapshots(self, volume: str, old: str, new: str = "") -> list[snapshot_pb2.DiffEntry]:
        return list(self.call(self.snapshots.Diff, snapshot_pb2.DiffSnapshotsRequest(
            volume=volume, from_snapshot=old, to_snapshot=new)).entries)

    def mount_snapshot(self, volume: str, name: str, path: str) -> types_pb2.Volume:
        return self.call(self.snapshots.Mount, snapshot_pb2.MountSnapshotRequest(volume=volume, name=name, path=path))

    def create_policy(self, policy: snapshot_pb2.SnapshotPolicy) -> snapshot_pb2.SnapshotPolicy:
        return self.call(self.policies.Create, snapshot_pb2.CreateSnapshotPolicyRequest(policy=policy))

    def get_policy(self, name: str) -> snapshot_pb2.SnapshotPolicy:
        return self.call(self.policies.Get, snapshot_pb2.GetSnapshotPolicyRequest(name=name))

    def list_policies(self) -> list[snapshot_pb2.SnapshotPolicy]:
        return list(self.call(self.policies.List, snapshot_pb2.ListSnapshotPoliciesRequest()).policies)

    def delete_policy(self, name: str) -> None:
        self.call(self.policies.Delete, snapshot_pb2.DeleteSnapshotPolicyRequest(name=name))

    # --- QoS policies ------------------------------------------------------------------------------
    def create_qos_policy(self, policy: qos_pb2.QosPolicy) -> qos_pb2.QosPolicy:
        return self.call(self.qos.Create, qos_pb2.CreateQosPolicyRequest(policy=policy))

    def get_qos_policy(self, name: str) -> qos_pb2.QosPolicy:
        return self.call(self.qos.Get, qos_pb2.GetQosPolicyRequest(name=name))

    def update_qos_policy(self, policy: qos_pb2.QosPolicy) -> qos_pb2.QosPolicy:
        return self.call(self.qos.Update, qos_pb2.UpdateQosPolicyRequest(policy=policy))

    def list_qos_policies(self) -> list[qos_pb2.QosPolicy]:
        return list(self.call(self.qos.List, qos_pb2.ListQosPoliciesRequest()).policies)

    def delete_qos_policy(self, name: str) -> None:
        self.call(self.qos.Delete, qos_pb2.DeleteQosPolicyRequest(name=name))

    def assign_qos_policy(self, policy: str, volume: str) -> qos_pb2.AssignQosPolicyResponse:
        """``policy`` "" takes the volume's policy away."""
        return self.call(self.qos.Assign, qos_pb2.AssignQosPolicyRequest(policy=policy, volume=volume))

    # --- storage classes ---------------------------------------------------------------------------
    def create_storage_class(self, cls: types_pb2.StorageClass) -> types_pb2.StorageClass:
        return self.call(self.classes.Create, storage_class_pb2.CreateStorageClassRequest(storage_class=cls))

    def get_storage_class(self, name: str) -> types_pb2.StorageClass:
        return self.call(self.classes.Get, storage_class_pb2.GetStorageClassRequest(name=name))

    def list_storage_classes(self) -> list[types_pb2.StorageClass]:
        return list(self.call(self.classes.List, storage_class_pb2.ListStorageClassesRequest()).storage_classes)

    def delete_storage_class(self, name: str) -> None:
        self.call(self.classes.Delete, storage_class_pb2.DeleteStorageClassRequest(name=name))

    # --- audit ---------------------------------------------------------------------------------------
    def list_audit(self, *, since_ns: int = 0, volume: str = "") -> audit_pb2.ListAuditRecordsResponse:
        request = audit_pb2.ListAuditRecordsRequest(volume=volume)
        if since_ns:
            request.since.FromNanoseconds(since_ns)
        return self.call(self.audit.List, request)

    def verify_audit(self) -> audit_pb2.VerifyAuditResponse:
        return self.call(self.audit.Verify, audit_pb2.VerifyAuditRequest())

    # --- tokens and tenants --------------------------------------------------------------------------
    def create_token(self, name: str, role: str, *, tenant: str = "",
                     ttl_s: int = 0) -> token_pb2.CreateTokenResponse:
        return self.call(self.tokens.Create, token_pb2.CreateTokenRequest(
            name=name, role=role, tenant=tenant, ttl_seconds=ttl_s))

    def list_tokens(self) -> list[token_pb2.Token]:
        return list(self.call(self.tokens.List, token_pb2.ListTokensRequest()).tokens)

    def revoke_token(self, name: str) -> token_pb2.Token:
        return self.call(self.tokens.Revoke, token_pb2.RevokeTokenRequest(name=name))

    def create_tenant(self, tenant: tenant_pb2.Tenant) -> tenant_pb2.Tenant:
        return self.call(self.tenants.Create, tenant_pb2.CreateTenantRequest(tenant=tenant))

    def get_tenant(self, name: str) -> tenant_pb2.Tenant:
        return self.call(self.tenants.Get, tenant_pb2.GetTenantRequest(name=name))

    def list_tenants(self) -> list[tenant_pb2.Tenant]:
        return list(self.call(self.tenants.List, tenant_pb2.ListTenantsRequest()).tenants)

    def delete_tenant(self, name: str) -> None:
        self.call(self.tenants.Delete, tenant_pb2.DeleteTenantRequest(name=name))

    # --- node ----------------------------------------------------------------------------------------
    def node_status(self) -> node_pb2.NodeStatus:
        return self.call(self.node.GetStatus, node_pb2.GetNodeStatusRequest())

    # --- cluster -------------------------------------------------------------------------------------
    def cluster_status(self) -> cluster_pb2.ClusterStatus:
        return self.call(self.cluster.GetStatus, cluster_pb2.GetClusterStatusRequest())

    def cordon_node(self, node: str) -> cluster_pb2.ClusterNode:
        return self.call(self.cluster.Cordon, cluster_pb2.CordonNodeRequest(node=node))

    def uncordon_node(self, node: str) -> cluster_pb2.ClusterNode:
        return self.call(self.cluster.Uncordon, cluster_pb2.UncordonNodeRequest(node=node))

    def drain_node(self, node: str) -> cluster_pb2.ClusterNode:
        return self.call(self.cluster.Drain, cluster_pb2.DrainNodeRequest(node=node))

    def volume_placement(self, volume: str) -> cluster_pb2.VolumePlacement:
        return self.call(self.cluster.GetPlacement, cluster_pb2.GetPlacementRequest(volume=volume))


def _class_name(exc: grpc.RpcError) -> str | None:
    """The daemon's error class, from the call's trailing metadata (``rpc.status``)."""
    if not isinstance(exc, grpc.Call):       # an RpcError that is not a finished call has none
        return None
    for item in exc.trailing_metadata() or ():
        if item.key == ERROR_CLASS_KEY:
            return str(item.value)
    return None


def _loopback(host: str | None) -> bool:
    import ipaddress

    text = (host or "").strip("[]")
    try:
        return text == "localhost" or ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc.strerror}") from None


def _tls_credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials:
    if bool(cert) != bool(key):
        raise InvalidArgument("--tls-cert and --tls-key go together: give both or neither")
    return grpc.ssl_channel_credentials(_read(ca, "TLS CA file"), _read(key, "TLS key file"),
                                        _read(cert, "TLS certificate file"))


def _tls_problem(details: str, client_cert: bool) -> str:
    """One clause from grpcio's connection error: what went wrong with TLS. A daemon that
    refuses the client's certificate (missing, another CA, expired) closes the connection
    right after the handshake (TLS 1.3), which the client only sees as "Socket closed"."""
    text = details.lower()
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return "its certificate is not trusted (is --tls-ca / GALLEONFS_TLS_CA the CA that signed it?)"
    if "socket closed" in text or "handshake" in text:
        if not client_cert:
            return ("it closed the connection: it requires a client certificate "
                    "(--tls-cert and --tls-key, or GALLEONFS_TLS_CERT and GALLEONFS_TLS_KEY)")
        return ("it closed the connection: it refused the client certificate (is it signed by "
                "the CA galleond trusts, tls_client_ca, and not expired?)")
    return "no connection (is it running, and does it listen with TLS there?)"
