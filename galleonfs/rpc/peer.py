"""The peer channel's gRPC half: ``PeerServer`` on ``--peer-listen`` and ``PeerClient``.

Both ends use the node's certificate, its key and the cluster CA (``cluster.certs.PeerTls``).

Server: a gRPC server of its own (never the API server: the API listener does not serve
``galleonfs.peer.v1`` and its reflection does not list it), TLS with client certificates
required (``require_client_auth``): plaintext, no certificate, or a certificate the cluster
CA did not sign never get past the handshake. Then ``PeerIdentityInterceptor`` reads the
node name from the verified certificate (``certs.node_names``) and checks it against the
cluster's members in etcd (read at most every ``limits.peer_members_cache_s``): a name that
is not a registered node is UNAUTHENTICATED, and the refusal is written to the audit log.
A servicer sees the caller's node name through ``caller()``.

Client: one channel per (node, address), created on first use and reused (the handshake is
paid once), at most ``limits.peer_channels_max`` (least recently used closed first). The
channel checks that the server's certificate names the node it meant to reach
(``ssl_target_name_override``: the node name, in a SAN), whatever address it dialled. Every
call has a deadline; every failure becomes one of our errors.

What it must not do: answer a call whose caller it could not name, or block the trio thread
(``cluster.peers.Peers`` calls the client from worker threads).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from .. import names
from ..audit.log import AuditLog
from ..cluster import certs
from ..cluster import limits as cluster_limits
from ..cluster.certs import PeerTls
from ..errors import GalleonError, PermissionDenied, Unauthenticated, Unavailable
from ..peer.v1 import peer_pb2, peer_pb2_grpc
from .address import parse_address
from .status import ERROR_CLASS_KEY, ErrorInterceptor, status_code
from .validate import RequestValidator
from .wrapping import Stream, Unary, wrap

log = logging.getLogger(__name__)

PREFIX = "/galleonfs.peer.v1."
# Bounded reconnect backoff: gRPC's default grows to 120 s, so a node restarted after a
# crash would show unreachable for minutes; 2 s keeps `cluster status` current.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 2000)]

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("galleonfs_peer_caller", default="")


def caller() -> str:
    """The node name of the peer whose call runs on this thread (checked against etcd)."""
    name = _caller.get()
    assert name, "caller() is only meaningful inside a peer call the interceptor admitted"
    return name


Members = Callable[[], set[str]]          # the names of the cluster's registered nodes (blocking)


class PeerIdentityInterceptor(grpc.ServerInterceptor):
    """Admits a call only from a registered node; audits every refusal."""

    def __init__(self, members: Members, audit: AuditLog | None) -> None:
        self._members = members
        self._audit = audit
        self._lock = threading.Lock()
        self._cached: tuple[float, set[str]] = (-1e9, set())

    def _registered(self) -> set[str]:
        with self._lock:
            at, names_ = self._cached
            if time.monotonic() - at < cluster_limits.peer_members_cache_s:
                return names_
        fresh = self._members()         # etcd, outside the lock: a slow read blocks no one else
        with self._lock:
            self._cached = (time.monotonic(), fresh)
        return fresh

    def identify(self, context: grpc.ServicerContext) -> str:
        # grpcio's stubs type the auth context's values as bytes; they are lists of bytes.
        auth: Any = context.auth_context() or {}
        if auth.get("transport_security_type") != [b"ssl"] or not auth.get("x509_pem_cert"):
            # The listener requires client certificates: this is a bug, not a caller.
            raise AssertionError("a peer call without a verified client certificate")
        claimed = certs.node_names(auth["x509_pem_cert"][0])
        if not claimed:
            raise Unauthenticated("the peer certificate names no node (a DNS SAN or CN that is a "
                                  "node name); issue it with galleond cluster-cert issue --node NAME")
        registered = self._registered()
        for name in claimed:
            if name in registered:
                return name
        shown = ", ".join(names.quote(n) for n in claimed[:3])
        raise Unauthenticated(f"the peer certificate names {shown}, which is not a node of this "
                              f"cluster; a node must join the cluster (galleond --cluster) before "
                              f"other nodes accept its calls")

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = str(details.method)

        def unary(inner: Unary) -> Unary:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                name = self._admit(method, context)
                token = _caller.set(name)
                try:
                    return inner(request, context)
                finally:
                    _caller.reset(token)
            return guarded

        def stream(inner: Stream) -> Stream:
            # Every call shape is guarded (client streams too): a streaming method added
            # later (replication's) cannot be served without a checked caller. Set, then
            # set back (not reset): a response generator may be closed from another context.
            def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                name = self._admit(method, context)
                _caller.set(name)
                try:
                    yield from inner(request, context)
                finally:
                    _caller.set("")
            return guarded

        return wrap(handler, unary=unary, stream=stream, client_streams=True)

    def _admit(self, method: str, context: grpc.ServicerContext) -> str:
        try:
            return self.identify(context)
        except GalleonError as exc:
            self._record_refusal(method, context, exc)
            context.set_trailing_metadata(((ERROR_CLASS_KEY, type(exc).__name__),))
            context.abort(status_code(exc), str(exc))
            raise AssertionError("context.abort returned") from None

    def _record_refusal(self, method: str, context: grpc.ServicerContext, exc: GalleonError) -> None:
        log.warning("refused a peer call %s from %s: %s", method, context.peer(), exc)
        if self._audit is None:
            return
        now = time.time_ns()
        try:
            self._audit.append({
                "phase": "refused", "time_ns": now,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1e9)) + "Z",
                "method": method.lstrip("/"),
                "peer": {"transport": "peer-mtls", "address": str(context.peer())[:200]},
                "code": status_code(exc).name, "message": str(exc)[:500]})
        except GalleonError as audit_exc:
            log.error("a refused peer call could not be audited: %s", audit_exc)


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, node: str) -> None:
        self.node = node

    def Ping(self, request: peer_pb2.PingRequest, context: grpc.ServicerContext) -> peer_pb2.PingReply:
        return peer_pb2.PingReply(node=self.node, caller=caller())


class PeerServer:
    def __init__(self, node: str, tls: PeerTls, members: Members, *, audit: AuditLog | None,
                 threads: int = cluster_limits.peer_server_threads) -> None:
        self._tls = tls
        # The identity check runs outside the error interceptor: its refusal is answered
        # as it set it; the servicers' errors are translated by the error interceptor, and
        # the request validator (the API's, on this package) runs innermost, as on the API.
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="peer"),
            interceptors=[PeerIdentityInterceptor(members, audit), ErrorInterceptor(),
                          RequestValidator(PREFIX)],
            options=[("grpc.so_reuseport", 0)])
        peer_pb2_grpc.add_PeerServiceServicer_to_server(PeerServicer(node), self._server)
        self.bound = ""

    def listen(self, text: str) -> str:
        """Listen on ``host:port`` (port 0 picks one); return the address bound."""
        address = parse_address(text)
        assert address.unix_path is None, "config refuses a unix socket for peer_listen"
        creds = grpc.ssl_server_credentials([(self._tls.key, self._tls.cert)],
                                            root_certificates=self._tls.ca, require_client_auth=True)
        try:
            port = self._server.add_secure_port(address.grpc_target, creds)
        except RuntimeError:            # grpcio >= 1.53 raises when it cannot bind
            port = 0
        if port == 0:
            raise Unavailable(what=f"the peer listener {address.grpc_target}",
                              reason="galleond cannot listen there (address in use, or not this "
                                     "host's); give --peer-listen a free address of this host")
        self.bound = f"{address.host}:{port}"
        return self.bound

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float) -> None:
        self._server.stop(grace_s).wait()


class PeerClient:
    """The gRPC transport of ``cluster.peers.Peers`` (``PeerTransport``). Thread-safe."""

    def __init__(self, tls: PeerTls, *, channels_max: int = cluster_limits.peer_channels_max) -> None:
        self._creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                                   certificate_chain=tls.cert)
        self._channels: OrderedDict[tuple[str, str], grpc.Channel] = OrderedDict()
        self._lock = threading.Lock()
        self._channels_max = channels_max

    def channel(self, node: str, address: str) -> grpc.Channel:
        """The open channel to ``node`` at ``address`` (made on first use)."""
        key = (node, address)
        with self._lock:
            found = self._channels.get(key)
            if found is not None:
                self._channels.move_to_end(key)
                return found
            target = parse_address(address).grpc_target
            made = grpc.secure_channel(target, self._creds, options=[
                *_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", node)])
            self._channels[key] = made
            while len(self._channels) > self._channels_max:
                _, old = self._channels.popitem(last=False)
                old.close()
            return made

    def ping(self, node: str, address: str, timeout_s: float) -> str:
        stub = peer_pb2_grpc.PeerServiceStub(self.channel(node, address))
        try:
            reply = stub.Ping(peer_pb2.PingRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _error(node, address, exc) from None
        if reply.node != node:
            raise Unauthenticated(f"the node at {address} answered as {names.quote(reply.node)}, not "
                                  f"{node}; its peer address in etcd is stale or wrong")
        return str(reply.node)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _error(node: str, address: str, exc: grpc.RpcError) -> GalleonError:
    """A failed peer call as our error, one line."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    detail = names.one_line(str(exc.details() if isinstance(exc, grpc.Call) else exc))[:300]
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"node {node} at {address} refused this node's certificate: {detail}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"node {node} at {address} refused: {detail}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(what=f"node {node} at {address}", reason="no answer within the timeout "
                                                                   "(down, paused or cut off?)")
    return Unavailable(what=f"node {node} at {address}", reason=_why(node, detail) or code.name)


_CLOSED = ("the connection was closed during the TLS handshake (does it take this node's "
           "certificate, from the same cluster CA?)")
# What gRPC's connection errors mean for a peer, by the words in them (grpcio gives text only).
_REASONS = (
    ("Hostname Verification", "its certificate does not name node {node} (is the address in "
                              "etcd stale, or the certificate issued for another node?)"),
    ("Connection refused", "connection refused (is galleond running there with that --peer-listen?)"),
    ("handshake", "the TLS handshake failed (are both nodes' certificates from the same cluster "
                  "CA, --peer-ca?)"),
    ("Socket closed", _CLOSED),
    ("Connection reset", _CLOSED),        # the same refusal, when the close races the write
)


def _why(node: str, detail: str) -> str:
    for words, reason in _REASONS:
        if words.lower() in detail.lower():
            return reason.format(node=node)
    return detail
