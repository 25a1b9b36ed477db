"""Snapshots, clones and snapshot policies as a managed service (the daemon's side).

Every operation runs where the volume's engine is (``VolumeManager.ops``, the typed
``volops`` interface): in the mount worker of a mounted volume, else in a helper process
that opens it for the occasion; the daemon never opens a volume itself. The per-volume
lock of the ``VolumeManager`` (``lock``) serialises them with mounts and deletes.

What lives here rather than in the engine: names of other volumes (a snapshot's clones
are volumes of the catalog), mount points (restore remounts; a snapshot can be mounted on
its own), and the schedule of policies.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any

import trio

from .. import names
from ..errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    GalleonError,
    InvalidArgument,
    NotFound,
)
from ..meta.catalog import Catalog
from ..volops.messages import (
    Change,
    Clone,
    Flatten,
    SnapshotCreate,
    SnapshotDelete,
    SnapshotDiff,
    SnapshotInfo,
    SnapshotList,
    SnapshotRestore,
)
from ..workers import mounts
from . import tenancy
from .model import (
    MountPoint,
    SnapshotPolicy,
    Volume,
    VolumeState,
    VolumeType,
    check_labels,
    check_name,
    now_ns,
)
from .volumes import VolumeManager

log = logging.getLogger(__name__)


def check_snapshot_name(name: str) -> str:
    """A snapshot's name becomes a directory name under ``.snapshots/``: one plain name."""
    return names.check(name, names.SNAPSHOT)


@dataclass(frozen=True)
class SnapshotView:
    """A snapshot as the API shows it: the engine's record, and the catalog's names."""

    info: SnapshotInfo
    volume: str
    volume_id: str
    clones: tuple[str, ...]          # names of the volumes cloned from it

    @property
    def name(self) -> str:
        return self.info.name

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.info), "volume": self.volume, "volume_id": self.volume_id,
                "clones": list(self.clones)}


