"""The mount worker's control socket: how the daemon reaches a mounted volume (DESIGN §2).

One request per connection, one JSON object per line each way::

    -> {"op": "stats"}                 <- {"ok": true, ...}
    -> {"op": "resize", "size": N}     <- {"ok": true, "size": N}
    -> {"op": "nope"}                  <- {"ok": false, "error": "unknown control operation 'nope'",
                                            "status": "INVALID_ARGUMENT", "class": "InvalidArgument"}

The socket is a path socket, ``<data-dir>/run/control/<volume id>.sock``, in a directory
only root may enter (0700), and the daemon binds it itself and hands the listening socket
to the worker (``--control-fd``). So no other local user can bind the address first (an
abstract name could be taken by anyone who read the volume id in /proc/mounts), nor
connect to it. Both ends still check each other (``SO_PEERCRED``): the worker answers
root or its own user only, and the caller trusts a reply only from a socket that root (or
its own user) listens on. A path longer than ``sun_path`` (108 bytes) is reached through
``/proc/self/fd/<dir fd>/<name>``.

What it must not do: block the worker's trio loop (handlers are the worker's own async
functions) or accept unbounded input (one request is at most 64 KiB).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import limits
from ..errors import GalleonError, InvalidArgument, PermissionDenied, Unavailable

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


_SUN_PATH_MAX = 107        # sockaddr_un.sun_path is 108 bytes with its NUL


def socket_file(volume_id: str) -> str:
    return f"{volume_id}.sock"


def address(dir_path: str, dir_fd: int, name: str) -> str:
    """How to reach ``name`` in the control directory: its path, or the same file through
    our fd of the directory when the path is too long for a unix socket address."""
    path = os.path.join(dir_path, name)
    return path if len(os.fsencode(path)) <= _SUN_PATH_MAX else f"/proc/self/fd/{dir_fd}/{name}"


def listen(dir_fd: int, name: str) -> socket.socket:
    """Bind and listen on ``name`` in the (0700) control directory ``dir_fd``; a stale
    socket of an earlier worker is replaced. The caller hands the socket to the worker."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"/proc/self/fd/{dir_fd}/{name}")
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


async def _read_line(stream: trio.SocketStream, limit: int) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise InvalidArgument("control request too large")
    return data.split(b"\n", 1)[0]


class ControlServer:
    """Serves the listening socket the daemon handed over (``fd``)."""

    def __init__(self, fd: int, handlers: dict[str, Handler]) -> None:
        self.fd = fd
        self.handlers = handlers

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.from_stdlib_socket(socket.socket(fileno=self.fd))
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                reply = await self._answer(stream)
            except GalleonError as exc:
                reply = {"ok": False, "error": str(exc), "status": exc.grpc_status,
                         "class": type(exc).__name__}
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": f"bad control request: {exc}",
                         "status": "INVALID_ARGUMENT", "class": "InvalidArgument"}
            with contextlib.suppress(trio.BrokenResourceError):   # the caller gave up
                await stream.send_all(json.dumps(reply).encode() + b"\n")

    async def _answer(self, stream: trio.SocketStream) -> dict[str, Any]:
        uid = _peer_uid(stream.socket)
        if uid not in (0, os.getuid()):
            raise PermissionDenied(f"uid {uid} may not control this mount worker")
        with trio.fail_after(limits.control_timeout_s):
            request = json.loads(await _read_line(stream, limits.control_request_bytes_max))
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            raise InvalidArgument(f"unknown control operation {op!r}")
        reply = await handler(request)
        return {"ok": True, **reply}


async def call(address: str, op: str, /, timeout_s: float = limits.control_timeout_s,
               **args: Any) -> dict[str, Any]:
    """Ask the worker listening on ``address``; raise ``Unavailable`` if it does not answer.

    The reply is trusted only from a socket root (or our own user) listens on: anything
    else is not a worker the daemon started. ``address`` and ``op`` are positional-only,
    so requests may carry a field named ``name``.
    """
    name = address
    try:
        with trio.fail_after(timeout_s):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.connect(name)
            stream = trio.SocketStream(sock)
            async with stream:
                uid = _peer_uid(sock)
                if uid not in (0, os.geteuid()):
                    raise PermissionDenied(f"the control socket {name} is served by uid {uid}, not by "
                                           f"root: refusing to trust it")
                await stream.send_all(json.dumps({"op": op, **args}).encode() + b"\n")
                line = await _read_line(stream, 16 * limits.control_request_bytes_max)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise Unavailable(f"the mount worker ({name}) does not answer: {exc}") from exc
    if not line:
        raise Unavailable(f"the mount worker ({name}) closed the control connection")
    reply: dict[str, Any] = json.loads(line)
    if not reply.get("ok"):
        from ..errors import error_from_status
        raise error_from_status(reply.get("status", "INTERNAL"), reply.get("error", "unknown error"),
                                reply.get("class"))
    return reply
