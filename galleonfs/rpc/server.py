"""The gRPC server of galleond: servicers, error interceptor, health, reflection, listeners.

A bounded thread pool serves calls (grpcio offers threads or asyncio, and trio is our
loop, DESIGN §2); each call crosses into trio through ``bridge``. Unix sockets are owned by
the gate (``gate.UnixGate``: mode 0660, group ``operator_group``, final before anyone can
connect), which knows each caller's credentials and splices to the server's internal
socket. TCP listeners use TLS (client certificates required with ``tls_client_ca``);
plaintext TCP only through ``listen_insecure``, on loopback. Who may call what is
``auth.AuthInterceptor``'s, handed in with the other interceptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import Busy, InvalidArgument
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
    volume_pb2,
    volume_pb2_grpc,
)
from .address import Address, parse_address
from .gate import UnixGate
from .status import ErrorInterceptor
from .validate import RequestValidator

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    volume_pb2.DESCRIPTOR.services_by_name["VolumeService"].full_name,
    storage_class_pb2.DESCRIPTOR.services_by_name["StorageClassService"].full_name,
    node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
    snapshot_pb2.DESCRIPTOR.services_by_name["SnapshotService"].full_name,
    snapshot_pb2.DESCRIPTOR.services_by_name["SnapshotPolicyService"].full_name,
    qos_pb2.DESCRIPTOR.services_by_name["QosService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    key_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    token_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
    tenant_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
    cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
    backup_pb2.DESCRIPTOR.services_by_name["BackupTargetService"].full_name,
    backup_pb2.DESCRIPTOR.services_by_name["BackupService"].full_name,
    backup_pb2.DESCRIPTOR.services_by_name["BackupPolicyService"].full_name,
)
MESSAGE_BYTES_MAX = 16 * 1024 * 1024


@dataclass
class Tls:
    cert_file: str
    key_file: str
    client_ca_file: str = ""         # set: every TLS client must present a certificate it signed


def _add_servicers(server: grpc.Server, servicers: Mapping[str, Any]) -> None:
    """Every galleonfs.v1 service. The daemon builds the servicers (a heterogeneous map, so
    ``Any``); one that does not implement its service fails here, at start."""
    volume_pb2_grpc.add_VolumeServiceServicer_to_server(servicers["volume"], server)
    storage_class_pb2_grpc.add_StorageClassServiceServicer_to_server(servicers["storage_class"], server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(servicers["node"], server)
    snapshot_pb2_grpc.add_SnapshotServiceServicer_to_server(servicers["snapshot"], server)
    snapshot_pb2_grpc.add_SnapshotPolicyServiceServicer_to_server(servicers["snapshot_policy"], server)
    qos_pb2_grpc.add_QosServiceServicer_to_server(servicers["qos"], server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(servicers["audit"], server)
    key_pb2_grpc.add_KeyServiceServicer_to_server(servicers["key"], server)
    token_pb2_grpc.add_TokenServiceServicer_to_server(servicers["token"], server)
    tenant_pb2_grpc.add_TenantServiceServicer_to_server(servicers["tenant"], server)
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(servicers["cluster"], server)
    backup_pb2_grpc.add_BackupTargetServiceServicer_to_server(servicers["backup_target"], server)
    backup_pb2_grpc.add_BackupServiceServicer_to_server(servicers["backup"], server)
    backup_pb2_grpc.add_BackupPolicyServiceServicer_to_server(servicers["backup_policy"], server)


class RpcServer:
    def __init__(self, servicers: Mapping[str, Any], *, threads: int, socket_mode: int = 0o660,
                 tls: Tls | None = None, interceptors: tuple[grpc.ServerInterceptor, ...] = (),
                 gate: UnixGate | None = None, socket_gid: int | None = None) -> None:
        # ``interceptors`` run outside the error interceptor: they see the status it set. The
        # request validator runs inside it: its refusals are answered like any error.
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            interceptors=[*interceptors, ErrorInterceptor(), RequestValidator()],
            options=[("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                     ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                     ("grpc.so_reuseport", 0)],
        )
        _add_servicers(self._server, servicers)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        self._socket_mode = socket_mode
        self._socket_gid = socket_gid
        self._gate = gate
        self._internal = False
        self._tls = tls
        self._unix_paths: list[str] = []
        self.bound: list[str] = []
        self.set_serving(False)

    def listen(self, text: str) -> str:
        """Add a listener; return the address actually bound (port 0 picks a free port)."""
        address = parse_address(text)
        if address.unix_path is not None:
            return self._listen_unix(address)
        if self._tls is None:
            raise InvalidArgument(f"listening on {address} needs TLS: set tls_cert and tls_key, or use "
                                  f"--insecure-listen for a plaintext listener on loopback")
        try:
            with open(self._tls.key_file, "rb") as k, open(self._tls.cert_file, "rb") as c:
                key, cert = k.read(), c.read()
            ca = None
            if self._tls.client_ca_file:
                with open(self._tls.client_ca_file, "rb") as f:
                    ca = f.read()
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                                require_client_auth=ca is not None)
            port = self._server.add_secure_port(address.grpc_target, creds)
        except RuntimeError:
            # grpcio >= 1.53 raises instead of returning port 0 when it cannot bind.
            port = 0
        except OSError as exc:
            raise InvalidArgument(f"cannot read the TLS certificate, key or client CA: {exc}") from None
        return self._bound(address, port)

    def listen_insecure(self, text: str) -> str:
        """A plaintext TCP listener; the configuration allows loopback addresses only, and
        callers there need a bearer token (``auth``)."""
        address = parse_address(text)
        assert address.unix_path is None, "config.insecure_listen takes host:port only"
        try:
            port = self._server.add_insecure_port(address.grpc_target)
        except RuntimeError:           # see listen()
            port = 0
        return self._bound(address, port)

    def _bound(self, address: Address, port: int) -> str:
        if port == 0:
            raise Busy(f"cannot listen on {address.grpc_target} (address in use?)")
        bound = f"{address.host}:{port}"
        self.bound.append(bound)
        return bound

    def _listen_unix(self, address: Address) -> str:
        path = address.unix_path
        assert path is not None
        assert self._gate is not None, "unix sockets are served through the gate"
        if not self._internal:
            # The gate's way in: a socket in its root-only directory.
            try:
                port = self._server.add_insecure_port(self._gate.internal_target)
            except RuntimeError:           # see listen()
                port = 0
            if port == 0:
                raise Busy(f"cannot listen on {self._gate.internal_target}")
            self._internal = True
        self._gate.listen(path, self._socket_mode, self._socket_gid)
        self._unix_paths.append(path)
        self.bound.append(address.grpc_target)
        return address.grpc_target

    def start(self) -> None:
        self._server.start()
        if self._gate is not None:
            self._gate.start()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        """Stop taking calls, let running ones finish for ``grace_s`` (blocking)."""
        self.health.enter_graceful_shutdown()
        if self._gate is not None:
            self._gate.stop_accepting()      # running calls still finish through the gate
        self._server.stop(grace_s).wait()
        if self._gate is not None:
            self._gate.close()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
