"""What the three CSI services share: the connection to galleond, the translation of every
failure into the status the specification names, and the per-volume guard.

``rpc`` wraps each servicer method: a ``CsiError`` is answered with its code; a
``GalleonError`` from galleond with the status galleond gave it (the error class travels
back through ``rpc.client``), unless the method maps it itself; anything else is a bug,
logged with its traceback and answered INTERNAL. So a caller never sees a traceback and
the driver never dies of one request.

Concurrency: grpcio serves calls on a bounded thread pool. The specification lets a plugin
refuse a second call on a volume while one is in flight (ABORTED, "operation pending for
volume"); ``Backend.guard`` does that, so two retries of one NodePublish never race each
other into galleond.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import NoReturn, TypeVar

import grpc

from ..errors import GalleonError, NotFound
from ..rpc.client import Client
from ..v1 import types_pb2
from .spec import CsiError, could_be_volume

log = logging.getLogger(__name__)

Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Reply = TypeVar("Reply")
Method = Callable[[Servicer, Request, grpc.ServicerContext], Reply]

# The secret key that carries a galleond bearer token (CSI secrets fields, e.g. Kubernetes'
# csi.storage.k8s.io/provisioner-secret-name); without it the driver's own credentials go.
TOKEN_SECRET = "token"
TOKEN_MAX_CHARS = 512      # galleond's tokens are about 50 characters


def rpc(method: Method[Servicer, Request, Reply]) -> Method[Servicer, Request, Reply]:
    @functools.wraps(method)
    def serve(self: Servicer, request: Request, context: grpc.ServicerContext) -> Reply:
        try:
            return method(self, request, context)
        except CsiError as exc:
            _abort(context, exc.code, exc.message)
        except GalleonError as exc:
            _abort(context, exc.grpc_status, str(exc))
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            _abort(context, "INTERNAL", f"internal error in the CSI driver: {type(exc).__name__}")
    return serve


def _abort(context: grpc.ServicerContext, code: str, message: str) -> NoReturn:
    context.abort(grpc.StatusCode[code], message)
    raise AssertionError("context.abort returned")    # it raises; this keeps mypy informed


class Backend:
    """The connection to galleond, shared by the services of one driver process."""

    def __init__(self, address: str, *, token: str | None = None, timeout_s: float = 120.0,
                 tls: Mapping[str, str | None] | None = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._tls = dict(tls or {})        # tls_ca, tls_cert, tls_key for a TCP galleond
        self.client = self._connect(token)
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    @contextlib.contextmanager
    def galleond(self, secrets: Mapping[str, str] | None = None) -> Iterator[Client]:
        """The client to use for one request: the driver's own, or one carrying the token
        the request's secrets hold (closed after the request)."""
        token = (secrets or {}).get(TOKEN_SECRET)
        if not token:
            yield self.client
            return
        if len(token) > TOKEN_MAX_CHARS or not all("!" <= ch <= "~" for ch in token.strip()):
            # gRPC metadata is printable ASCII; a token is one word of it.
            raise CsiError("UNAUTHENTICATED", "the token in the request's secrets is malformed: "
                                              "give the token galleonctl token create printed")
        with self._connect(token) as client:
            yield client

    def _connect(self, token: str | None) -> Client:
        return Client(self.address, token=token, timeout_s=self.timeout_s, tls_ca=self._tls.get("tls_ca"),
                      tls_cert=self._tls.get("tls_cert"), tls_key=self._tls.get("tls_key"))

    @contextlib.contextmanager
    def guard(self, key: str) -> Iterator[None]:
        """One call at a time per volume (or snapshot name): ABORTED for a second one."""
        with self._lock:
            if key in self._busy:
                raise CsiError("ABORTED", f"an operation on {key} is already in progress; retry later")
            self._busy.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(key)


def find_volume(client: Client, volume_id: str) -> types_pb2.Volume:
    """The volume ``volume_id`` names, or NOT_FOUND (also for an id that names nothing)."""
    if not could_be_volume(volume_id):
        raise CsiError("NOT_FOUND", f"volume {volume_id[:64]!r} does not exist")
    try:
        return client.get_volume(volume_id)
    except NotFound:
        raise CsiError("NOT_FOUND", f"volume {volume_id[:64]!r} does not exist") from None


def mounted_at(volume: types_pb2.Volume, path: str) -> types_pb2.MountPoint | None:
    """The volume's mount point at ``path``, as galleond recorded it."""
    wanted = path.rstrip("/") or "/"
    for point in volume.mount_points:
        if point.path.rstrip("/") == wanted and not point.snapshot:
            return point
    return None
