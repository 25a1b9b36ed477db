"""``VolumeLifecycle``: create, expand, delete, stats and the keys of volumes.

The catalog is the desired state, durable before a request is answered: a create is saved
PROVISIONING before its directory exists and rolled back at the next start if the daemon
dies meanwhile (``volumes.VolumeManager.reconcile``); a delete is saved DELETING first and
finished at the next start.

What it must not do: open a volume here; its operations go through ``ops`` (its worker, or
a helper).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass

import trio

from .. import limits
from ..crypto import volume_key
from ..crypto.keys import PENDING, PREVIOUS, KeyFile
from ..engine.engine import Engine
from ..errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    GalleonError,
    InvalidArgument,
    Unimplemented,
)
from ..metrics import multiproc
from ..storage import Storage, disk_bytes
from ..volops.messages import Rekey, Resize, Stats, VolumeStats
from ..volops.protocol import Progress
from ..workers import mounts
from . import tenancy
from .model import (
    AccessMode,
    ReclaimPolicy,
    Volume,
    VolumeState,
    VolumeType,
    check_labels,
    check_name,
)
from .volume_base import VolumeCore

log = logging.getLogger("galleonfs.managers.volumes")


@dataclass(frozen=True)
class StatsView:
    volume: Volume
    stats: VolumeStats
    disk_bytes: int          # what the volume's directory takes on the host disk


class VolumeLifecycle(VolumeCore):
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
            self.save(volume)
            try:
                params = cls.parameters
                keys = (self.key_manager(needed_for=f"storage class {cls.name}")
                        if params.get("encryption", "none") != "none" else None)
                try:
                    await trio.to_thread.run_sync(lambda: Engine.create(
                        self.volume_dir(volume.id), size=size, block_size=volume.block_size, name=name,
                        keys=keys, compression=params.get("compression", "none"),
                        dedup=params.get("dedup", "on") == "on"))
                except OSError as exc:      # the host disk: full, read-only, failing
                    raise GalleonError(f"could not create volume {name}: {exc}") from exc
            except BaseException:
                # Whatever stopped it (a refused key, a full disk, a cancellation, a bug),
                # no half-made volume stays behind; a bug still propagates as itself.
                shutil.rmtree(self.volume_dir(volume.id), ignore_errors=True)
                self.catalog.delete_volume(volume.id)
                raise
            volume.move_to(VolumeState.AVAILABLE)
            self.save(volume)
        log.info("created volume %s (%s, %d bytes)", name, volume.id, size)
        return volume

    # --- expand --------------------------------------------------------------------------------
    async def expand(self, name: str, size: int) -> Volume:
        volume = self.get(name)
        async with self.lock(volume):
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
            self.save(volume)
            try:
                await self.ops(volume).run(Resize(size))
            except GalleonError:
                volume.move_to(back)
                self.save(volume)
                raise
            volume.size = size
            volume.move_to(back)
            self.save(volume)
        log.info("expanded volume %s to %d bytes", volume.name, size)
        return volume

    # --- delete --------------------------------------------------------------------------------
    async def delete(self, name: str, *, force: bool = False) -> tuple[str, str]:
        """Delete a volume; return ``(id, retained path or "")``."""
        volume = self.get(name)
        async with self.lock(volume):
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
            self.save(volume)
            retained = await self._remove_dir(volume)
            self.catalog.delete_volume(volume.id)
            multiproc.drop_volume(volume.id)          # its series leave /metrics
        self.forget_lock(volume)
        log.info("deleted volume %s (%s)%s", volume.name, volume.id, f", data kept in {retained}" if retained else "")
        if volume.origin_volume:
            await self.release_origin(volume)
        return volume.id, retained

    async def _remove_dir(self, volume: Volume) -> str:
        """Remove the volume's directory, or keep it aside (reclaim policy Retain): where."""
        cls = self.classes.find(volume.storage_class)
        source = self.volume_dir(volume.id)
        if cls is not None and cls.reclaim_policy == ReclaimPolicy.RETAIN:
            retained = os.path.join(self.data_dir, "retained", f"{volume.name}-{volume.id}")
            os.makedirs(os.path.dirname(retained), mode=0o700, exist_ok=True)
            await trio.to_thread.run_sync(shutil.move, source, retained)
            return retained
        await trio.to_thread.run_sync(shutil.rmtree, source, True)
        return ""

    # --- stats ---------------------------------------------------------------------------------
    async def stats(self, name: str) -> StatsView:
        volume = self.get(name)
        online = self.supervisor.ops(volume.id)
        if online is not None:
            stats = await online.run(Stats())
        else:
            async with self.lock(volume):
                stats = await self.offline_ops(volume).run(Stats())
                volume = self.revive(volume)
        used = await trio.to_thread.run_sync(disk_bytes, self.volume_dir(volume.id))
        return StatsView(volume, stats, used)

    # --- keys ----------------------------------------------------------------------------------
    async def rotate_key(self) -> tuple[int, str, str]:
        """Re-wrap every volume's keys under a new key file (the disk work on a thread).
        Returns ``(volumes re-wrapped, key file, previous key file)``."""
        path = self.keys.key_file
        if not path:
            source = ("a passphrase" if self.keys.passphrase_env else
                      "a key command (rotate the key in its KMS)" if self.keys.command else "no key source")
            raise FailedPrecondition(f"key rotate replaces the node's key file, and this node uses {source}; "
                                     f"configure key_file to rotate here")
        dirs = [self.volume_dir(v["id"]) for v in self.catalog.volumes()]
        count = await trio.to_thread.run_sync(_rotate, path, dirs)
        previous = path + PREVIOUS
        log.info("rotated the key-encryption key: %d volume(s) re-wrapped, previous key in %s", count, previous)
        return count, path, previous

    async def rekey(self, name: str, progress: Progress) -> int:
        """Rekey an unmounted volume (in a helper process); its new epoch. ``progress`` is
        called on the thread that waits for the helper."""
        volume = self.get(name)
        async with self.lock(volume):
            epoch = (await self.ops(self.get(volume.id)).run(Rekey(), progress)).epoch
        log.info("volume %s rekeyed: key epoch %d", volume.name, epoch)
        return epoch


def _rotate(path: str, dirs: list[str]) -> int:
    """The rotation's disk work (blocking): every volume re-wrapped under a new key file,
    which then takes the old one's place; the old one is kept as ``PREVIOUS``."""
    old = KeyFile(path, create=False)
    new = KeyFile(path + PENDING)       # reused if an earlier rotation stopped half-way
    count = volume_key.rotate(dirs, old, new)
    previous = path + PREVIOUS
    with contextlib.suppress(FileNotFoundError):
        os.unlink(previous)
    os.link(path, previous)             # never a moment without a key file at ``path``
    os.replace(path + PENDING, path)
    Storage().sync_dir(os.path.dirname(path))
    return count
