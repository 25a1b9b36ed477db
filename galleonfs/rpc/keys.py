"""KeyService: rotate the node's key-encryption key, rekey a volume (with progress).

Both are long disk work. They run as every call does, on the daemon's trio loop through
the bridge (the managers' state is the trio thread's alone), and the loop hands the disk
work to a thread (a rotation) or to a helper process (a rekey, under the volume's lock), so
it keeps serving every other call meanwhile. A rekey streams ``RekeyProgress`` messages as
chunks finish; the last one has ``done == total`` and the new epoch.
"""

from __future__ import annotations

import contextvars
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import GalleonError, Unavailable
from ..managers.volumes import VolumeManager
from ..v1 import key_pb2, key_pb2_grpc
from .bridge import TrioBridge


@dataclass(frozen=True)
class _Finished:
    epoch: int = 0
    error: GalleonError | None = None


class KeyService(key_pb2_grpc.KeyServiceServicer):
    def __init__(self, bridge: TrioBridge, volumes: VolumeManager) -> None:
        self.bridge = bridge
        self.volumes = volumes
        self._rotating = trio.Lock()        # one rotation at a time (they share the pending file)

    def Rotate(self, request: Any, context: Any) -> Any:
        count, path, previous = self.bridge.run(self._rotate)
        return key_pb2.RotateKeyResponse(volumes=count, key_file=path, previous_key_file=previous)

    async def _rotate(self) -> tuple[int, str, str]:
        async with self._rotating:
            return await self.volumes.rotate_key()

    def Rekey(self, request: Any, context: Any) -> Iterator[Any]:
        # The rekey runs as a task of the trio loop, which this pool thread cannot wait for
        # while it streams: the task reports through a queue, the thread relays what comes.
        updates: queue.Queue[tuple[int, int] | _Finished] = queue.Queue()
        self.bridge.run_sync(self._start_rekey, request.name, updates)
        last = (0, 0)
        while not isinstance(item := updates.get(), _Finished):
            last = item
            yield key_pb2.RekeyProgress(done=item[0], total=item[1])
        if item.error is not None:
            raise item.error
        yield key_pb2.RekeyProgress(done=last[1], total=last[1], epoch=item.epoch)

    def _start_rekey(self, name: str, updates: queue.Queue[tuple[int, int] | _Finished]) -> None:
        # The caller's context goes along (its tenant: ``managers.tenancy``); a system task
        # would otherwise start from trio.run's, which binds no tenant.
        trio.lowlevel.spawn_system_task(self._rekey, name, updates, context=contextvars.copy_context())

    async def _rekey(self, name: str, updates: queue.Queue[tuple[int, int] | _Finished]) -> None:
        """On the trio loop: the rekey, its progress and its outcome into ``updates``. Only
        a ``GalleonError`` is an outcome; anything else is a bug and crashes the daemon."""
        finished = _Finished(error=Unavailable("the daemon is shutting down"))
        try:
            epoch = await self.volumes.rekey(name, lambda done, total: updates.put((done, total)))
            finished = _Finished(epoch=epoch)
        except GalleonError as exc:
            finished = _Finished(error=exc)
        finally:
            updates.put(finished)           # the streaming thread never waits forever
