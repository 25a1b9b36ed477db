"""``VolumeCore``: what every part of the volume manager shares (``volumes.py`` builds on it).

The catalog entries of volumes (lookups, saving), the per-volume locks, where a volume's
operations run (``ops``: its mount worker's ``OnlineOps`` if one serves it, else a helper's
``OfflineOps``), and what happens to a volume whose helper died (FAILED, with a sentence).

Concurrency: every method runs on the daemon's trio thread. The per-volume lock
(``lock``) serialises operations on one volume across their ``await``s; code between two
``await``s is atomic anyway. Other managers (snapshots) use this public API, never the
state behind it.

What it must not do: open a volume in this process (the helper or the worker does), or
build the supervisor it is handed.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections import defaultdict

import trio

from ..crypto.keys import KeyManager, KeySpec
from ..errors import (
    FailedPrecondition,
    FormatError,
    GalleonError,
    HelperFailed,
    InvalidArgument,
    NoSpace,
    NotFound,
)
from ..meta.catalog import Catalog
from ..units import format_size
from ..volops.messages import SnapshotRelease
from ..volops.offline import OfflineOps
from ..volops.protocol import VolumeOps
from ..workers import mounts
from ..workers.supervisor import Supervisor
from . import tenancy
from .model import Volume, VolumeState, now_ns
from .storage_classes import StorageClassManager

log = logging.getLogger("galleonfs.managers.volumes")


class VolumeCore:
    # How many times the data directory's capacity volumes may be provisioned for (galleond's
    # overcommit_ratio; the daemon sets it).
    overcommit_ratio: float = 1.0

    def __init__(self, data_dir: str, catalog: Catalog, classes: StorageClassManager,
                 supervisor: Supervisor, keys: KeySpec | None = None) -> None:
        self.data_dir = data_dir
        self.catalog = catalog
        self.classes = classes
        self.keys = keys or KeySpec()
        self.supervisor = supervisor
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        os.makedirs(os.path.join(data_dir, "volumes"), mode=0o700, exist_ok=True)
        # Where mount points may go (config mount_roots; the daemon sets it).
        self.mount_roots: builtins.list[str] = builtins.list(mounts.DEFAULT_MOUNT_ROOTS)

    # --- lookups -------------------------------------------------------------------------------
    def volume_dir(self, volume_id: str) -> str:
        return os.path.join(self.data_dir, "volumes", volume_id)

    def get(self, name: str) -> Volume:
        """A volume by name or id."""
        if not name:
            raise InvalidArgument("name a volume (its name or id)")
        volume_id = self.catalog.volume_id(name) or name
        data = self.catalog.volume(volume_id)
        if data is None or not tenancy.visible(data):     # another tenant's: as if absent
            raise NotFound(f"volume {name!r} does not exist (see `galleonctl volume list`)")
        return Volume.from_json(data)

    def list(self, selector: dict[str, str] | None = None) -> list[Volume]:
        volumes = [Volume.from_json(v) for v in self.catalog.volumes() if tenancy.visible(v)]
        if selector:
            volumes = [v for v in volumes if all(v.labels.get(k) == val for k, val in selector.items())]
        return sorted(volumes, key=lambda v: v.name)

    def name_of(self, volume_id: str) -> str:
        """A volume's name from its id (clones record their origin by id); "" for ""."""
        if not volume_id:
            return ""
        return str((self.catalog.volume(volume_id) or {}).get("name", volume_id))

    def save(self, volume: Volume) -> None:
        """Make ``volume``'s entry durable (before the request that changed it is answered)."""
        volume.updated_ns = now_ns()
        self.catalog.put_volume(volume.to_json())

    def lock(self, volume: Volume) -> trio.Lock:
        """The lock that serialises operations on ``volume`` (held across ``await``s)."""
        return self._locks[volume.name]

    def forget_lock(self, volume: Volume) -> None:
        self._locks.pop(volume.name, None)

    def clones_of(self, volume_id: str, snapshot: str | None = None) -> builtins.list[Volume]:
        return [v for v in self.list() if v.origin_volume == volume_id
                and (snapshot is None or v.origin_snapshot == snapshot)]

    def by_mount_point(self, path: str) -> Volume:
        path = self.recorded_path(path)
        for volume in self.list():
            if volume.mount_point(path) is not None:
                return volume
        raise NotFound(f"no volume is mounted on {path}")

    def recorded_path(self, path: str) -> str:
        """The path a mount point was recorded under (real: no symlink, roots resolved).
        Only used to find the record; unmount then checks the mount's ids."""
        path = mounts.canonical(os.path.abspath(path), self.mount_roots)
        if any(v.mount_point(path) for v in self.list()):
            return path
        return os.path.realpath(path)

    def key_manager(self, *, needed_for: str = "") -> KeyManager | None:
        """The node's key manager, or None when no key source is configured. With
        ``needed_for``, its absence is an error that says how to configure one."""
        if not self.keys.configured:
            if needed_for:
                raise FailedPrecondition(
                    f"{needed_for} needs an encryption key and this node has no key source; set "
                    f"key_file (or key_passphrase_env, or key_command) in galleond's configuration")
            return None
        return self.keys.manager()       # galleond's key file: made on first use (README)

    def check_capacity(self, what: str, adding: int) -> None:
        """Admission: refuse (``NoSpace``, RESOURCE_EXHAUSTED) to provision ``adding`` more
        bytes when the volumes' sizes would then add up to more than the data directory's
        file system holds, times ``overcommit_ratio``. Synchronous: the caller saves the
        volume before its next ``await``, so two creates cannot both slip under the bound."""
        fs = os.statvfs(self.data_dir)
        capacity, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        allowed = int(capacity * self.overcommit_ratio)
        provisioned = sum(v.size for v in self.list())
        if provisioned + adding <= allowed:
            return
        ratio = f"{self.overcommit_ratio:g}"
        raise NoSpace(
            f"cannot {what} ({format_size(adding)} more): volumes would be provisioned for "
            f"{format_size(provisioned + adding)} (now {format_size(provisioned)}), more than the "
            f"{format_size(allowed)} that "
            f"overcommit_ratio {ratio} allows on the data directory's disk ({format_size(capacity)}, "
            f"{format_size(free)} free); delete volumes, or raise overcommit_ratio in galleond's "
            f"configuration to provision beyond the disk")

    # --- where a volume's operations run -------------------------------------------------------
    def ops(self, volume: Volume) -> VolumeOps:
        """The volume's operations: in its mount worker if one serves it (the worker owns the
        engine), else in a helper process that opens it for the occasion."""
        online = self.supervisor.ops(volume.id)
        return online if online is not None else self.offline_ops(volume)

    def offline_ops(self, volume: Volume) -> OfflineOps:
        """Operations in a helper, never in this process: damaged metadata kills the helper,
        not the daemon. A helper that dies or hangs leaves the volume FAILED with a sentence;
        every other volume goes on."""
        return OfflineOps(self.volume_dir(volume.id), self.keys, what=f"volume {volume.id}",
                          on_failure=lambda exc: self._helper_failed(volume.id, exc))

    def _helper_failed(self, volume_id: str, exc: GalleonError) -> GalleonError:
        name = (self.catalog.volume(volume_id) or {}).get("name", volume_id)
        reason = str(exc)
        if isinstance(exc, FormatError) or "died of SIG" in reason or "damaged" in reason:
            why = f"its metadata is damaged ({reason})"
        else:
            why = f"an operation on it failed ({reason}; see the node log)"
        message = f"{why}; run `galleonfs fsck --repair {self.volume_dir(volume_id)}`"
        # Not at once: the operation that ran the helper may hold the lock and put its own
        # state back on the way out (an expand returns from EXPANDING); FAILED must be last.
        trio.lowlevel.spawn_system_task(self._fail_under_lock, volume_id, message)
        return HelperFailed(f"volume {name} is failed: {message}; the other volumes are not affected")

    async def _fail_under_lock(self, volume_id: str, message: str) -> None:
        data = self.catalog.volume(volume_id)
        if data is None:
            return
        async with self.lock(Volume.from_json(data)):
            data = self.catalog.volume(volume_id)
            if data is None or volume_id in self.supervisor.workers:
                return              # deleted meanwhile, or a worker opened it after all
            self.fail(Volume.from_json(data), message)

    def fail(self, volume: Volume, message: str) -> None:
        log.error("volume %s failed: %s", volume.name, message)
        volume.state = VolumeState.FAILED
        volume.message = message
        self.save(volume)

    def revive(self, volume: Volume) -> Volume:
        """A volume its helper had left FAILED opened cleanly: it was repaired (fsck), so it is
        AVAILABLE again. (A volume FAILED with mount points is the supervisor's: left alone.)"""
        current = self.get(volume.id)
        if current.state == VolumeState.FAILED and not current.mount_points:
            log.info("volume %s opens cleanly again (repaired?): available", current.name)
            current.move_to(VolumeState.AVAILABLE)
            self.save(current)
        return current

    async def release_origin(self, clone: Volume) -> None:
        """The clone no longer needs its origin's snapshot: let the origin release its hold."""
        origin = self.catalog.volume(clone.origin_volume)
        if origin is None:
            return
        source = Volume.from_json(origin)
        try:
            async with self.lock(source):
                await self.ops(source).run(SnapshotRelease(clone.origin_snapshot, clone.id))
        except GalleonError as exc:
            log.error("volume %s: could not release snapshot %s held for %s: %s", source.name,
                      clone.origin_snapshot, clone.name, exc)
