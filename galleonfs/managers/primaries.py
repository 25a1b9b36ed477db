"""``Primaries``: the primary lease of each volume mounted read-write here (cluster mode).

The mount path (``volumes.py``) asks this gate, in order: ``check`` before it starts a
worker (another node's live lease refuses the mount, nothing started); ``serve`` once the
worker runs and before any mount point is bound (take the lease, epoch + 1, and hand the
worker its first fence deadline); ``release`` once the worker stopped (revoke the lease,
so another node may take it at once). ``not_here`` turns "no such volume" into the reason
when the volume lives on another node.

While held, one task per volume renews the lease (``cluster/epochs.hold``) and hands the
worker each new deadline (``PrimaryTerm``). When a renewal cannot happen in time the task
fences the worker (deadline 0) and revokes what it can; the worker also fences itself when
its last deadline runs out, so a stalled or killed daemon cannot leave it acknowledging.
A fenced mount stays fenced until its worker stops (unmount): the safe choice, because the
lease may have gone to another node meanwhile, and a fenced mount's application has already
seen EIO for writes that a remount cannot bring back.

Only volumes with a placement in etcd take a lease (created in cluster mode); volumes made
before the node joined stay local, as before. A read-only mount point takes no lease.

What it must not do: block the trio thread on etcd (every call runs in a worker thread),
or keep a lease for a worker that is gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from .. import names
from ..cluster import epochs, keys
from ..cluster import limits as cluster_limits
from ..cluster.epochs import PrimaryLease
from ..cluster.etcd import Etcd
from ..errors import Busy, FailedPrecondition, GalleonError, NotFound
from ..volops import online
from ..volops.messages import PrimaryTerm
from ..workers.supervisor import MountWorker, Supervisor
from . import tenancy
from .model import Volume

log = logging.getLogger(__name__)

# A daemon restarted after kill -9 finds its own previous lease on the primary key until
# etcd expires it (TTL after its last renewal): wait for that, a little longer than the TTL.
OWN_LEASE_WAIT_S = cluster_limits.primary_lease_ttl_s + 2.0
TERM_TIMEOUT_S = 2.0          # handing a deadline to a local worker: a unix socket round trip


@dataclass
class _Held:
    lease: PrimaryLease
    scope: trio.CancelScope


class Primaries:
    def __init__(self, etcd_url: str, node: str, supervisor: Supervisor) -> None:
        self.etcd = Etcd(etcd_url)
        self.node = node
        self.supervisor = supervisor
        self._held: dict[str, _Held] = {}        # volume id -> its lease and renewing task
        self._fenced: dict[str, str] = {}        # volume id -> why (until its worker stops)
        self._nursery: trio.Nursery | None = None
        self._ready = trio.Event()

    async def run(self) -> None:
        """The home of the renewing tasks, for the daemon's life."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

    # --- the mount path's gate ---------------------------------------------------------------
    async def not_here(self, name: str) -> None:
        """The volume is not on this node: say where it is, if the cluster knows."""
        if tenancy.current():
            return                          # another tenant's volume stays unmentioned
        names.check(name, names.VOLUME)
        try:
            holder, placement = await trio.to_thread.run_sync(
                lambda: (epochs.primary_of(self.etcd, name), self.etcd.get(keys.volume(name, "placement"))))
        except GalleonError as exc:         # etcd away: the plain "does not exist" is still true
            log.info("volume %s: not here, and etcd cannot say where: %s", name, exc)
            return
        if holder is not None and holder[0] != self.node:
            raise epochs.held_elsewhere(name, holder)
        if placement is not None:
            where = str(placement.value.get("primary", "")) or "another node"
            raise NotFound(f"volume {name!r} is not on this node: its data is on node {where} "
                           f"(replication is not built yet, so only that node can mount it)")

    async def check(self, volume: Volume) -> None:
        """Before a read-write mount starts anything: refuse while another node holds it."""
        if volume.id in self._held:
            return
        holder, placement = await trio.to_thread.run_sync(
            lambda: (epochs.primary_of(self.etcd, volume.name),
                     self.etcd.get(keys.volume(volume.name, "placement"))))
        if placement is None or placement.value.get("id") != volume.id:
            return                          # a local volume (``serve`` takes no lease for it)
        if holder is not None and holder[0] != self.node:
            raise epochs.held_elsewhere(volume.name, holder)

    async def serve(self, volume: Volume, worker: MountWorker, *, fresh: bool) -> None:
        """Hold the volume's lease and give ``worker`` its deadline. ``fresh``: the worker was
        just started (a fenced volume's new worker takes a new term, epoch + 1)."""
        await self._ready.wait()
        if volume.id in self._fenced:
            if not fresh:
                raise FailedPrecondition(
                    subject=f"volume {volume.name}",
                    state=f"is fenced ({self._fenced[volume.id]})",
                    remedy="unmount every mount point of it and mount it again")
            del self._fenced[volume.id]
        held = self._held.get(volume.id)
        taken = held is None
        if held is None:
            placement = await trio.to_thread.run_sync(self.etcd.get, keys.volume(volume.name, "placement"))
            if placement is None or placement.value.get("id") != volume.id:
                return      # made before this node joined (the name may be another's): local only
            lease = await self._acquire(volume.name)
            held = await self._start_hold(volume, lease)
        try:
            await self._term(worker, held.lease, held.lease.fence_deadline)
        except GalleonError as exc:
            if taken:
                await self.release(volume)
            if isinstance(exc, FailedPrecondition) and not fresh:
                self._fenced[volume.id] = str(exc)    # it fenced itself (see ``fenced``)
            raise

    def fenced(self, volume_id: str) -> bool:
        """The volume's worker is fenced: only a new worker serves it again."""
        return volume_id in self._fenced

    async def release(self, volume: Volume) -> None:
        """The volume's worker stopped: give the lease up (revoking deletes the primary key)."""
        self._fenced.pop(volume.id, None)
        held = self._held.pop(volume.id, None)
        if held is None:
            return
        held.scope.cancel()
        try:
            await trio.to_thread.run_sync(epochs.release, self.etcd, held.lease)
            log.info("volume %s: released the primary lease of epoch %d", volume.name, held.lease.epoch)
        except GalleonError as exc:
            log.warning("volume %s: could not release its primary lease (it expires within %d s): %s",
                        volume.name, held.lease.ttl_s, exc)

    # --- inside ----------------------------------------------------------------------------------
    async def _acquire(self, name: str) -> PrimaryLease:
        """Take the lease; while the key names this node (a previous life of this daemon, killed
        before it could release), wait for etcd to expire it."""
        give_up = time.monotonic() + OWN_LEASE_WAIT_S
        while True:
            try:
                return await trio.to_thread.run_sync(epochs.acquire_primary, self.etcd, name, self.node)
            except Busy:
                holder = await trio.to_thread.run_sync(epochs.primary_of, self.etcd, name)
                if (holder is not None and holder[0] != self.node) or time.monotonic() > give_up:
                    raise
                log.info("volume %s: waiting for this node's previous primary lease to expire", name)
                await trio.sleep(0.5)

    async def _start_hold(self, volume: Volume, lease: PrimaryLease) -> _Held:
        assert self._nursery is not None
        scope = trio.CancelScope()
        held = self._held[volume.id] = _Held(lease, scope)
        self._nursery.start_soon(self._hold, volume, held)
        return held

    async def _hold(self, volume: Volume, held: _Held) -> None:
        reasons: list[str] = []

        async def renewed(lease: PrimaryLease) -> None:
            worker = self.supervisor.workers.get(volume.id)
            if worker is None:
                return                      # restarting: its serve() hands the deadline over
            try:
                await self._term(worker, lease, lease.fence_deadline)
            except FailedPrecondition:
                raise                       # it fenced itself: so does the lease
            except GalleonError as exc:     # it fences itself if no deadline ever arrives
                log.warning("volume %s: could not hand the mount worker its new deadline: %s",
                            volume.name, exc)

        with held.scope:
            try:
                await epochs.hold(self.etcd, held.lease, reasons.append, on_renew=renewed)
            except Exception as exc:         # a bug here fences one volume, never the node
                log.exception("volume %s: holding its primary lease failed", volume.name)
                reasons.append(f"holding the lease failed: {exc}")
            # Fenced: the worker first (it may not have noticed yet), then the lease.
            self._fenced[volume.id] = reasons[0] if reasons else "lost its primary lease"
            if self._held.get(volume.id) is held:
                del self._held[volume.id]
            worker = self.supervisor.workers.get(volume.id)
            if worker is not None:
                try:
                    await self._term(worker, held.lease, 0.0)
                except GalleonError as exc:
                    log.info("volume %s: fencing its worker: %s (it fences itself at the deadline)",
                             volume.name, exc)
            with trio.move_on_after(cluster_limits.etcd_request_timeout_s):
                try:
                    await trio.to_thread.run_sync(epochs.release, self.etcd, held.lease,
                                                  abandon_on_cancel=True)
                except GalleonError as exc:
                    log.info("volume %s: the lost lease was not revoked (etcd expires it): %s",
                             volume.name, exc)

    async def _term(self, worker: MountWorker, lease: PrimaryLease, deadline: float) -> None:
        await online.call(self.supervisor.control_address(worker.volume_id),
                          PrimaryTerm(lease.epoch, deadline), timeout_s=TERM_TIMEOUT_S)
