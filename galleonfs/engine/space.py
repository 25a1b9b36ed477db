"""``SpaceGuard``: what one volume does when the host disk under it fills up.

A full host disk is an errno, never a crash (issue 9). What holds, and what makes it hold:

1. **A write that needs space the disk does not have fails with ENOSPC and changes
   nothing.** Block frames are appended to a data segment before an operation changes any
   metadata; a failed append is cut back off (``Segments.append``) and the engine raises
   ``NoSpace``, which the FUSE adapter answers as ENOSPC.
2. **An operation that was admitted is journaled.** Every mutating operation starts with
   ``Engine.check_writable``, which makes sure the journal has
   ``limits.journal_headroom_min_bytes`` allocated ahead of its end
   (``JournalWriter.ensure_headroom``) *before* anything changes; the record that ends the
   operation is then written into blocks the file system already handed out. Where that
   cannot be had, the operation is refused with ENOSPC, untouched.
3. **Commit, checkpoint and unmount finish; nothing acknowledged is lost.** A commit only
   fdatasyncs what was written (no new space). A checkpoint commits the LMDB transaction,
   which needs new pages: if that fails, the transaction is rebuilt from the journal (which
   the checkpoint has just made durable) and tried once more after releasing the reserve;
   if it fails again it is *deferred*: the journal keeps every change, later checkpoints
   try again, unmount completes, and the next mount replays the journal.

**The reserve.** ``RESERVE`` in the volume directory, ``limits.volume_reserve_bytes``
allocated with ``fallocate`` whenever the volume is opened for writing. When a write that
must not fail (journal space, a checkpoint's LMDB commit, the needs-check marker) meets a
full disk, the reserve is released (truncated: its blocks go back to the file system) and
that write is tried again at once. Other processes on the same disk cannot be kept from
taking the space first, so the reserve makes those writes very likely to succeed; what
makes nothing get lost is 2. and the journal.

**Full mode.** From the first ENOSPC until space comes back (and always while the reserve is
released), writes that need new data space are refused up front with ENOSPC, so that what
is left goes to the journal, checkpoints and GC. Metadata operations go on while the
journal's allocated headroom lasts; unlink and truncate still work, and free space: GC
deletes emptied segments, compacts a mostly dead one only when the copy leaves room for
the checkpoint that frees it (``room_for``, which may release the reserve for that), and
the next checkpoint unlinks them. ``poll``, called by the mount worker every
``limits.space_poll_interval_s`` while full, leaves full mode once the reserve could be
allocated again and ``limits.space_resume_free_bytes`` are free besides: writing works
again without a remount.

Logging: one WARNING when the volume enters full mode, one when it releases its reserve,
one INFO when it leaves; each names the volume and the file system. Never a line per
refused write (an application retrying in a loop would fill the log, on the same disk).

What it must not do: write any file but ``RESERVE``, or decide what an operation is (the
engine and the VFS do).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

from .. import limits
from ..errors import NoSpace
from ..storage import fallocate, free_bytes, no_space

log = logging.getLogger(__name__)

RESERVE_FILE = "RESERVE"
_ZEROS_BYTES = 1024 * 1024      # write size when the file system cannot fallocate


def reserve_allocated(path: str, nbytes: int) -> bool:
    """Whether the reserve file ``path`` holds ``nbytes`` of allocated blocks."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_size >= nbytes and st.st_blocks * 512 >= nbytes


def allocate_reserve(path: str, nbytes: int) -> None:
    """Allocate the reserve file ``path`` (``OSError`` ENOSPC if the disk lacks the room);
    on failure nothing stays allocated: half a reserve only takes space others could use."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            if not fallocate(fd, 0, nbytes):
                zeros = bytes(_ZEROS_BYTES)
                for offset in range(0, nbytes, _ZEROS_BYTES):
                    os.pwrite(fd, zeros[:nbytes - offset], offset)
                os.fsync(fd)
        except OSError:
            os.ftruncate(fd, 0)
            raise
    finally:
        os.close(fd)


def release_reserve(path: str) -> None:
    """Give the reserve's blocks back to the file system (it stays, empty)."""
    os.truncate(path, 0)


def mount_point(path: str) -> str:
    """The mount point of the file system holding ``path`` (what an operator calls the disk)."""
    path = os.path.realpath(path)
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return path
    while path != "/":
        parent = os.path.dirname(path)
        try:
            if os.stat(parent).st_dev != dev:
                return path
        except OSError:
            return path
        path = parent
    return path


