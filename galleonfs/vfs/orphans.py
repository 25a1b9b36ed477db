"""``Orphans``: deleting inodes, when nobody holds them any more, in records of bounded size.

An inode that loses its last name is deleted at once if the kernel does not hold it
(``handles.py``); otherwise it is recorded in the ``orphans`` database and deleted at the
last FORGET or RELEASE, or at the next mount if the worker died first (``purge_orphans``).

A file with more than ``PURGE_CHUNK`` blocks is deleted (or truncated) in several journal
records, each a consistent state: an orphan with fewer blocks, marked so that the next
mount finishes the job after a crash. Such a delete is deferred until after the record of
the operation that unlinked the file (``purge_deferred``): its first chunk must not be
journaled with the operation half done (a rename without its new entry yet).

What it must not do: delete an inode the kernel still holds, or one in a snapshot view.
"""

from __future__ import annotations

import stat

from ..engine.engine import Engine
from ..engine.ops import Operation
from ..ids import BlockId
from ..meta import schema
from ..meta.schema import Db, Inode
from ..meta.store import PRESERVED
from . import views
from .handles import Handles
from .nodes import Nodes

PURGE_CHUNK = 16384          # extents removed per journal record when deleting a big file
MARK_UNLINKED = b""          # orphans value: unlinked, delete when closed and forgotten
MARK_TRUNCATE = b"t"         # orphans value: extents beyond size still to be dropped


class Orphans:
    def __init__(self, nodes: Nodes, handles: Handles, engine: Engine) -> None:
        self._nodes = nodes
        self._handles = handles
        self._engine = engine
        self._meta = engine.meta
        self._deferred: list[int] = []     # big unlinked files, deleted after the operation

    def drop_link(self, inode: Inode, now: int, op: Operation) -> None:
        """One name of ``inode`` went (inside ``op``)."""
        inode.nlink -= 1
        inode.ctime_ns = self._nodes.file_time(inode.mode, now)
        self._nodes.put(inode)
        if inode.nlink == 0:
            self.orphan_or_purge(inode, op)

    def orphan_or_purge(self, inode: Inode, op: Operation) -> None:
        """An inode lost its last name (inside ``op``): delete it now, or record it as an
        orphan, deleted when the kernel lets go of it or, if too big for one record, right
        after ``op`` (``purge_deferred``)."""
        held = self._handles.held(inode.ino)
        blocks = -(-inode.size // self._nodes.bs) if stat.S_ISREG(inode.mode) else 0
        if held or blocks > PURGE_CHUNK:
            self._meta.put(Db.ORPHANS, schema.ino_key(inode.ino), MARK_UNLINKED)
            if not held:
                self._deferred.append(inode.ino)
        else:
            self.purge(inode, op)

    def purge_deferred(self) -> None:
        """After an operation's record: delete the big files it unlinked."""
        while self._deferred:
            self.maybe_purge(self._deferred.pop())

    def maybe_purge(self, ino: int) -> None:
        """Delete an unlinked inode once nobody holds it any more."""
        if (self._handles.held(ino) or not self._engine.writable or views.is_snapshot(ino)
                or self._nodes.fence.fenced):
            return
        raw = self._meta.get(Db.INODES, schema.ino_key(ino))
        if raw is None:
            return
        inode = Inode.decode(ino, raw)
        if inode.nlink == 0:
            with self._engine.operation() as op:
                self.purge(inode, op)

    def purge(self, inode: Inode, op: Operation) -> None:
        """Delete an inode and everything it owns. Big files go in several records."""
        key = schema.ino_key(inode.ino)
        if stat.S_ISREG(inode.mode) and self.drop_extents(inode, 0):
            # More blocks than one record should carry: go on in several records, each a
            # consistent state (an orphan with fewer blocks) that mount resumes from.
            self._meta.put(Db.ORPHANS, key, MARK_UNLINKED)
            self._nodes.put(inode)
            op.record()
            while self.drop_extents(inode, 0):
                self._nodes.put(inode)
                op.record()
        names = [k for k, _ in self._meta.scan(Db.XATTRS, prefix=key)]
        for name_key in names:
            self._meta.delete(Db.XATTRS, name_key)
        self._meta.delete(Db.INODES, key)
        self._meta.delete(Db.ORPHANS, key)
        self._engine.sb.release_inode()

    def drop_extents(self, inode: Inode, first_blk: int) -> bool:
        """Drop up to one chunk of extents from ``first_blk`` on; True if more remain."""
        prefix = schema.ino_key(inode.ino)
        found = list(self._meta.scan(Db.EXTENTS, prefix=prefix,
                                     start=schema.extent_key(inode.ino, first_blk),
                                     limit=PURGE_CHUNK + 1))
        dropped = [(BlockId(bid), self._meta.delete(Db.EXTENTS, key) == PRESERVED)
                   for key, bid in found[:PURGE_CHUNK]]
        inode.alloc -= self._engine.blocks.release(dropped)
        return len(found) > PURGE_CHUNK

    def truncate_extents(self, inode: Inode, first_blk: int, op: Operation) -> None:
        """Drop the extents from ``first_blk`` on; too many for one record, in several,
        resumable after a crash (the orphan mark says what is left to do)."""
        if not self.drop_extents(inode, first_blk):
            return
        key = schema.ino_key(inode.ino)
        self._meta.put(Db.ORPHANS, key, MARK_TRUNCATE)
        self._nodes.put(inode)
        op.record()
        while self.drop_extents(inode, first_blk):
            self._nodes.put(inode)
            op.record()
        if inode.nlink:
            self._meta.delete(Db.ORPHANS, key)
        else:
            self._meta.put(Db.ORPHANS, key, MARK_UNLINKED)

    def purge_orphans(self) -> int:
        """At mount: finish deletions and truncations a crash or an unmount left open."""
        if not self._engine.writable:
            return 0
        pending = list(self._meta.scan(Db.ORPHANS))
        for key, mark in pending:
            with self._engine.operation() as op:
                self._finish(key, mark, op)
        return len(pending)

    def _finish(self, key: bytes, mark: bytes, op: Operation) -> None:
        raw = self._meta.get(Db.INODES, key)
        if raw is None:
            self._meta.delete(Db.ORPHANS, key)
            return
        inode = Inode.decode(schema.ino_of_key(key), raw)
        if mark == MARK_TRUNCATE:
            first = (inode.size + self._nodes.bs - 1) // self._nodes.bs
            while self.drop_extents(inode, first):
                self._nodes.put(inode)
                op.record()
            self._nodes.put(inode)
            self._meta.delete(Db.ORPHANS, key)
        elif inode.nlink == 0:
            self.purge(inode, op)
        else:
            self._meta.delete(Db.ORPHANS, key)
