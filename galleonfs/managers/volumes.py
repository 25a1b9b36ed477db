"""``VolumeManager``: volumes as a managed service on one node.

Owns the volume life cycle (create, mount, expand, unmount, delete) and keeps three things
in step: the catalog (the desired state, durable before a request is answered), the
mount workers (through the supervisor) and the mount points (bind mounts).

Concurrency: every method runs on the daemon's trio thread. A per-volume lock serialises
operations on one volume across their ``await``s (a mount waits for its worker to come up;
a delete must not interleave with it); code between two ``await``s is atomic anyway.

Access modes: ReadWriteOnce allows one read-write mount point (plus read-only ones);
ReadOnlyMany allows only read-only mount points, and its worker opens the volume
read-only; ReadWriteMany allows several read-write mount points, all bind mounts of the
one worker's FUSE mount, so they see each other's writes at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import trio

from .. import limits
from ..crypto import volume_key
from ..crypto.keys import PENDING, PREVIOUS, KeyFile, KeyManager, KeySpec
from ..engine.engine import Engine
from ..errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    FormatError,
    GalleonError,
    HelperFailed,
    InvalidArgument,
    NoSpace,
    NotFound,
    Unimplemented,
)
from ..meta.catalog import Catalog
from ..metrics import multiproc
from ..node import mounts
from ..node.supervisor import Supervisor, mark_needs_check
from ..storage import Storage, disk_bytes
from . import tenancy
from .model import (
    AccessMode,
    MountPoint,
    ReclaimPolicy,
    Volume,
    VolumeState,
    VolumeType,
    check_labels,
    check_name,
    now_ns,
)
from .storage_classes import StorageClassManager

log = logging.getLogger(__name__)

RESTARTS_MAX = 3        # a worker that dies this often in a row leaves its volume FAILED
# "In a row": each death less than this after the one before. A restart (check + mount) takes
# under a second (tests/node/test_restart.py), so a crash loop stays well inside the window,
# while a worker killed now and then (the OOM killer, an operator) never adds up to FAILED.
RESTART_WINDOW_S = 60.0


class VolumeManager:
    # How many times the data directory's capacity volumes may be provisioned for (galleond's
    # overcommit_ratio; the daemon sets it).
    overcommit_ratio: float = 1.0

    def __init__(self, data_dir: str, catalog: Catalog, classes: StorageClassManager,
                 keys: KeySpec | None = None) -> None:
        self.data_dir = data_dir
        self.catalog = catalog
        self.classes = classes
        self.keys = keys or KeySpec()
        self.supervisor = Supervisor(data_dir, self._worker_died, self.keys)
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._restarts: dict[str, tuple[int, float]] = {}   # volume id -> (deaths in a row, last)
        os.makedirs(os.path.join(data_dir, "volumes"), mode=0o700, exist_ok=True)
        # Where mount points may go (config mount_roots; the daemon sets it).
        self.mount_roots: list[str] = list(mounts.DEFAULT_MOUNT_ROOTS)

    # --- lookups -------------------------------------------------------------------------------
    def volume_dir(self, volume_id: str) -> str:
        return os.path.join(self.data_dir, "volumes", volume_id)

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

    def rotate_key(self) -> tuple[int, str, str]:
        """Re-wrap every volume's keys under a new key file (blocking: run on a thread).
        Returns ``(volumes re-wrapped, key file, previous key file)``."""
        path = self.keys.key_file
        if not path:
            source = ("a passphrase" if self.keys.passphrase_env else
                      "a key command (rotate the key in its KMS)" if self.keys.command else "no key source")
            raise FailedPrecondition(f"key rotate replaces the node's key file, and this node uses {source}; "
                                     f"configure key_file to rotate here")
        old = KeyFile(path, create=False)
        new = KeyFile(path + PENDING)       # reused if an earlier rotation stopped half-way
        dirs = [self.volume_dir(v["id"]) for v in self.catalog.volumes()]
        count = volume_key.rotate(dirs, old, new)
        previous = path + PREVIOUS
        with contextlib.suppress(FileNotFoundError):
            os.unlink(previous)
        os.link(path, previous)             # never a moment without a key file at ``path``
        os.replace(path + PENDING, path)
        Storage().sync_dir(os.path.dirname(path))
        log.info("rotated the key-encryption key: %d volume(s) re-wrapped, previous key in %s", count, previous)
        return count, path, previous

    async def rekey_offline(self, volume_id: str, progress: Callable[[int, int], None]) -> int:
        """Rekey an unmounted volume (in a helper process); its new epoch. ``progress`` is
        called on the thread that waits for the helper."""
        if volume_id in self.supervisor.workers:
            raise Busy("the volume is mounted; unmount it before a rekey (online rekey is not supported yet)")
        reply = await self.offline(self.get(volume_id), "rekey", {}, progress)
        epoch = int(reply["epoch"])
        log.info("volume %s rekeyed: key epoch %d", volume_id, epoch)
        return epoch

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

    def _save(self, volume: Volume) -> None:
        volume.updated_ns = now_ns()
        self.catalog.put_volume(volume.to_json())

    def _by_mount_point(self, path: str) -> Volume:
        path = self._recorded_path(path)
        for volume in self.list():
            if volume.mount_point(path) is not None:
                return volume
        raise NotFound(f"no volume is mounted on {path}")

    def _recorded_path(self, path: str) -> str:
        """The path a mount point was recorded under (real: no symlink, roots resolved).
        Only used to find the record; unmount then checks the mount's ids."""
        path = mounts.canonical(os.path.abspath(path), self.mount_roots)
        if any(v.mount_point(path) for v in self.list()):
            return path
        return os.path.realpath(path)

    # --- create --------------------------------------------------------------------------------
    async def create(self, name: str, size: int, *, storage_class: str = "", access_modes: list[AccessMode] | None = None,
                     type: VolumeType = VolumeType.PERSISTENT, labels: dict[str, str] | None = None) -> Volume:
        check_name(name)
        labels = check_labels(labels or {})
        cls = self.classes.get(storage_class) if storage_class else self.classes.default()
        unsupported = cls.unsupported()
        if unsupported:
            raise Unimplemented(
                f"storage class {cls.name} asks for {', '.join(unsupported)}, which this version "
                f"of GalleonFS cannot provide yet; use a class without it (e.g. local)")
        if not limits.volume_size_min_bytes <= size <= limits.volume_size_max_bytes:
            raise InvalidArgument(f"volume size {size} is out of range: use at least 1M and at most 1P")
        modes = list(dict.fromkeys(access_modes or [AccessMode.RWO]))
        async with self._locks[name]:
            self.check_capacity(f"create volume {name}", size)
            if self.catalog.volume_id(name) is not None:
                raise AlreadyExists(f"a volume named {name!r} already exists")
            tenant = tenancy.admit(self.catalog, storage_class=cls.name, size=size)
            volume = Volume(id=str(uuid.uuid4()), name=name, size=size, storage_class=cls.name,
                            type=type, access_modes=modes, labels=labels, block_size=cls.block_size,
                            tenant=tenant)
            self._save(volume)
            try:
                params = cls.parameters
                keys = (self.key_manager(needed_for=f"storage class {cls.name}")
                        if params.get("encryption", "none") != "none" else None)
                await trio.to_thread.run_sync(lambda: Engine.create(
                    self.volume_dir(volume.id), size=size, block_size=volume.block_size, name=name,
                    keys=keys, compression=params.get("compression", "none"),
                    dedup=params.get("dedup", "on") == "on"))
            except BaseException as exc:
                shutil.rmtree(self.volume_dir(volume.id), ignore_errors=True)
                self.catalog.delete_volume(volume.id)
                if isinstance(exc, GalleonError):
                    raise
                raise GalleonError(f"could not create volume {name}: {exc}") from exc
            volume.move_to(VolumeState.AVAILABLE)
            self._save(volume)
        log.info("created volume %s (%s, %d bytes)", name, volume.id, size)
        return volume

    def check_capacity(self, what: str, adding: int) -> None:
        """Admission: refuse (``NoSpace``, RESOURCE_EXHAUSTED) to provision ``adding`` more
        bytes when the volumes' sizes would then add up to more than the data directory's
        file system holds, times ``overcommit_ratio``. Synchronous: the caller saves the
        volume before its next ``await``, so two creates cannot both slip under the bound."""
        from ..units import format_size

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

    # --- mount / unmount -----------------------------------------------------------------------
    async def mount(self, name: str, path: str, *, read_only: bool = False) -> Volume:
        volume = self.get(name)
        path = os.path.abspath(path) if os.path.isabs(path) else path
        async with self._locks[volume.name]:
            volume = self.get(volume.id)
            self._check_access(volume, read_only)
            if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
                raise FailedPrecondition(f"volume {volume.name} is {volume.state.value}; it cannot be mounted now")
            # Pinned by fd until bound: nothing swapped in on the path can redirect the mount.
            with await trio.to_thread.run_sync(mounts.open_target, path, self.mount_roots) as target:
                worker = self.supervisor.workers.get(volume.id)
                if worker is None:
                    try:
                        worker = await self.supervisor.start(volume.id, self.volume_dir(volume.id),
                                                             read_only=self._worker_read_only(volume))
                    except GalleonError as exc:
                        raise type(exc)(f"cannot mount volume {volume.name}: {exc}") from None
                    self._restarts.pop(volume.id, None)     # a mount asked for: a fresh start
                try:
                    placed = await mounts.bind(worker.staging, target, read_only=read_only)
                except GalleonError:
                    if not volume.mount_points:
                        await self.supervisor.stop(volume.id)
                    raise
            path = placed.path
            volume.mount_points.append(MountPoint(path, read_only, now_ns(), mount_id=placed.mount_id,
                                                  mount_unique_id=placed.unique_id))
            if volume.state != VolumeState.MOUNTED:
                volume.move_to(VolumeState.MOUNTED)
            self._save(volume)
        log.info("mounted volume %s on %s%s", volume.name, path, " (read-only)" if read_only else "")
        return volume

    def _worker_read_only(self, volume: Volume) -> bool:
        return not volume.writable_modes

    def _check_access(self, volume: Volume, read_only: bool) -> None:
        if read_only:
            return
        if not volume.writable_modes:
            raise FailedPrecondition(
                f"volume {volume.name} is ReadOnlyMany; mount it with --read-only")
        writers = [m.path for m in volume.mount_points if not m.read_only]
        if writers and AccessMode.RWX not in volume.access_modes:
            raise Busy(f"volume {volume.name} is ReadWriteOnce and already mounted read-write on "
                       f"{writers[0]}; unmount it first, or mount read-only")

    async def unmount(self, name: str = "", path: str = "", *, lazy: bool = False) -> Volume:
        if bool(name) == bool(path):
            raise InvalidArgument("name a volume or a mount point (one of the two)")
        volume = self._by_mount_point(path) if path else self.get(name)
        async with self._locks[volume.name]:
            volume = self.get(volume.id)
            targets = [volume.mount_point(self._recorded_path(path))] if path else list(volume.mount_points)
            if not targets or targets == [None]:
                raise FailedPrecondition(f"volume {volume.name} is not mounted")
            for point in targets:
                assert point is not None
                await mounts.unbind(point, lazy=lazy)
                volume.mount_points.remove(point)
                self._save(volume)
            if not volume.mount_points:
                await self.supervisor.stop(volume.id)
                volume.move_to(VolumeState.AVAILABLE)
                self._save(volume)
        log.info("unmounted volume %s from %s", volume.name, ", ".join(p.path for p in targets if p))
        if not volume.mount_points and volume.type == VolumeType.EPHEMERAL:
            log.info("volume %s is ephemeral and has no mount left: deleting it", volume.name)
            await self.delete(volume.id)
            volume.move_to(VolumeState.DELETING)
        return volume

    # --- expand --------------------------------------------------------------------------------
    async def expand(self, name: str, size: int) -> Volume:
        volume = self.get(name)
        async with self._locks[volume.name]:
            volume = self.get(volume.id)
            if size < volume.size:
                raise InvalidArgument(
                    f"volume {volume.name} is {volume.size} bytes; shrinking to {size} is not supported")
            if size > limits.volume_size_max_bytes:
                raise InvalidArgument(f"volume size {size} is out of range: at most 1P")
            if size == volume.size:
                return volume
            tenancy.admit_growth(self.catalog, volume.tenant, volume.size, size)
            worker = self.supervisor.workers.get(volume.id)
            if worker is not None and worker.read_only:
                # A ReadOnlyMany volume's worker opened it read-only: nothing can write the
                # new size while it is mounted.
                raise FailedPrecondition(
                    f"volume {volume.name} is mounted read-only (ReadOnlyMany), so it cannot grow "
                    f"online; unmount it, expand it, and mount it again")
            self.check_capacity(f"expand volume {volume.name}", size - volume.size)
            back = volume.state
            volume.move_to(VolumeState.EXPANDING)
            self._save(volume)
            try:
                if volume.id in self.supervisor.workers:
                    await self.supervisor.call(volume.id, "resize", size=size)
                else:
                    await trio.to_thread.run_sync(self._resize_offline, volume.id, size)
            except GalleonError:
                volume.move_to(back)
                self._save(volume)
                raise
            volume.size = size
            volume.move_to(back)
            self._save(volume)
        log.info("expanded volume %s to %d bytes", volume.name, size)
        return volume

    def _resize_offline(self, volume_id: str, size: int) -> None:
        """On a thread: the new size, written by a helper process (``offline``)."""
        self._run_offline(volume_id, "resize", {"size": size})

    # --- delete --------------------------------------------------------------------------------
    async def delete(self, name: str, *, force: bool = False) -> tuple[str, str]:
        """Delete a volume; return ``(id, retained path or "")``."""
        volume = self.get(name)
        async with self._locks[volume.name]:
            volume = self.get(volume.id)
            clones = self.clones_of(volume.id)
            if clones:
                raise Busy(f"volume {volume.name} has clones ({', '.join(sorted(c.name for c in clones))}) "
                           f"that share its blocks; flatten or delete them first")
            if volume.mount_points:
                if not force:
                    raise Busy(f"volume {volume.name} is mounted on "
                               f"{', '.join(m.path for m in volume.mount_points)}; unmount it first "
                               f"or use --force")
                for point in list(volume.mount_points):
                    await mounts.unbind(point, lazy=True)
                    volume.mount_points.remove(point)
            await self.supervisor.stop(volume.id)
            volume.move_to(VolumeState.DELETING)
            self._save(volume)
            retained = ""
            cls = self.classes.find(volume.storage_class)
            source = self.volume_dir(volume.id)
            if cls is not None and cls.reclaim_policy == ReclaimPolicy.RETAIN:
                retained = os.path.join(self.data_dir, "retained", f"{volume.name}-{volume.id}")
                os.makedirs(os.path.dirname(retained), mode=0o700, exist_ok=True)
                await trio.to_thread.run_sync(shutil.move, source, retained)
            else:
                await trio.to_thread.run_sync(shutil.rmtree, source, True)
            self.catalog.delete_volume(volume.id)
            multiproc.drop_volume(volume.id)          # its series leave /metrics
        self._locks.pop(volume.name, None)
        log.info("deleted volume %s (%s)%s", volume.name, volume.id, f", data kept in {retained}" if retained else "")
        if volume.origin_volume:
            await self.release_origin(volume)
        return volume.id, retained

    # --- running engine operations where the engine is -----------------------------------------
    async def on_volume(self, volume: Volume, op: str, args: dict[str, Any]) -> Any:
        """Run a named volume operation: in the mount worker if the volume is mounted (it owns
        the engine), else in a helper process that opens it for the occasion (``offline``)."""
        if volume.id in self.supervisor.workers:
            return await self.supervisor.call(volume.id, op, **args)
        return await self.offline(volume, op, args)

    async def offline(self, volume: Volume, op: str, args: dict[str, Any],
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Run ``op`` (``managers.offline.OPS``) on the unmounted volume in a helper process,
        never in this one: damaged metadata kills the helper, not the daemon. A helper that
        dies or hangs leaves the volume FAILED with a sentence; every other volume goes on."""
        return await trio.to_thread.run_sync(self._run_offline, volume.id, op, args, progress)

    def _run_offline(self, volume_id: str, op: str, args: dict[str, Any],
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """``offline``'s body, on a thread that trio started (it waits for the helper)."""
        from . import offline

        path = self.volume_dir(volume_id)
        try:
            return offline.run(offline.Request(op, path, args, self.keys), progress, what=f"volume {volume_id}")
        except (HelperFailed, FormatError) as exc:
            # FormatError: the helper opened the volume and found its metadata unreadable
            # (damaged pages, an unknown format): as failed as a helper that died of it.
            name = (self.catalog.volume(volume_id) or {}).get("name", volume_id)
            reason = str(exc)
            if isinstance(exc, FormatError) or "died of SIG" in reason or "damaged" in reason:
                why = f"its metadata is damaged ({reason})"
            else:
                why = f"an operation on it failed ({reason}; see the node log)"
            message = f"{why}; run `galleonfs fsck --repair {path}`"
            trio.from_thread.run_sync(self._fail_when_free, volume_id, message)
            raise HelperFailed(f"volume {name} is failed: {message}; the other volumes are not "
                               f"affected") from None

    def _fail_when_free(self, volume_id: str, message: str) -> None:
        """Mark the volume FAILED as soon as nobody holds its lock. Not at once: the operation
        that ran the helper may hold the lock and put its own state back on the way out (an
        expand returns from EXPANDING), and FAILED must be the last word."""
        trio.lowlevel.spawn_system_task(self._fail_under_lock, volume_id, message)

    async def _fail_under_lock(self, volume_id: str, message: str) -> None:
        data = self.catalog.volume(volume_id)
        if data is None:
            return
        async with self._locks[Volume.from_json(data).name]:
            data = self.catalog.volume(volume_id)
            if data is None or volume_id in self.supervisor.workers:
                return              # deleted meanwhile, or a worker opened it after all
            self._fail(Volume.from_json(data), message)

    def clones_of(self, volume_id: str, snapshot: str | None = None) -> list[Volume]:
        return [v for v in self.list() if v.origin_volume == volume_id
                and (snapshot is None or v.origin_snapshot == snapshot)]

    async def release_origin(self, clone: Volume) -> None:
        """The clone no longer needs its origin's snapshot: let the origin release its hold."""
        origin = self.catalog.volume(clone.origin_volume)
        if origin is None:
            return
        source = Volume.from_json(origin)
        try:
            async with self._locks[source.name]:
                await self.on_volume(
                    source, "snapshot_release", {"name": clone.origin_snapshot, "clone_id": clone.id})
        except GalleonError as exc:
            log.error("volume %s: could not release snapshot %s held for %s: %s", source.name,
                      clone.origin_snapshot, clone.name, exc)

    # --- stats ---------------------------------------------------------------------------------
    async def stats(self, name: str) -> tuple[Volume, dict[str, object]]:
        volume = self.get(name)
        if volume.id in self.supervisor.workers:
            stats = await self.supervisor.call(volume.id, "stats")
            stats["mounted"] = True
        else:
            async with self._locks[volume.name]:
                stats = await self.offline(volume, "stats", {})
                volume = self._revive(volume)
        stats["disk_bytes"] = await trio.to_thread.run_sync(disk_bytes, self.volume_dir(volume.id))
        return volume, stats

    def _revive(self, volume: Volume) -> Volume:
        """A volume its helper had left FAILED opened cleanly: it was repaired (fsck), so it is
        AVAILABLE again. (A volume FAILED with mount points is the supervisor's: left alone.)"""
        current = self.get(volume.id)
        if current.state == VolumeState.FAILED and not current.mount_points:
            log.info("volume %s opens cleanly again (repaired?): available", current.name)
            current.move_to(VolumeState.AVAILABLE)
            self._save(current)
        return current

    # --- daemon start, worker deaths, shutdown -------------------------------------------------
    async def reconcile(self) -> None:
        """At daemon start: adopt live workers, restart dead ones, redo lost bind mounts; then
        roll back the creates and finish the deletes that a killed daemon left half done."""
        interrupted = []
        for volume in self.list():
            if volume.state in (VolumeState.PROVISIONING, VolumeState.DELETING):
                interrupted.append(volume)
                continue
            if volume.state == VolumeState.EXPANDING:
                volume.state = VolumeState.MOUNTED if volume.mount_points else VolumeState.AVAILABLE
                self._save(volume)
            if volume.mount_points:
                async with self._locks[volume.name]:
                    await self._restore_mounts(volume, at_start=True)
        # After the mounts: rolling back a clone releases its origin's hold, which goes to the
        # origin's worker if it is mounted (adopted or restarted above).
        for volume in interrupted:
            await self._finish_interrupted(volume)

    async def _finish_interrupted(self, volume: Volume) -> None:
        """A create that never finished is undone (its directory and entry go); a delete that
        never finished is finished. Either way nothing is left FAILED for an operator to clean."""
        state = volume.state
        try:
            if state == VolumeState.PROVISIONING:
                log.warning("volume %s: the last daemon stopped while creating it; rolling the create back",
                            volume.name)
                async with self._locks[volume.name]:
                    await trio.to_thread.run_sync(shutil.rmtree, self.volume_dir(volume.id), True)
                    self.catalog.delete_volume(volume.id)
                if volume.origin_volume:
                    await self.release_origin(volume)
            else:
                log.warning("volume %s: the last daemon stopped while deleting it; finishing the delete",
                            volume.name)
                await self.delete(volume.id, force=True)
        except (GalleonError, OSError) as exc:
            self._fail(volume, f"the daemon stopped while it was {state.value}, and finishing that "
                               f"failed: {exc}")

    async def _restore_mounts(self, volume: Volume, *, at_start: bool) -> None:
        """Adopt or start the volume's worker, and bind every mount point that is not bound."""
        worker = await self.supervisor.adopt(volume.id, self.volume_dir(volume.id),
                                             read_only=self._worker_read_only(volume))
        if worker is None:
            staging = self.supervisor.staging_dir(volume.id)
            if at_start and mounts.is_mounted(staging):
                # A FUSE mount whose worker is gone: it died without unmounting. (A death
                # while the daemon runs was reported and marked by the supervisor already.)
                log.warning("volume %s: its mount worker died while the daemon was down; "
                            "checking the volume and starting a new one", volume.name)
                mark_needs_check(self.volume_dir(volume.id), "its mount worker died while the daemon was down")
            for point in volume.mount_points:
                try:
                    await mounts.unbind(point, lazy=True)     # its dead bind (ENOTCONN), if any
                except GalleonError as exc:
                    log.error("volume %s: %s", volume.name, exc)
            try:
                worker = await self.supervisor.start(volume.id, self.volume_dir(volume.id),
                                                     read_only=self._worker_read_only(volume))
            except GalleonError as exc:
                self._fail(volume, f"cannot restart its mount worker: {exc}")
                return
        await self._rebind(volume, worker.staging)
        if volume.state != VolumeState.MOUNTED:
            volume.state = VolumeState.MOUNTED
            self._save(volume)

    async def _rebind(self, volume: Volume, staging: str) -> None:
        """Bind every mount point whose recorded mount is gone, as a new mount would (under
        the roots, through a pinned fd), and record the new mounts' ids."""
        for i, point in enumerate(volume.mount_points):
            try:
                placed = await trio.to_thread.run_sync(mounts.locate, point)
                if placed is None:
                    with await trio.to_thread.run_sync(mounts.open_target, point.path, self.mount_roots) as target:
                        placed = await mounts.bind(staging, target, read_only=point.read_only,
                                                   snapshot=point.snapshot)
            except (GalleonError, OSError) as exc:
                log.error("volume %s: cannot restore mount point %s: %s", volume.name, point.path, exc)
                continue
            if (placed.mount_id, placed.unique_id) != (point.mount_id, point.mount_unique_id):
                volume.mount_points[i] = dataclasses.replace(point, mount_id=placed.mount_id,
                                                             mount_unique_id=placed.unique_id)
                self._save(volume)

    def _fail(self, volume: Volume, message: str) -> None:
        log.error("volume %s failed: %s", volume.name, message)
        volume.state = VolumeState.FAILED
        volume.message = message
        self._save(volume)

    async def _worker_died(self, volume_id: str, reason: str) -> None:
        """The supervisor's callback: restart the worker and rebind, a bounded number of times."""
        data = self.catalog.volume(volume_id)
        if data is None:
            return
        now = trio.current_time()
        count, last = self._restarts.get(volume_id, (0, now))
        count = 1 if now - last > RESTART_WINDOW_S else count + 1
        self._restarts[volume_id] = (count, now)
        async with self._locks[Volume.from_json(data).name]:
            data = self.catalog.volume(volume_id)     # a delete may have run while we waited
            if data is None:
                return
            volume = Volume.from_json(data)
            if not volume.mount_points or volume_id in self.supervisor.workers:
                return
            if count > RESTARTS_MAX:
                # The mount points stay dead (ENOTCONN) rather than turning into empty
                # directories an application could write into unnoticed; `volume unmount`
                # clears them.
                await mounts.clear_dead(self.supervisor.staging_dir(volume_id))
                self._fail(volume, f"{reason}; gave up after {RESTARTS_MAX} restarts in a row")
                return
            log.warning("restarting the mount worker of volume %s (%s)", volume.name, reason)
            await self._restore_mounts(volume, at_start=False)

    async def shutdown(self) -> None:
        """Clean daemon stop: unmount every mount point, stop every worker (flush, checkpoint).

        The catalog keeps the mount points, so the next daemon start mounts them again.
        """
        for volume in self.list():
            # The lock first: a mount still running (its call outlived the RPC grace period)
            # registers its worker only when it is done, and must not be missed.
            async with self._locks[volume.name]:
                data = self.catalog.volume(volume.id)
                if data is None or volume.id not in self.supervisor.workers:
                    continue
                for point in Volume.from_json(data).mount_points:
                    try:
                        await mounts.unbind(point, lazy=True)
                    except GalleonError as exc:
                        log.error("volume %s: %s", volume.name, exc)
                try:
                    await self.supervisor.stop(volume.id)
                except GalleonError as exc:
                    log.error("volume %s: %s", volume.name, exc)

