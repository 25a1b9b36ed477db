"""``VolumeOps``: the one typed interface through which the daemon operates on a volume.

    reply = await ops.run(SnapshotCreate("daily"))        # a SnapshotInfo

Three classes answer it, all with the same requests and replies (``messages.py``):

* ``online.OnlineOps``: the volume is mounted; the request goes to its mount worker's
  control socket, and the worker runs it on the engine it serves;
* ``offline.OfflineOps``: the volume is not mounted; a helper process opens it under its
  lock, runs the request and exits (the daemon never maps a volume itself, DESIGN §7);
* ``local.EngineOps``: the implementation both of them end in, against an open engine.

The caller picks online or offline by whether a worker serves the volume, and nothing
else changes: a contract test runs the same suite against both (``tests/volops``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from .messages import VolumeRequest

R = TypeVar("R")

# (done, total) of long operations (a rekey, a flatten); called on the waiting thread.
Progress = Callable[[int, int], None]


class VolumeOps(Protocol):
    async def run(self, request: VolumeRequest[R], progress: Progress | None = None) -> R:
        """Run one operation on the volume; raise its ``GalleonError`` as it was raised."""
        ...
