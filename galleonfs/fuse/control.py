"""The mount worker's control socket: how the daemon reaches a mounted volume (DESIGN §2).

The worker serves the listening socket the daemon bound and handed over (``--control-fd``;
where it is and why it is safe: ``volops/channel.py``). Each connection carries one
request of ``volops.messages``, which runs through the worker's ``EngineOps`` (the same
implementation the offline helper runs), and one answer (``volops/codec.py``):

    -> {"op": "resize", "args": {"size": N}}        <- {"ok": true, "reply": {"size": N}}
    -> {"op": "nope"}                               <- {"ok": false, "error": "bad control
                                                        request: unknown operation 'nope'", ...}

Only a peer that is root or our own user is answered (``SO_PEERCRED``). Only bytes that are
not a request are a "bad control request"; a ``GalleonError`` of the operation is its
answer; anything else an operation raises is a bug and ends the worker (it marks the volume
for check on the way out, ``worker.run``). A peer that sends nothing, too much or hangs up
is dropped; the worker serves on.

What it must not do: block the worker's trio loop, or accept unbounded input (a request
is at most ``limits.control_request_bytes_max``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import trio

from .. import limits
from ..errors import GalleonError, InvalidArgument, PermissionDenied
from ..volops import channel, codec
from ..volops.messages import VolumeRequest
from ..volops.protocol import VolumeOps

log = logging.getLogger(__name__)


class ControlServer:
    """Serves the listening socket ``fd`` with ``ops`` (the worker's ``EngineOps``)."""

    def __init__(self, fd: int, ops: VolumeOps) -> None:
        self.fd = fd
        self.ops = ops

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.from_stdlib_socket(socket.socket(fileno=self.fd))
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                request = await self._receive(stream)
            except GalleonError as exc:
                answer = codec.encode_error(exc)
            except (trio.TooSlowError, trio.BrokenResourceError) as exc:
                log.debug("control connection dropped: %r", exc)
                return
            else:
                try:
                    answer = codec.encode_reply(await self.ops.run(request))
                except GalleonError as exc:
                    answer = codec.encode_error(exc)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(answer)      # the caller may have given up

    async def _receive(self, stream: trio.SocketStream) -> VolumeRequest[Any]:
        uid = channel.peer_uid(stream.socket)
        if not channel.trusted_uid(uid):
            raise PermissionDenied(f"uid {uid} may not control this mount worker")
        try:
            with trio.fail_after(limits.control_timeout_s):
                request = codec.decode_request(await channel.read_line(stream, limits.control_request_bytes_max))
        except ValueError as exc:             # codec.BadMessage, channel.LineTooLong
            raise InvalidArgument(f"bad control request: {exc}") from None
        if not isinstance(request, VolumeRequest):
            raise InvalidArgument(f"bad control request: {request.op} is not a volume operation")
        return request
