"""The one bridge from grpcio's threads into trio (DESIGN §2: no second event loop).

grpcio serves each call on a thread of its bounded pool; the servicer calls
``bridge.run(async_fn, *args)``, which runs the coroutine on the daemon's trio loop and
blocks that pool thread until it is done. All state therefore lives on the trio thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..errors import Unavailable

T = TypeVar("T")


class TrioBridge:
    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError as exc:
            raise Unavailable("the daemon is shutting down") from exc

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self._token)
        except trio.RunFinishedError as exc:
            raise Unavailable("the daemon is shutting down") from exc