class SnapshotManager:
    def __init__(self, volumes: VolumeManager, catalog: Catalog) -> None:
        self.volumes = volumes
        self.catalog = catalog

    def _lock(self, volume: Volume) -> trio.Lock:
        return self.volumes.lock(volume)

    def _view(self, volume: Volume, info: SnapshotInfo) -> SnapshotView:
        clones = self.volumes.clones_of(volume.id, info.name)
        return SnapshotView(info, volume.name, volume.id, tuple(sorted(c.name for c in clones)))

    # --- snapshots -----------------------------------------------------------------------------
    async def create(self, volume_name: str, name: str) -> SnapshotView:
        check_snapshot_name(name)
        volume = self.volumes.get(volume_name)
        async with self._lock(volume):
            volume = self.volumes.get(volume.id)
            self._check_state(volume)
            info = await self.volumes.ops(volume).run(SnapshotCreate(name))
        log.info("volume %s: snapshot %s created", volume.name, name)
        return self._view(volume, info)

    def _check_state(self, volume: Volume) -> None:
        if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
            raise FailedPrecondition(f"volume {volume.name} is {volume.state.value}; try again later")

    async def list(self, volume_name: str = "") -> builtins.list[SnapshotView]:
        volumes = [self.volumes.get(volume_name)] if volume_name else self.volumes.list()
        out = []
        for volume in volumes:
            if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
                continue
            async with self._lock(volume):
                reply = await self.volumes.ops(volume).run(SnapshotList())
            out += [self._view(volume, s) for s in reply.snapshots]
        return out

    async def get(self, volume_name: str, name: str) -> SnapshotView:
        for view in await self.list(volume_name):
            if view.name == name:
                return view
        raise NotFound(f"volume {volume_name} has no snapshot {name!r} (see `galleonctl snapshot list {volume_name}`)")

    async def delete(self, volume_name: str, name: str) -> int:
        check_snapshot_name(name)
        volume = self.volumes.get(volume_name)
        async with self._lock(volume):
            volume = self.volumes.get(volume.id)
            dependants = self.volumes.clones_of(volume.id, name)
            if dependants:
                raise Busy(f"snapshot {volume.name}@{name} has dependent clones "
                           f"({', '.join(sorted(c.name for c in dependants))}); flatten or delete them first")
            mounted = [m.path for m in volume.mount_points if m.snapshot == name]
            if mounted:
                raise Busy(f"snapshot {volume.name}@{name} is mounted on {', '.join(mounted)}; unmount it first")
            freed = (await self.volumes.ops(volume).run(SnapshotDelete(name))).freed_bytes
        log.info("volume %s: snapshot %s deleted, %d bytes freed", volume.name, name, freed)
        return freed

    async def diff(self, volume_name: str, old: str, new: str | None) -> builtins.list[Change]:
        check_snapshot_name(old)
        if new is not None:
            check_snapshot_name(new)
        volume = self.volumes.get(volume_name)
        async with self._lock(volume):
            reply = await self.volumes.ops(volume).run(SnapshotDiff(old, new))
        return list(reply.changes)

    # --- restore -------------------------------------------------------------------------------
    async def restore(self, volume_name: str, name: str, *, force: bool = False) -> Volume:
        check_snapshot_name(name)
        volume = self.volumes.get(volume_name)
        async with self._lock(volume):
            volume = self.volumes.get(volume.id)
            self._check_state(volume)
            points = list(volume.mount_points)
            if points and not force:
                raise FailedPrecondition(
                    f"volume {volume.name} is mounted on {', '.join(m.path for m in points)}; "
                    f"unmount it first, or use --force to unmount, restore and mount it again")
            for point in points:
                await mounts.unbind(point)
            await self.volumes.supervisor.stop(volume.id)
            try:
                changed = (await self.volumes.offline_ops(volume).run(SnapshotRestore(name))).changed
            finally:
                if points:
                    await self._remount(volume, points)
        log.info("volume %s restored to snapshot %s (%d records)", volume.name, name, changed)
        return self.volumes.get(volume.id)

    async def _remount(self, volume: Volume, points: builtins.list[MountPoint]) -> None:
        worker = await self.volumes.start_worker(volume)
        await self.volumes.rebind(volume, worker.staging)   # records the new mounts' ids

    # --- mount one snapshot --------------------------------------------------------------------
    async def mount(self, volume_name: str, name: str, path: str) -> Volume:
        check_snapshot_name(name)
        volume = self.volumes.get(volume_name)
        path = os.path.abspath(path)
        async with self._lock(volume):
            volume = self.volumes.get(volume.id)
            self._check_state(volume)
            check_snapshot_name(name)      # one plain name: never '', '..' or a path
            with await trio.to_thread.run_sync(mounts.open_target, path, self.volumes.mount_roots) as target:
                started = volume.id not in self.volumes.supervisor.workers
                worker = self.volumes.supervisor.workers.get(volume.id) or await self.volumes.start_worker(volume)
                try:
                    # Resolved inside the worker's mount by fd: no symlink, no '..', no other mount.
                    placed = await mounts.bind(worker.staging, target, read_only=True, snapshot=name)
                except GalleonError as exc:
                    if started:
                        await self.volumes.supervisor.stop(volume.id)
                    if isinstance(exc, NotFound):
                        raise NotFound(f"volume {volume.name} has no snapshot {name!r}") from None
                    raise
            path = placed.path
            volume.mount_points.append(MountPoint(path, True, now_ns(), snapshot=name, mount_id=placed.mount_id,
                                                  mount_unique_id=placed.unique_id))
            if volume.state != VolumeState.MOUNTED:
                volume.move_to(VolumeState.MOUNTED)
            self.volumes.save(volume)
        log.info("mounted snapshot %s@%s on %s", volume.name, name, path)
        return volume

    # --- clones --------------------------------------------------------------------------------
    async def clone(self, volume_name: str, snapshot: str, new_name: str, *, size: int = 0,
                    labels: dict[str, str] | None = None) -> Volume:
        check_name(new_name)
        check_snapshot_name(snapshot)
        labels = check_labels(labels or {})
        source = self.volumes.get(volume_name)
        if self.catalog.volume_id(new_name) is not None:
            raise AlreadyExists(f"a volume named {new_name!r} already exists")
        async with self._lock(source):
            source = self.volumes.get(source.id)
            self._check_state(source)
            self.volumes.check_capacity(f"create the clone {new_name}", size or source.size)
            if size and size < 0:
                raise InvalidArgument("a clone needs a positive size")
            # A clone belongs to its origin's tenant (and counts against its quota).
            tenancy.admit(self.catalog, storage_class=source.storage_class, size=size or source.size)
            clone = Volume(id=str(uuid.uuid4()), name=new_name, size=size or source.size,
                           storage_class=source.storage_class, type=VolumeType.PERSISTENT,
                           access_modes=list(source.access_modes), labels=labels,
                           block_size=source.block_size, origin_volume=source.id, origin_snapshot=snapshot,
                           tenant=source.tenant)
            self.volumes.save(clone)
            target = self.volumes.volume_dir(clone.id)
            try:
                await self.volumes.ops(source).run(Clone(snapshot, target, clone.id, new_name, clone.size))
            except BaseException:
                # Whatever stopped it, no half-made clone stays behind (and it propagates).
                shutil.rmtree(target, ignore_errors=True)
                self.catalog.delete_volume(clone.id)
                raise
            clone.move_to(VolumeState.AVAILABLE)
            self.volumes.save(clone)
        log.info("volume %s cloned from %s@%s", new_name, source.name, snapshot)
        return clone

    async def flatten(self, name: str) -> Volume:
        clone = self.volumes.get(name)
        if not clone.origin_volume:
            raise FailedPrecondition(f"volume {clone.name} is not a clone (or was flattened already)")
        async with self._lock(clone):
            clone = self.volumes.get(clone.id)
            reply = await self.volumes.ops(clone).run(Flatten())
            flattened = Volume.from_json(clone.to_json())
            clone.origin_volume = clone.origin_snapshot = ""
            self.volumes.save(clone)
        await self.volumes.release_origin(flattened)
        log.info("volume %s flattened (%d bytes copied)", clone.name, reply.copied_bytes)
        return clone