class SpaceGuard:
    """One volume's reserve and full mode (see the module docstring)."""

    def __init__(self, volume_dir: str, label: str, *, reserve_bytes: int = limits.volume_reserve_bytes) -> None:
        self.dir = volume_dir
        self.label = label                     # "volume NAME (DIR)" in messages
        self.path = os.path.join(volume_dir, RESERVE_FILE)
        self.reserve_bytes = reserve_bytes
        self.disk = mount_point(volume_dir)
        self.full = ""                         # why the volume is in full mode; "" when not
        self.reserve_released = False
        self.enospc_total = 0                  # requests answered ENOSPC for the host disk
        self.last_enospc = 0.0                 # time.time() of the last one (0: never)

    # --- the reserve ---------------------------------------------------------------------------
    def open(self) -> None:
        """The volume is opened for writing: make sure the reserve is allocated."""
        if reserve_allocated(self.path, self.reserve_bytes):
            return
        try:
            allocate_reserve(self.path, self.reserve_bytes)
        except OSError as exc:
            self.reserve_released = True
            if no_space(exc):
                self.enter_full("its reserve", exc)
            else:                               # the volume works without one, as before
                log.error("%s: cannot allocate the reserve %s: %s", self.label, self.path, exc)

    def release(self) -> bool:
        """Give the reserve's blocks back to the file system; True if that freed anything
        (False when it was released already, or could not be)."""
        if self.reserve_released:
            return False
        try:
            release_reserve(self.path)
        except OSError as exc:
            log.error("%s: cannot release the reserve %s: %s", self.label, self.path, exc)
            return False
        self.reserve_released = True
        log.warning("%s: released its %d MiB reserve on %s so that its journal, commits and "
                    "checkpoints can go on", self.label, self.reserve_bytes >> 20, self.disk)
        return True

    # --- full mode -----------------------------------------------------------------------------
    def enter_full(self, what: str, exc: OSError | None = None) -> None:
        """A write of ``what`` met a full disk: refuse writes that need space until ``poll``
        sees space again. Logs once per episode."""
        if self.full:
            return
        cause = os.strerror(exc.errno) if exc is not None and exc.errno else os.strerror(errno.ENOSPC)
        self.full = f"no space for {what}: {cause}"
        log.warning("%s: the host disk %s is full (%d bytes free): writes that need space answer "
                    "ENOSPC until space is freed there", self.label, self.disk, self.free_bytes())

    def error(self, what: str) -> NoSpace:
        """The error for a request refused because the host disk is full (counted)."""
        self.enospc_total += 1
        self.last_enospc = time.time()
        return NoSpace(f"the host disk {self.disk} under {self.label} is full: no space for {what}; "
                       f"free space on {self.disk}")

    def refuse(self, what: str) -> None:
        """Raise ``NoSpace`` now if the volume is in full mode (before anything changes)."""
        if self.full:
            raise self.error(what)

    def poll(self) -> bool:
        """While full: leave full mode once the reserve is back and space is free besides.
        Returns True when it left."""
        if not self.full:
            return False
        if self.free_bytes() < limits.space_resume_free_bytes + (self.reserve_bytes if self.reserve_released else 0):
            return False
        if self.reserve_released:
            try:
                allocate_reserve(self.path, self.reserve_bytes)
                self.reserve_released = False
            except OSError as exc:
                if no_space(exc):
                    return False        # someone took the space first: wait for more
                # Not a matter of space: go on without a reserve rather than refuse forever.
                log.error("%s: cannot allocate the reserve %s: %s", self.label, self.path, exc)
        log.info("%s: space is back on %s (%d bytes free): writes are accepted again",
                 self.label, self.disk, self.free_bytes())
        self.full = ""
        return True

    def room_for(self, nbytes: int) -> bool:
        """While full: may GC copy ``nbytes`` of live frames out of a mostly dead segment (and
        so give the rest of it back)? Only if that leaves room for the checkpoint that frees
        the segment; the reserve is released for it if that is what makes the room."""
        need = nbytes + limits.gc_full_disk_margin_bytes
        free = self.free_bytes()
        if free >= need:
            return True
        if not self.reserve_released and free + self.reserve_bytes >= need:
            return self.release()
        return False

    def nearly_full(self) -> bool:
        """Whether the disk is so full that a failed write there was most likely for space.
        (LMDB reports a short write as EIO: its error alone cannot tell.)"""
        return self.free_bytes() < self.reserve_bytes

    def free_bytes(self) -> int:
        try:
            return free_bytes(self.dir)
        except OSError:
            return 0

    def state(self) -> dict[str, Any]:
        """For the control socket (``space``, ``stats``) and so for the daemon."""
        return {"full": self.full, "reserve_released": self.reserve_released,
                "enospc_total": self.enospc_total, "last_enospc": self.last_enospc,
                "disk": self.disk, "free_bytes": self.free_bytes()}
