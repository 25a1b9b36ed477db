"""A volume's primary lease and epoch in etcd (DESIGN §4: fencing a deposed primary).

``acquire_primary`` makes a node the volume's primary in one etcd transaction: if no
primary key exists and the epoch key is unchanged since it was read, it writes epoch+1 and
the primary key (on a fresh lease of ``limits.primary_lease_ttl_s``). Two contenders: one
transaction wins, the other sees its compare fail and gets ``Busy`` naming the winner. The
epoch is never reset (deleting the primary key leaves it), so every primary has a higher
epoch than every primary before it; replicas will refuse records of a lower epoch.

Fencing. etcd counts a lease's TTL from when it grants or renews it; the holder counts from
when it *sent* that request (earlier), so its own deadline falls first even with zero clock
error. On top, ``limits.clock_bound_s`` (2 s) covers clock rate error and stalls of the
renewing task. The holder must stop acknowledging writes at ``fence_deadline``: the send
time of its last successful renewal + TTL - clock bound (10 - 2 = 8 s by default). etcd
deletes the primary key TTL after its last renewal, and only then can another node win,
so the old primary has stopped at least 2 s earlier.

What it must not do: decide to fence a mount itself (``hold`` calls the caller's
``on_fence``); retry a transaction that lost (losing is an answer, not an error).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from ..errors import Busy, FailedPrecondition, GalleonError
from . import keys, limits
from .etcd import Compare, Etcd, Put

log = logging.getLogger("galleonfs.cluster.epochs")


@dataclass
class PrimaryLease:
    volume: str
    node: str
    epoch: int
    lease: int                    # etcd lease id
    ttl_s: int
    clock_bound_s: float
    renewed_at: float             # monotonic time the last successful grant/renewal was *sent*

    @property
    def fence_deadline(self) -> float:
        """Monotonic time after which this primary must not acknowledge writes."""
        return self.renewed_at + self.ttl_s - self.clock_bound_s

    def fenced(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.fence_deadline


def current_epoch(etcd: Etcd, volume: str) -> int:
    kv = etcd.get(keys.volume(volume, "epoch"))
    return int(kv.value.get("epoch", 0)) if kv else 0


def primary_of(etcd: Etcd, volume: str) -> tuple[str, int] | None:
    """(node, epoch) of the volume's live primary, None when its lease is gone."""
    kv = etcd.get(keys.volume(volume, "primary"))
    return (str(kv.value.get("node", "")), int(kv.value.get("epoch", 0))) if kv else None


def held_elsewhere(volume: str, holder: tuple[str, int], ttl_s: int = limits.primary_lease_ttl_s) -> Busy:
    """The one-line refusal of a read-write mount while another node's lease lives."""
    return Busy(f"volume {volume} has a primary on node {holder[0]} (epoch {holder[1]}) while its "
                f"lease lives; unmount it there, or wait up to {ttl_s} s if that node is down")


def acquire_primary(etcd: Etcd, volume: str, node: str, *,
                    ttl_s: int = limits.primary_lease_ttl_s,
                    clock_bound_s: float = limits.clock_bound_s) -> PrimaryLease:
    """Make ``node`` the volume's primary with epoch+1, or ``Busy`` if another holds it."""
    assert 0 < clock_bound_s < ttl_s, (clock_bound_s, ttl_s)
    epoch_key, primary_key = keys.volume(volume, "epoch"), keys.volume(volume, "primary")
    sent = time.monotonic()           # before the grant: etcd's TTL starts later than ours
    lease = etcd.grant(ttl_s)
    try:
        kv = etcd.get(epoch_key)
        epoch = (int(kv.value.get("epoch", 0)) if kv else 0) + 1
        won = etcd.txn(
            [Compare.absent(primary_key), Compare.unchanged(kv) if kv else Compare.absent(epoch_key)],
            [Put(epoch_key, {"epoch": epoch, "node": node}),
             Put(primary_key, {"node": node, "epoch": epoch}, lease=lease)])
    except BaseException:
        _revoke_quietly(etcd, lease)
        raise
    if not won:
        _revoke_quietly(etcd, lease)
        holder = primary_of(etcd, volume)
        if holder is None:        # the other one's epoch bump went through, its lease not yet
            raise Busy(f"volume {volume}'s primary is changing right now; try again")
        raise held_elsewhere(volume, holder, ttl_s)
    log.info("node %s is primary of volume %s at epoch %d", node, volume, epoch)
    return PrimaryLease(volume, node, epoch, lease, ttl_s, clock_bound_s, sent)


def renew(etcd: Etcd, held: PrimaryLease) -> None:
    """Renew the primary lease; ``FailedPrecondition`` when etcd let it expire (the volume
    may have a new primary: this one must stay fenced)."""
    sent = time.monotonic()
    if etcd.keepalive(held.lease) <= 0:
        raise FailedPrecondition(f"node {held.node} lost the primary lease of volume {held.volume} "
                                 f"(epoch {held.epoch}): it expired in etcd; remount to take it again")
    held.renewed_at = sent


def release(etcd: Etcd, held: PrimaryLease) -> None:
    """Give the primary role up (a clean unmount): revoking the lease deletes the key."""
    etcd.revoke(held.lease)


async def hold(etcd: Etcd, held: PrimaryLease, on_fence: Callable[[str], None], *,
               interval_s: float | None = None,
               on_renew: Callable[[PrimaryLease], Awaitable[None]] | None = None) -> None:
    """Renew every third of the TTL until cancelled. When the fence deadline passes without
    a successful renewal (etcd down, partitioned, slow), call ``on_fence(reason)`` once and
    return: the caller stops acknowledging writes. A renewal still in flight at the deadline
    is abandoned (its thread ends within the etcd timeout, unheard), so the fence is on time
    however slow etcd is. ``on_renew`` is awaited after each successful renewal (the mount
    path hands the new deadline to the worker there); what it raises ends the hold."""
    interval_s = held.ttl_s / 3 if interval_s is None else interval_s
    problem = ""
    while True:
        wake = min(time.monotonic() + interval_s, held.fence_deadline)
        await trio.sleep_until(_trio_time(wake))
        if held.fenced():
            reason = (f"volume {held.volume}: no primary lease renewal for "
                      f"{held.ttl_s - held.clock_bound_s:.0f} s ({problem or 'etcd too slow'}); fenced")
            log.error("%s", reason)
            on_fence(reason)
            return
        try:
            with trio.move_on_at(_trio_time(held.fence_deadline)):
                await trio.to_thread.run_sync(renew, etcd, held, abandon_on_cancel=True)
                problem = ""
            if on_renew is not None and not problem and not held.fenced():
                await on_renew(held)
        except FailedPrecondition as exc:
            log.error("%s", exc)
            on_fence(str(exc))
            return
        except GalleonError as exc:
            problem = str(exc)
            log.warning("cannot renew the primary lease of volume %s (fenced in %.1f s): %s",
                        held.volume, held.fence_deadline - time.monotonic(), exc)


def _trio_time(monotonic_s: float) -> float:
    """A ``time.monotonic`` instant on trio's clock (trio's is monotonic with an offset)."""
    return trio.current_time() + (monotonic_s - time.monotonic())


def _revoke_quietly(etcd: Etcd, lease: int) -> None:
    try:
        etcd.revoke(lease)
    except GalleonError as exc:       # it expires on its own within the TTL
        log.info("could not revoke lease %x (it expires on its own): %s", lease, exc)