class PolicyManager:
    """Snapshot policies and their scheduler, a task of the daemon's trio loop."""

    TICK_MAX_S = 30.0        # look again at least this often (policies change)
    TICK_MIN_S = 0.2

    def __init__(self, catalog: Catalog, volumes: VolumeManager, snapshots: SnapshotManager) -> None:
        self.catalog = catalog
        self.volumes = volumes
        self.snapshots = snapshots
        self._changed = trio.Event()

    def get(self, name: str) -> SnapshotPolicy:
        data = self.catalog.policy(name)
        if data is None:
            raise NotFound(f"snapshot policy {name!r} does not exist")
        return SnapshotPolicy.from_json(data)

    def list(self) -> list[SnapshotPolicy]:
        return sorted((SnapshotPolicy.from_json(p) for p in self.catalog.policies()), key=lambda p: p.name)

    def create(self, policy: SnapshotPolicy) -> SnapshotPolicy:
        policy.validate()
        if self.catalog.policy(policy.name) is not None:
            raise AlreadyExists(f"snapshot policy {policy.name!r} already exists")
        policy.created_ns = now_ns()
        policy.last_run_ns = 0
        self.catalog.put_policy(policy.to_json())
        self._changed.set()
        return policy

    def delete(self, name: str) -> None:
        self.get(name)
        self.catalog.delete_policy(name)
        self._changed.set()

    def next_run_ns(self, policy: SnapshotPolicy) -> int:
        return policy.next_run_ns(max(policy.last_run_ns, policy.created_ns))

    async def run(self) -> None:
        """Take snapshots when they are due; runs until cancelled."""
        while True:
            now = time.time_ns()
            waits = []
            for policy in self.list():
                due = self.next_run_ns(policy)
                if due <= now:
                    await self._run(policy)
                    due = self.next_run_ns(self.get(policy.name)) if self.catalog.policy(policy.name) else now
                waits.append((due - time.time_ns()) / 1e9)
            self._changed = trio.Event()
            with trio.move_on_after(max(self.TICK_MIN_S, min([self.TICK_MAX_S, *waits]))):
                await self._changed.wait()

    async def _run(self, policy: SnapshotPolicy) -> None:
        errors = []
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for volume in self.volumes.list(policy.selector):
            if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
                continue
            try:
                await self._snapshot_and_expire(policy, volume, f"{policy.name}-{stamp}")
            except GalleonError as exc:
                errors.append(f"{volume.name}: {exc}")
                log.error("snapshot policy %s, volume %s: %s", policy.name, volume.name, exc)
        data = self.catalog.policy(policy.name)
        if data is not None:                       # deleted meanwhile: nothing to record
            current = SnapshotPolicy.from_json(data)
            current.last_run_ns = time.time_ns()
            current.last_error = "; ".join(errors)
            self.catalog.put_policy(current.to_json())

    async def _snapshot_and_expire(self, policy: SnapshotPolicy, volume: Volume, name: str) -> None:
        existing = {s.name for s in await self.snapshots.list(volume.name)}
        unique, n = name, 2
        while unique in existing:
            unique, n = f"{name}-{n}", n + 1
        await self.snapshots.create(volume.name, unique)
        own = sorted((s for s in await self.snapshots.list(volume.name) if s.name.startswith(policy.name + "-")),
                     key=lambda s: (s.info.created_ns, s.name))
        for old in own[:-policy.retention]:
            if old.clones:
                log.info("snapshot policy %s keeps %s@%s past retention: clones depend on it",
                         policy.name, volume.name, old.name)
                continue
            await self.snapshots.delete(volume.name, old.name)
