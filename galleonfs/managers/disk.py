"""``DiskWatch``: galleond's view of the disk under its data directory (issue 9: host disk full).

Every ``limits.disk_watch_interval_s`` it asks each mount worker how its volume sees the
disk (``volops`` ``Space`` on the control socket: whether it refuses writes for lack of host space,
how many it refused; ``engine/space.py``). It logs when a volume starts and stops refusing
writes, one line each naming the volume and the disk: the workers' own logs live on that
disk and may not get their lines out. ``problems`` gives ``NodeInfo`` what ``/readyz``
(503) and ``galleonctl node status`` show:

* **disk pressure**: the file system holding the data directory has less free space than
  ``disk_pressure_free_fraction`` of its capacity (at most ``disk_pressure_free_bytes_max``);
* a volume **refuses writes** now because that disk is full, or refused one in the last
  ``disk_pressure_recent_s``.

The node's reserve: ``DATA_DIR/RESERVE``, ``limits.node_reserve_bytes`` allocated at start
(like each volume's, ``engine/space.py``). When the disk is down to
``limits.node_reserve_release_free_bytes`` and every mounted volume refuses data, it is
released, so that the daemon's own small writes (the node catalog, the audit log) can still
record unmounts, deletes and restarts; it is allocated again once space is back. Released
while a volume still took data, that volume would simply write into it.

What it must not do: change anything (it only looks), or wait on a worker without a bound
(a stuck worker is the supervisor's business, not a reason to stop watching the others).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .. import limits
from ..engine.space import (
    RESERVE_FILE,
    allocate_reserve,
    mount_point,
    release_reserve,
    reserve_allocated,
)
from ..errors import GalleonError
from ..storage import no_space
from ..units import format_size
from ..volops.messages import Space, SpaceState
from ..workers.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class VolumeSpace:
    """The last answer of one volume's worker."""

    name: str
    full: str = ""                 # why it refuses writes now; "" when it does not
    enospc_total: int = 0
    last_enospc: float = 0.0       # time.time() of its last refused write; 0: never


def pressure_threshold(capacity: int) -> int:
    return min(int(capacity * limits.disk_pressure_free_fraction), limits.disk_pressure_free_bytes_max)


class DiskWatch:
    def __init__(self, data_dir: str, supervisor: Supervisor, name_of: Callable[[str], str]) -> None:
        self.data_dir = data_dir
        self.disk = mount_point(data_dir)
        self.supervisor = supervisor
        self.name_of = name_of          # a volume's name from its id (for the log and readiness)
        self.spaces: dict[str, VolumeSpace] = {}      # volume id -> its worker's last answer
        self._pressure = False
        self.reserve = os.path.join(data_dir, RESERVE_FILE)
        self.reserve_released = False

    async def run(self) -> None:
        """Watch until cancelled."""
        self._hold_reserve()
        while True:
            await self.poll()
            await trio.sleep(limits.disk_watch_interval_s)

    async def poll(self) -> None:
        """Ask every mount worker once (each bounded); log what changed."""
        workers = list(self.supervisor.workers)
        for volume_id in list(self.spaces):
            if volume_id not in workers:
                del self.spaces[volume_id]
        for volume_id in workers:
            ops = self.supervisor.ops(volume_id)
            if ops is None:
                continue                 # stopped meanwhile
            reply: SpaceState | None = None
            with trio.move_on_after(limits.disk_watch_call_timeout_s):
                try:
                    reply = await ops.run(Space())
                except GalleonError as exc:
                    log.debug("volume %s: no space report: %s", volume_id, exc)
            if reply is not None:
                self._update(volume_id, reply)
        self._check_pressure()

    def _update(self, volume_id: str, reply: SpaceState) -> None:
        old = self.spaces.get(volume_id) or VolumeSpace(self.name_of(volume_id))
        new = VolumeSpace(old.name, reply.full, reply.enospc_total, reply.last_enospc)
        if new.full and not old.full:
            log.error("volume %s refuses writes that need space: the host disk %s under the data "
                      "directory is full (%s); free space there", new.name, self.disk, new.full)
        elif old.full and not new.full:
            log.info("volume %s accepts writes again: space came back on %s", new.name, self.disk)
        self.spaces[volume_id] = new

    def _hold_reserve(self) -> None:
        """Allocate the node's reserve if it is not (at start, and once space is back). A
        file system that refuses for another reason than space gets no reserve ("")."""
        if reserve_allocated(self.reserve, limits.node_reserve_bytes):
            self.reserve_released = False
            return
        try:
            allocate_reserve(self.reserve, limits.node_reserve_bytes)
        except OSError as exc:
            if not no_space(exc):           # the node works without one, as before
                log.error("cannot allocate the node's reserve %s: %s", self.reserve, exc)
                self.reserve = ""
            self.reserve_released = True
            return
        if self.reserve_released:
            log.info("space is back on %s: the node's reserve is allocated again", self.disk)
        self.reserve_released = False

    def _check_reserve(self, free: int) -> None:
        if not self.reserve:
            return
        refusing = all(space.full for space in self.spaces.values())
        if not self.reserve_released and free < limits.node_reserve_release_free_bytes and refusing:
            try:
                release_reserve(self.reserve)
            except OSError as exc:
                log.error("cannot release the node's reserve %s: %s", self.reserve, exc)
                return
            self.reserve_released = True
            log.warning("the disk %s is full: released the node's %d MiB reserve so that the "
                        "catalog and the audit log can still record changes", self.disk,
                        limits.node_reserve_bytes >> 20)
        elif self.reserve_released and free >= limits.node_reserve_bytes + limits.space_resume_free_bytes:
            self._hold_reserve()

    def _check_pressure(self) -> None:
        capacity, free = self._usage()
        self._check_reserve(free)
        pressure = free < pressure_threshold(capacity)
        if pressure and not self._pressure:
            log.warning("disk pressure on %s (the data directory's disk): %s free of %s", self.disk,
                        format_size(free), format_size(capacity))
        elif self._pressure and not pressure:
            log.info("disk pressure on %s is over: %s free of %s", self.disk, format_size(free),
                     format_size(capacity))
        self._pressure = pressure

    def _usage(self) -> tuple[int, int]:
        fs = os.statvfs(self.data_dir)
        return fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize

    def problems(self, capacity: int, free: int) -> list[str]:
        """Why the node is not ready for the disk's sake ([] when it is), from the capacity
        and free bytes the caller just read and the workers' last answers."""
        out = []
        threshold = pressure_threshold(capacity)
        if free < threshold:
            out.append(f"disk pressure: {format_size(free)} free of {format_size(capacity)} on {self.disk} "
                       f"(under {format_size(threshold)}); free space there")
        now = time.time()
        for space in sorted(self.spaces.values(), key=lambda s: s.name):
            if space.full:
                out.append(f"volume {space.name} refuses writes that need space: the host disk "
                           f"{self.disk} is full")
            elif space.last_enospc and now - space.last_enospc < limits.disk_pressure_recent_s:
                out.append(f"volume {space.name} refused writes for lack of space on {self.disk} "
                           f"{now - space.last_enospc:.0f} s ago")
        return out
