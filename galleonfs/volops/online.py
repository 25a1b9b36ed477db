"""``OnlineOps``: volume operations on a mounted volume, through its worker's control socket.

The worker owns the engine while it serves the volume (it is its only writer), so the
daemon sends it the request and the worker runs it (``fuse/control.py`` ->
``local.EngineOps``). A worker that does not answer within the bound is ``Unavailable``;
an answer that is not one of this protocol is too (it did not come from a worker we know).

What it must not do: send a byte to, or believe an answer from, a socket that neither
root nor our own user listens on.
"""

from __future__ import annotations

from typing import cast

import trio

from .. import limits
from ..errors import PermissionDenied, Unavailable
from . import channel, codec
from .messages import VolumeRequest
from .protocol import Progress, R


class OnlineOps:
    """``VolumeOps`` of the volume whose worker listens on ``address``."""

    def __init__(self, address: str, timeout_s: float = limits.control_timeout_s) -> None:
        self.address = address
        self.timeout_s = timeout_s

    async def run(self, request: VolumeRequest[R], progress: Progress | None = None) -> R:
        """``progress`` is not reported: a worker runs long work between FUSE requests and
        answers when it is done."""
        return await call(self.address, request, timeout_s=self.timeout_s)


async def call(address: str, request: VolumeRequest[R], *, timeout_s: float = limits.control_timeout_s) -> R:
    """Ask the worker listening on ``address``; raise ``Unavailable`` if it does not answer,
    ``PermissionDenied`` if the socket is not one of ours, else what the worker raised."""
    try:
        with trio.fail_after(timeout_s):
            sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
            await sock.connect(address)
            stream = trio.SocketStream(sock)
            async with stream:
                uid = channel.peer_uid(sock)
                if not channel.trusted_uid(uid):
                    raise PermissionDenied(f"the control socket {address} is served by uid {uid}, not by "
                                           f"root: refusing to trust it")
                await stream.send_all(codec.encode_request(request))
                line = await channel.read_line(stream, limits.control_reply_bytes_max)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, channel.LineTooLong) as exc:
        raise Unavailable(f"the mount worker ({address}) does not answer: {exc}") from exc
    if not line:
        raise Unavailable(f"the mount worker ({address}) closed the control connection")
    try:
        return cast(R, codec.decode_answer(line, request.reply_type))
    except codec.BadMessage as exc:
        raise Unavailable(f"the mount worker ({address}) sent an answer that is not one: {exc}") from None
