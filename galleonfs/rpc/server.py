"""The gRPC server of galleond: servicers, error interceptor, health, reflection, listeners.

A bounded thread pool serves calls (grpcio offers threads or asyncio, and trio is our
loop, DESIGN §2); each call crosses into trio through ``bridge``. Unix sockets get mode
0660 so that a ``galleonfs`` group can be given access; TCP listeners use TLS when a
certificate and key are configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import Busy, InvalidArgument
from ..v1 import (
    audit_pb2,
    audit_pb2_grpc,
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
    volume_pb2,
    volume_pb2_grpc,
)
from .address import Address, parse_address
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
)
MESSAGE_BYTES_MAX = 16 * 1024 * 1024


@dataclass
class Tls:
    cert_file: str
    key_file: str


class RpcServer:
    def __init__(self, servicers: dict[str, object], *, threads: int, socket_mode: int = 0o660,
                 tls: Tls | None = None, interceptors: tuple[grpc.ServerInterceptor, ...] = ()) -> None:
        # ``interceptors`` run outside the error interceptor: they see the status it set. The
        # request validator runs inside it: its refusals are answered like any error.
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            interceptors=[*interceptors, ErrorInterceptor(), RequestValidator()],
            options=[("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                     ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                     ("grpc.so_reuseport", 0)],
        )
        volume_pb2_grpc.add_VolumeServiceServicer_to_server(servicers["volume"], self._server)
        storage_class_pb2_grpc.add_StorageClassServiceServicer_to_server(servicers["storage_class"], self._server)
        node_pb2_grpc.add_NodeServiceServicer_to_server(servicers["node"], self._server)
        snapshot_pb2_grpc.add_SnapshotServiceServicer_to_server(servicers["snapshot"], self._server)
        snapshot_pb2_grpc.add_SnapshotPolicyServiceServicer_to_server(servicers["snapshot_policy"], self._server)
        qos_pb2_grpc.add_QosServiceServicer_to_server(servicers["qos"], self._server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicers["audit"], self._server)
        key_pb2_grpc.add_KeyServiceServicer_to_server(servicers["key"], self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        self._socket_mode = socket_mode
        self._tls = tls
        self._unix_paths: list[str] = []
        self.bound: list[str] = []
        self.set_serving(False)

    def listen(self, text: str) -> str:
        """Add a listener; return the address actually bound (port 0 picks a free port)."""
        address = parse_address(text)
        if address.unix_path is not None:
            return self._listen_unix(address)
        try:
            if self._tls is not None:
                with open(self._tls.key_file, "rb") as k, open(self._tls.cert_file, "rb") as c:
                    creds = grpc.ssl_server_credentials([(k.read(), c.read())])
                port = self._server.add_secure_port(address.grpc_target, creds)
            else:
                if address.host not in ("127.0.0.1", "::1", "[::1]", "localhost"):
                    log.warning("listening on %s without TLS: anyone who can reach it controls this "
                                "node; configure tls_cert and tls_key", address.grpc_target)
                port = self._server.add_insecure_port(address.grpc_target)
        except RuntimeError:
            # grpcio >= 1.53 raises instead of returning port 0 when it cannot bind.
            port = 0
        except OSError as exc:
            raise InvalidArgument(f"cannot read the TLS certificate or key: {exc}") from None
        if port == 0:
            raise Busy(f"cannot listen on {address.grpc_target} (address in use?)")
        bound = f"{address.host}:{port}"
        self.bound.append(bound)
        return bound

    def _listen_unix(self, address: Address) -> str:
        path = address.unix_path
        assert path is not None
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise InvalidArgument(f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
                raise Busy(f"another daemon already listens on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)               # left by a daemon that died
            finally:
                probe.close()
        try:
            port = self._server.add_insecure_port(address.grpc_target)
        except RuntimeError:           # see listen()
            port = 0
        if port == 0:
            raise Busy(f"cannot listen on {address.grpc_target}")
        self._unix_paths.append(path)
        self.bound.append(address.grpc_target)
        return address.grpc_target

    def start(self) -> None:
        self._server.start()
        for path in self._unix_paths:
            os.chmod(path, self._socket_mode)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        """Stop taking calls, let running ones finish for ``grace_s`` (blocking)."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace_s).wait()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
