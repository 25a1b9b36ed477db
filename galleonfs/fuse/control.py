"""The mount worker's control socket: how the daemon reaches a mounted volume (DESIGN §2).

One request per connection, one JSON object per line each way::

    -> {"op": "stats"}                 <- {"ok": true, ...}
    -> {"op": "resize", "size": N}     <- {"ok": true, "size": N}
    -> {"op": "nope"}                  <- {"ok": false, "error": "unknown control operation 'nope'",
                                            "status": "INVALID_ARGUMENT", "class": "InvalidArgument"}

The socket lives in the abstract namespace (``@galleonfs/<volume id>``): no path to clean
up after a ``kill -9`` and no 108-byte path limit. Abstract sockets have no file mode, so
the server checks the peer's uid (``SO_PEERCRED``): root or the worker's own user only.

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


def socket_name(volume_id: str) -> str:
    return f"galleonfs/{volume_id}"


def _address(name: str) -> str:
    return "\0" + name


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
    def __init__(self, name: str, handlers: dict[str, Handler]) -> None:
        self.name = name
        self.handlers = handlers

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(_address(self.name))
        sock.listen(16)
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
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
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

    ``address`` and ``op`` are positional-only, so requests may carry a field named ``name``.
    """
    name = address
    try:
        with trio.fail_after(timeout_s):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.connect(_address(name))
            stream = trio.SocketStream(sock)
            async with stream:
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
