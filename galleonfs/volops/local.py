"""``EngineOps``: every volume operation, once, against an open engine.

Both ends of ``VolumeOps`` end here: the mount worker runs a request on the engine it
serves, the offline helper on the engine it opened for the occasion. What differs between
the two is a ``Host``: this module's base class is the unmounted volume in a helper (no
event loop, nothing in the kernel to flush, commits synchronous); the worker's subclass
(``fuse/worker.py``) flushes the kernel's dirty pages before a snapshot, commits through its
group committer, invalidates the adapter's view of a changed snapshot, lets FUSE requests
through between the chunks of long work, and enforces QoS rates.

Adding an operation: a request and reply in ``messages.py``, one ``@handles`` method here.

Concurrency: in the worker every handler runs on its trio thread, so the code between two
``await``s is atomic with respect to FUSE requests (the engine is synchronous on purpose).

What it must not do: catch what it does not understand. A ``GalleonError`` is the answer;
anything else is a bug and ends the process that runs it (DESIGN §5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from .. import limits
from ..engine import clones, export, rekey, snapshots
from ..engine.engine import Engine
from ..errors import Busy, FailedPrecondition, InvalidArgument
from ..meta.schema import Snapshot
from ..qos.policy import WorkerRates
from . import messages as m
from .protocol import Progress

R = TypeVar("R")
Q = TypeVar("Q", bound=m.VolumeRequest[Any])

_Handler = Callable[["EngineOps", Any, Progress], Awaitable[Any]]
_HANDLERS: dict[type[m.VolumeRequest[Any]], _Handler] = {}


_Method = Callable[["EngineOps", Q, Progress], Awaitable[R]]


def handles(kind: type[Q]) -> Callable[[_Method[Q, R]], _Method[Q, R]]:
    """Register the handler of one request class (one per class: a second is a bug)."""
    def register(fn: _Method[Q, R]) -> _Method[Q, R]:
        assert kind not in _HANDLERS, f"two handlers for {kind.__name__}"
        _HANDLERS[kind] = fn
        return fn
    return register


class Host:
    """What differs when the volume is mounted; as is, the unmounted volume in a helper."""

    mounted = False
    pid = 0
    mountpoint = ""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def flush_kernel(self) -> None:
        """Put what the kernel still holds for the volume (dirty pages) into the engine."""

    async def commit(self) -> None:
        self.engine.commit()

    async def quiesce(self) -> None:
        """Wait until no commit is in flight (before copying the volume's metadata)."""

    async def checkpoint(self) -> None:
        self.engine.checkpoint()

    async def pause(self) -> None:
        """Between two chunks of long work (where a worker serves FUSE requests)."""

    def snapshots_changed(self, name: str) -> None:
        """Snapshot ``name`` was created, deleted or cloned (a worker's views change)."""

    def counters(self) -> dict[str, int]:
        """Counters beyond the engine's (a worker's QoS counters)."""
        return {}

    def fuse_errors(self) -> dict[str, int]:
        return {}

    def commits(self) -> int:
        return 0

    def rates(self) -> dict[str, float]:
        return {}

    def set_qos(self, rates: WorkerRates) -> m.QosState:
        raise FailedPrecondition("QoS rates are enforced by a volume's mount worker, and this "
                                 "volume is not mounted")

    def primary_term(self, epoch: int, deadline: float) -> m.Fencing:
        raise FailedPrecondition("a primary term is served by a volume's mount worker, and this "
                                 "volume is not mounted")

    def refuse_mounted(self, what: str) -> None:
        """Operations that need the volume to themselves (nothing serves it meanwhile)."""
        if self.mounted:
            raise Busy(f"the volume is mounted; unmount it before {what}")


class EngineOps:
    """The one implementation of ``VolumeOps``, on ``engine``, in ``host``'s setting."""

    def __init__(self, engine: Engine, host: Host) -> None:
        self.engine = engine
        self.host = host

    async def run(self, request: m.VolumeRequest[R], progress: Progress | None = None) -> R:
        handler = _HANDLERS[type(request)]       # every request class has one (asserted below)
        return cast(R, await handler(self, request, progress or _no_progress))

    # --- the volume ----------------------------------------------------------------------------
    @handles(m.Ping)
    async def ping(self, request: m.Ping, progress: Progress) -> m.WorkerInfo:
        return m.WorkerInfo(self.host.pid, self.engine.volume_id, self.host.mountpoint)

    @handles(m.Stats)
    async def stats(self, request: m.Stats, progress: Progress) -> m.VolumeStats:
        engine, host = self.engine, self.host
        return m.VolumeStats(
            size=engine.size, used_bytes=engine.used_bytes,
            inodes_used=engine.sb.inode_count, inodes_total=limits.inodes_max(engine.size),
            generation=engine.generation, failsafe=engine.failsafe or engine.needs_check() or "",
            read_only=host.mounted and engine.read_only, mounted=host.mounted, pid=host.pid,
            counters={**{k: int(v) for k, v in engine.counters.items()}, **host.counters()},
            fuse_errors=host.fuse_errors(), commits=host.commits(), rates=host.rates(),
            space=self._space())

    @handles(m.Space)
    async def space(self, request: m.Space, progress: Progress) -> m.SpaceState:
        return self._space()

    def _space(self) -> m.SpaceState:
        state = self.engine.space.state()
        return m.SpaceState(full=str(state["full"] or ""), reserve_released=bool(state["reserve_released"]),
                            enospc_total=int(state["enospc_total"]), last_enospc=float(state["last_enospc"]),
                            disk=str(state["disk"]), free_bytes=int(state["free_bytes"]))

    @handles(m.Resize)
    async def resize(self, request: m.Resize, progress: Progress) -> m.Resized:
        self.engine.resize(request.size)          # refuses a shrink, in one sentence
        await self.host.commit()
        return m.Resized(request.size)

    @handles(m.Commit)
    async def commit(self, request: m.Commit, progress: Progress) -> m.Committed:
        await self.host.commit()
        return m.Committed(self.engine.durable_lsn)

    @handles(m.Checkpoint)
    async def checkpoint(self, request: m.Checkpoint, progress: Progress) -> m.Checkpointed:
        await self.host.checkpoint()
        return m.Checkpointed(self.engine.sb.applied_lsn)

    @handles(m.Describe)
    async def describe(self, request: m.Describe, progress: Progress) -> m.Description:
        engine = self.engine
        origin = clones.origin_of(engine)
        return m.Description(
            volume_id=engine.volume_id, name=engine.name, size=engine.size, block_size=engine.block_size,
            encrypted=engine.crypto is not None, created_ns=engine.sb.created_ns,
            origin_volume_dir=origin.volume_dir if origin else "",
            origin_snapshot=origin.snapshot if origin else "")

    @handles(m.SetQos)
    async def set_qos(self, request: m.SetQos, progress: Progress) -> m.QosState:
        rates = request.rates or WorkerRates()
        return self.host.set_qos(WorkerRates.from_json(rates.to_json()))   # checks every rate

    @handles(m.PrimaryTerm)
    async def primary_term(self, request: m.PrimaryTerm, progress: Progress) -> m.Fencing:
        if (type(request.epoch) is not int or isinstance(request.deadline, bool)
                or not isinstance(request.deadline, (int, float))
                or not math.isfinite(request.deadline) or request.deadline < 0):
            # NaN would compare false with every clock reading: a term that never ends.
            raise InvalidArgument("a primary term is a whole epoch and a finite monotonic deadline")
        return self.host.primary_term(request.epoch, float(request.deadline))

    # --- snapshots -----------------------------------------------------------------------------
    @handles(m.SnapshotCreate)
    async def snapshot_create(self, request: m.SnapshotCreate, progress: Progress) -> m.SnapshotInfo:
        """Snapshot what every returned write put in: what the kernel holds first (a worker
        serves the WRITEs that flushing causes meanwhile); the snapshot is then one atomic
        step of this thread."""
        snapshots.check_snapshot_name(request.name)
        await self.host.flush_kernel()
        snap = snapshots.create(self.engine, request.name)
        await self.host.commit()
        self.host.snapshots_changed(snap.name)
        return self._info(snap)

    @handles(m.SnapshotDelete)
    async def snapshot_delete(self, request: m.SnapshotDelete, progress: Progress) -> m.Freed:
        freed = snapshots.delete(self.engine, request.name)
        await self.host.commit()
        self.host.snapshots_changed(request.name)
        return m.Freed(freed)

    @handles(m.SnapshotList)
    async def snapshot_list(self, request: m.SnapshotList, progress: Progress) -> m.Snapshots:
        return m.Snapshots(tuple(self._info(s) for s in snapshots.snapshots(self.engine)))

    def _info(self, snap: Snapshot) -> m.SnapshotInfo:
        return m.SnapshotInfo(name=snap.name, id=snap.id, generation=snap.gen, created_ns=snap.created_ns,
                              logical_bytes=snap.used_bytes, inodes=snap.inodes,
                              freeable_bytes=snapshots.freed_by_delete(self.engine, snap),
                              holds=tuple(snap.holds))

    @handles(m.SnapshotDiff)
    async def snapshot_diff(self, request: m.SnapshotDiff, progress: Progress) -> m.Diff:
        changes = snapshots.diff(self.engine, request.old, request.new)
        return m.Diff(tuple(m.Change(**dataclasses.asdict(c)) for c in changes))

    @handles(m.SnapshotRelease)
    async def snapshot_release(self, request: m.SnapshotRelease, progress: Progress) -> m.Done:
        clones.release(self.engine, request.name, request.clone_id)
        await self.host.commit()
        return m.Done()

    @handles(m.SnapshotRestore)
    async def snapshot_restore(self, request: m.SnapshotRestore, progress: Progress) -> m.Restored:
        self.host.refuse_mounted("a restore")
        changed = snapshots.restore(self.engine, request.name)
        await self.host.commit()
        return m.Restored(changed)

    # --- clones --------------------------------------------------------------------------------
    @handles(m.Clone)
    async def clone(self, request: m.Clone, progress: Progress) -> m.Cloned:
        """Make a clone of one of this volume's snapshots (its tree is read here, where the
        engine is open). In a worker, FUSE requests wait for the copy of the metadata."""
        await self.host.quiesce()
        volume_id = clones.create(self.engine, request.snapshot, request.target_dir,
                                  clone_id=request.clone_id, name=request.name, size=request.size or None)
        self.host.snapshots_changed(request.snapshot)
        return m.Cloned(volume_id)

    @handles(m.Flatten)
    async def flatten(self, request: m.Flatten, progress: Progress) -> m.Flattened:
        origin = clones.origin_of(self.engine)
        if origin is None:
            raise FailedPrecondition("this volume is not a clone, or it was flattened already")
        copied = 0
        for done, total, copied_so_far in clones.flatten_steps(self.engine):
            copied = copied_so_far
            progress(done, total)
            await self.host.pause()
        await self.host.commit()
        return m.Flattened(origin.volume_id, origin.snapshot, copied)

    @handles(m.Rekey)
    async def rekey(self, request: m.Rekey, progress: Progress) -> m.Rekeyed:
        self.host.refuse_mounted("a rekey (online rekey is not supported yet)")
        return m.Rekeyed(rekey.run(self.engine, progress))

    # --- backups (the engine's side: ``engine/export.py``) --------------------------------------
    @handles(m.BackupExport)
    async def backup_export(self, request: m.BackupExport, progress: Progress) -> m.Exported:
        engine = self.engine
        gen, count, used = export.export_records(engine, request.snapshot, request.since, request.path)
        return m.Exported(gen, count, used, engine.size, engine.block_size, engine.crypto is not None)

    @handles(m.BackupBlocks)
    async def backup_blocks(self, request: m.BackupBlocks, progress: Progress) -> m.BlocksExported:
        count, size = export.export_blocks(self.engine, request.snapshot, request.ids_path, request.out_path)
        return m.BlocksExported(count, size)

    @handles(m.BackupLoad)
    async def backup_load(self, request: m.BackupLoad, progress: Progress) -> m.Loaded:
        self.host.refuse_mounted("a restore from a backup")
        stored = export.load(self.engine, request.records_path, request.blocks_path, request.known_path,
                             first=request.first)
        await self.host.commit()
        return m.Loaded(tuple(stored))


# A request without a handler would be a KeyError at run time: make it one at import.
_missing = [k.__name__ for k in m.REQUESTS.values() if issubclass(k, m.VolumeRequest) and k not in _HANDLERS]
assert not _missing, f"volume requests without a handler in EngineOps: {_missing}"


def run_to_completion(work: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine that never suspends (``EngineOps`` with the base ``Host``) without an
    event loop: the helper saves importing one (~45 ms of its ~0.17 s)."""
    try:
        work.send(None)
    except StopIteration as done:
        return cast(R, done.value)
    work.close()
    raise AssertionError("an offline volume operation waited for something")



def _no_progress(done: int, total: int) -> None:
    pass
