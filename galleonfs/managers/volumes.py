"""``VolumeManager``: volumes as a managed service on one node.

Owns the volume life cycle (create, mount, expand, unmount, delete) and keeps three things
in step: the catalog (the desired state, durable before a request is answered), the
mount workers (through the supervisor it is handed) and the mount points (bind mounts).
Split by concern: ``volume_base.VolumeCore`` (lookups, locks, where operations run),
``lifecycle.VolumeLifecycle`` (create, expand, delete, stats, keys), and this module
(mounts, and putting things right at start and when a worker dies).

Concurrency: every method runs on the daemon's trio thread. A per-volume lock serialises
operations on one volume across their ``await``s (a mount waits for its worker to come up;
a delete must not interleave with it); code between two ``await``s is atomic anyway.

Access modes: ReadWriteOnce allows one read-write mount point (plus read-only ones);
ReadOnlyMany allows only read-only mount points, and its worker opens the volume
read-only; ReadWriteMany allows several read-write mount points, all bind mounts of the
one worker's FUSE mount, so they see each other's writes at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import trio

from ..crypto.keys import KeySpec
from ..errors import Busy, FailedPrecondition, GalleonError, InvalidArgument, NotFound
from ..meta.catalog import Catalog
from ..workers import mounts
from ..workers.supervisor import MountWorker, Supervisor, mark_needs_check
from .lifecycle import VolumeLifecycle
from .model import AccessMode, MountPoint, Volume, VolumeState, VolumeType, now_ns
from .primaries import Primaries
from .storage_classes import StorageClassManager

log = logging.getLogger(__name__)

RESTARTS_MAX = 3        # a worker that dies this often in a row leaves its volume FAILED
# "In a row": each death less than this after the one before. A restart (check + mount) takes
# under a second (tests/node/test_restart.py), so a crash loop stays well inside the window,
# while a worker killed now and then (the OOM killer, an operator) never adds up to FAILED.
RESTART_WINDOW_S = 60.0


class VolumeManager(VolumeLifecycle):
    def __init__(self, data_dir: str, catalog: Catalog, classes: StorageClassManager,
                 supervisor: Supervisor, keys: KeySpec | None = None) -> None:
        super().__init__(data_dir, catalog, classes, supervisor, keys)
        self._restarts: dict[str, tuple[int, float]] = {}   # volume id -> (deaths in a row, last)
        # Cluster mode (issue 12): the primary lease of read-write mounts (``primaries.py``),
        # set by ``ClusterManager``; None on a single node, where nothing below changes.
        self.primary: Primaries | None = None
        supervisor.on_death(self._worker_died)

    async def start_worker(self, volume: Volume) -> MountWorker:
        """Start the volume's mount worker (read-only for a volume without writable modes)."""
        return await self.supervisor.start(volume.id, self.volume_dir(volume.id),
                                           read_only=self._worker_read_only(volume))

    # --- mount / unmount -----------------------------------------------------------------------
    async def mount(self, name: str, path: str, *, read_only: bool = False) -> Volume:
        # Cluster mode: the primary lease of a read-write mount (``primaries.py``).
        gate = None if read_only else self.primary
        try:
            volume = self.get(name)
        except NotFound:
            if gate is not None:
                await gate.not_here(name)       # on another node: say which
            raise
        path = os.path.abspath(path) if os.path.isabs(path) else path
        async with self.lock(volume):
            volume = self.get(volume.id)
            self._check_access(volume, read_only)
            if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
                raise FailedPrecondition(f"volume {volume.name} is {volume.state.value}; it cannot be mounted now")
            if gate is not None:
                await gate.check(volume)        # another node's live lease: nothing started
            # Pinned by fd until bound: nothing swapped in on the path can redirect the mount.
            with await trio.to_thread.run_sync(mounts.open_target, path, self.mount_roots) as target:
                worker = self.supervisor.workers.get(volume.id)
                fresh = worker is None
                if worker is None:
                    try:
                        worker = await self.start_worker(volume)
                    except GalleonError as exc:
                        raise type(exc)(f"cannot mount volume {volume.name}: {exc}") from None
                    self._restarts.pop(volume.id, None)     # a mount asked for: a fresh start
                try:
                    if gate is not None:        # the lease and a deadline before anyone can write
                        await gate.serve(volume, worker, fresh=fresh)
                    placed = await mounts.bind(worker.staging, target, read_only=read_only)
                except GalleonError:
                    if not volume.mount_points:
                        await self.supervisor.stop(volume.id)
                        await self._release_primary(volume)
                    raise
            path = placed.path
            volume.mount_points.append(MountPoint(path, read_only, now_ns(), mount_id=placed.mount_id,
                                                  mount_unique_id=placed.unique_id))
            if volume.state != VolumeState.MOUNTED:
                volume.move_to(VolumeState.MOUNTED)
            self.save(volume)
        log.info("mounted volume %s on %s%s", volume.name, path, " (read-only)" if read_only else "")
        return volume

    async def _release_primary(self, volume: Volume) -> None:
        """Cluster mode: the volume's worker stopped, so its primary lease goes."""
        if self.primary is not None:
            await self.primary.release(volume)

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
        volume = self.by_mount_point(path) if path else self.get(name)
        async with self.lock(volume):
            volume = self.get(volume.id)
            targets = [volume.mount_point(self.recorded_path(path))] if path else list(volume.mount_points)
            if not targets or targets == [None]:
                raise FailedPrecondition(f"volume {volume.name} is not mounted")
            for point in targets:
                assert point is not None
                await mounts.unbind(point, lazy=lazy)
                volume.mount_points.remove(point)
                self.save(volume)
            if not volume.mount_points:
                await self.supervisor.stop(volume.id)
                await self._release_primary(volume)
                volume.move_to(VolumeState.AVAILABLE)
                self.save(volume)
        log.info("unmounted volume %s from %s", volume.name, ", ".join(p.path for p in targets if p))
        if not volume.mount_points and volume.type == VolumeType.EPHEMERAL:
            log.info("volume %s is ephemeral and has no mount left: deleting it", volume.name)
            await self.delete(volume.id)
            volume.move_to(VolumeState.DELETING)
        return volume

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
                self.save(volume)
            if volume.mount_points:
                async with self.lock(volume):
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
                async with self.lock(volume):
                    await trio.to_thread.run_sync(shutil.rmtree, self.volume_dir(volume.id), True)
                    self.catalog.delete_volume(volume.id)
                if volume.origin_volume:
                    await self.release_origin(volume)
            else:
                log.warning("volume %s: the last daemon stopped while deleting it; finishing the delete",
                            volume.name)
                await self.delete(volume.id, force=True)
        except (GalleonError, OSError) as exc:
            self.fail(volume, f"the daemon stopped while it was {state.value}, and finishing that "
                               f"failed: {exc}")

    async def _restore_mounts(self, volume: Volume, *, at_start: bool) -> None:
        """Adopt or start the volume's worker, and bind every mount point that is not bound."""
        worker = await self.supervisor.adopt(volume.id, self.volume_dir(volume.id),
                                             read_only=self._worker_read_only(volume))
        fresh = worker is None
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
                worker = await self.start_worker(volume)
            except GalleonError as exc:
                self.fail(volume, f"cannot restart its mount worker: {exc}")
                return
        if self.primary is not None and any(not p.read_only for p in volume.mount_points):
            served = await self._serve_primary(volume, worker, fresh=fresh)
            if served is None:
                return
            worker = served
        await self.rebind(volume, worker.staging)
        if volume.state != VolumeState.MOUNTED:
            volume.state = VolumeState.MOUNTED
            self.save(volume)

    async def _serve_primary(self, volume: Volume, worker: MountWorker, *, fresh: bool) -> MountWorker | None:
        """Cluster mode, restoring mounts: the primary lease for ``worker``. An adopted worker
        that fenced itself while the daemon was down (its deadline ran out) is replaced by a
        new one under a new term, as a worker that died is: its open files end, new opens
        are served. None when there is no lease to be had (the volume is then FAILED)."""
        assert self.primary is not None
        try:
            await self.primary.serve(volume, worker, fresh=fresh)
            return worker
        except GalleonError as exc:
            problem: GalleonError = exc
        if not fresh and self.primary.fenced(volume.id):
            log.warning("volume %s: its mount worker fenced itself while the daemon was away; "
                        "starting a new one under a new primary term", volume.name)
            for point in volume.mount_points:
                try:
                    await mounts.unbind(point, lazy=True)
                except GalleonError as exc:
                    log.error("volume %s: %s", volume.name, exc)
            try:
                await self.supervisor.stop(volume.id)
                worker = await self.start_worker(volume)
                fresh = True
                await self.primary.serve(volume, worker, fresh=True)
                return worker
            except GalleonError as exc:
                problem = exc
        # No lease, no writes: the mount points stay unbound (or, adopted, fenced).
        if fresh:
            await self.supervisor.stop(volume.id)
        self.fail(volume, f"cannot take its primary lease again: {problem}")
        return None

    async def rebind(self, volume: Volume, staging: str) -> None:
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
                self.save(volume)

    def _fail(self, volume: Volume, message: str) -> None:
        log.error("volume %s failed: %s", volume.name, message)
        volume.state = VolumeState.FAILED
        volume.message = message
        self.save(volume)

    async def _worker_died(self, volume_id: str, reason: str) -> None:
        """The supervisor's callback: restart the worker and rebind, a bounded number of times."""
        data = self.catalog.volume(volume_id)
        if data is None:
            return
        now = trio.current_time()
        count, last = self._restarts.get(volume_id, (0, now))
        count = 1 if now - last > RESTART_WINDOW_S else count + 1
        self._restarts[volume_id] = (count, now)
        async with self.lock(Volume.from_json(data)):
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
                self.fail(volume, f"{reason}; gave up after {RESTARTS_MAX} restarts in a row")
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
            async with self.lock(volume):
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
                await self._release_primary(volume)

