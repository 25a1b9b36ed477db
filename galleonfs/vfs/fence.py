"""``Fence``: whether this mount may still acknowledge changes (cluster mode, issue 12).

In cluster mode the node holds the volume's primary lease in etcd and, after every renewal,
tells the mount worker until when it may acknowledge writes (``deadline``: a
``time.monotonic`` instant; CLOCK_MONOTONIC is one clock for every process on the host, so
the daemon's instant means the same here). Past the deadline, or once told the lease is lost,
every change (``Nodes.admit``) and every fsync fails with EIO, and stays failing until the
volume is unmounted and mounted again (a new primary term, epoch + 1). The worker fences
itself without the daemon: a daemon that is stopped, killed or cannot reach etcd stops
sending deadlines, and the last one runs out on its own.

Why EIO and not EROFS: with the kernel's writeback cache a ``write()`` lands in the page
cache, and the failure of the write-back reaches the application at ``fsync``/``close`` as
EIO whatever errno the worker gave; EIO for the requests the worker answers directly
(create, mkdir, unlink, setattr, fsync) makes every path say the same.

Reads go on: fencing is about not acknowledging what a new primary may not have.

What it must not do: make anything read-only in the engine (what was journaled before the
fence is still committed at unmount), or be consulted outside cluster mode, where
``deadline`` is None and ``check`` costs one attribute test.
"""

from __future__ import annotations

import logging
import time

from ..errors import FailedPrecondition, IOFailure

log = logging.getLogger(__name__)


class Fence:
    def __init__(self, label: str) -> None:
        self.label = label
        self.epoch = 0                       # the primary term the mount serves under (0: none)
        self.deadline: float | None = None   # monotonic; None: not in cluster mode
        self.reason = ""                     # why it is fenced; "" while it is not

    def check(self) -> None:
        """Admission of a change or an fsync: ``IOFailure`` (EIO) once fenced."""
        if self.deadline is None:
            return
        if not self.reason and time.monotonic() >= self.deadline:
            self.trip("no primary lease renewal arrived before the fence deadline")
        if self.reason:
            raise IOFailure(f"volume {self.label} is fenced ({self.reason}): it no longer holds its "
                            f"primary lease, so changes are refused; unmount it and mount it again")

    @property
    def fenced(self) -> bool:
        """For writes nobody asked for (atime, purging an orphan): skip them once fenced."""
        if self.deadline is None:
            return False
        if not self.reason and time.monotonic() >= self.deadline:
            self.trip("no primary lease renewal arrived before the fence deadline")
        return bool(self.reason)

    def trip(self, reason: str) -> None:
        if not self.reason:
            log.error("volume %s fenced at epoch %d: %s", self.label, self.epoch, reason)
            self.reason = reason

    def extend(self, epoch: int, deadline: float) -> None:
        """A new deadline from the node (after a renewal). ``deadline`` 0 fences now. A fenced
        mount stays fenced: a later term has a higher epoch, and this mount may have
        refused writes its application retried elsewhere; a remount starts clean."""
        if epoch <= 0:
            raise FailedPrecondition(subject=f"primary epoch {epoch}", state="is not a term",
                                     remedy="epochs start at 1")
        if self.deadline is not None and not self.reason and time.monotonic() >= self.deadline:
            self.trip("no primary lease renewal arrived before the fence deadline")
        if self.reason:
            raise FailedPrecondition(subject=f"volume {self.label}",
                                     state=f"is fenced since epoch {self.epoch} ({self.reason})",
                                     remedy="unmount it and mount it again to serve under a new epoch")
        if self.epoch and epoch < self.epoch:
            raise FailedPrecondition(subject=f"primary epoch {epoch}",
                                     state=f"is older than the mount's epoch {self.epoch}",
                                     remedy="a deposed primary must not extend this mount")
        self.epoch = epoch
        if deadline <= 0:
            self.deadline = 0.0
            self.trip(f"the node lost the primary lease of epoch {epoch}")
            return
        self.deadline = deadline
