"""KeyService: rotate the node's key-encryption key, rekey a volume (with progress).

Both are long, blocking disk work: they run on a thread of their own (a rekey in a helper
process that a thread waits for), never on the trio thread (which keeps serving every other
call). A rekey streams ``RekeyProgress`` messages as chunks finish; the last one has
``done == total`` and the new epoch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from ..managers.volumes import VolumeManager
from ..v1 import key_pb2, key_pb2_grpc
from .bridge import TrioBridge


class KeyService(key_pb2_grpc.KeyServiceServicer):
    def __init__(self, bridge: TrioBridge, volumes: VolumeManager) -> None:
        self.bridge = bridge
        self.volumes = volumes
        self._rotating = threading.Lock()

    def Rotate(self, request: Any, context: Any) -> Any:
        with self._rotating:
            count, path, previous = self.volumes.rotate_key()
        return key_pb2.RotateKeyResponse(volumes=count, key_file=path, previous_key_file=previous)

    def Rekey(self, request: Any, context: Any) -> Iterator[Any]:
        volume = self.bridge.run_sync(self.volumes.get, request.name)
        updates: queue.Queue[tuple[int, int] | None] = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["epoch"] = self.bridge.run(self.volumes.rekey_offline, volume.id,
                                                   lambda d, t: updates.put((d, t)))
            except BaseException as exc:       # handed to the caller's thread below
                outcome["error"] = exc
            finally:
                updates.put(None)

        threading.Thread(target=work, name=f"rekey-{volume.name}", daemon=True).start()
        last = (0, 0)
        while (item := updates.get()) is not None:
            last = item
            yield key_pb2.RekeyProgress(done=item[0], total=item[1])
        if "error" in outcome:
            raise outcome["error"]
        yield key_pb2.RekeyProgress(done=last[1], total=last[1], epoch=outcome["epoch"])
