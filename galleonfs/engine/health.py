"""``Health``: failsafe and the needs-check marker of one volume (DESIGN §3, guarantee 3).

After corruption (a block that fails verification, a journal that does not read back, a
commit that failed) the volume goes *failsafe*: reads of bad blocks give EIO, writes EROFS,
and ``NEEDS_CHECK`` in the volume directory makes the next read-write open refuse until
``galleonfs fsck`` has looked. The marker is written durably (write, fsync, rename); a full
disk gets the reserve released once for it (``space.py``).

What it must not do: raise while recording a failure (a volume in trouble must still say
so), or decide what is corrupt (the engine's readers do).
"""

from __future__ import annotations

import logging
import os

from ..errors import IOFailure
from ..storage import Storage, no_space
from .space import SpaceGuard

log = logging.getLogger(__name__)

NEEDS_CHECK_FILE = "NEEDS_CHECK"


class Health:
    def __init__(self, volume_dir: str, storage: Storage, space: SpaceGuard, label: str) -> None:
        self.dir = volume_dir
        self._storage = storage
        self._space = space
        self.label = label                 # how messages name the volume
        self.failsafe: str | None = None    # why the volume went failsafe, if it did

    def enter_failsafe(self, reason: str) -> None:
        """After corruption: reads of bad blocks give EIO, writes EROFS, check on next mount."""
        if self.failsafe is None:
            log.error("volume %s enters failsafe: %s", self.dir, reason)
            self.failsafe = reason
            self.mark_needs_check(reason)

    def needs_check(self) -> str | None:
        raw = self._storage.read_small_file(os.path.join(self.dir, NEEDS_CHECK_FILE))
        return None if raw is None else raw.decode(errors="replace").strip() or "unknown reason"

    def mark_needs_check(self, reason: str) -> None:
        """Record durably that the volume must be checked; never raises."""
        path = os.path.join(self.dir, NEEDS_CHECK_FILE)
        try:
            self._storage.write_file_durably(path, reason.encode() + b"\n")
        except OSError as exc:
            if no_space(exc) and self._space.release():
                try:
                    self._storage.write_file_durably(path, reason.encode() + b"\n")
                    return
                except OSError:
                    pass
            log.exception("could not write the needs-check marker for %s", self.dir)

    def clear_needs_check(self) -> None:
        path = os.path.join(self.dir, NEEDS_CHECK_FILE)
        if self._storage.exists(path):
            self._storage.unlink(path)
            self._storage.sync_dir(self.dir)

    def io_error(self, what: str, exc: OSError) -> IOFailure:
        """An I/O error of the host disk (not a full one) while trying to ``what``."""
        return IOFailure(f"volume {self.label}: cannot {what} in {self.dir} "
                         f"(on {self._space.disk}): {exc.strerror or exc}")
