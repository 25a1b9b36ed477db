"""``Attrs``: an inode's attributes: chmod, chown, utimes, truncate by size, access.

Rules kept here: chown clears set-user-id (and set-group-id if group-executable) on what is
not a directory, as chown(2) does; ctime follows every change unless the kernel sends its
own; mtime follows a truncate unless the kernel owns it (the writeback cache).

Permissions: mounts use ``default_permissions``, so the kernel checks access rights before
calling us; ``access`` is implemented for completeness.

What it must not do: change the file type bits, or stamp a time the kernel owns.
"""

from __future__ import annotations

import stat
import time

from ..engine.engine import Engine
from ..errors import PermissionDenied
from ..ids import InodeId
from ..meta.schema import Inode
from .common import Ctx, SetAttr
from .data import Data
from .nodes import Nodes


class Attrs:
    def __init__(self, engine: Engine, nodes: Nodes, data: Data) -> None:
        self._engine = engine
        self._nodes = nodes
        self._data = data

    def setattr(self, ino: InodeId, changes: SetAttr) -> Inode:
        """Apply ``changes``; a setattr that changes nothing writes no record.

        Most SETATTRs the kernel sends under the writeback cache hand over times it already
        agrees with us on (``common.now_ns``): the ctime after an unlink, link, rename or
        setxattr, ``tar``'s chmod and chown to what a file already has. Applying them
        changes no byte of the inode, so there is nothing to journal and nothing a crash
        could lose; only the reply is owed.
        """
        nodes = self._nodes
        nodes.admit(ino)
        inode = nodes.inode(ino)
        now = time.time_ns()
        if changes.size is not None:
            self._data.check_truncate(inode, changes.size)
        resize = changes.size is not None and changes.size != inode.size
        before = (inode.mode, inode.uid, inode.gid, inode.atime_ns, inode.mtime_ns, inode.ctime_ns)
        if changes.mode is not None:
            inode.mode = stat.S_IFMT(inode.mode) | (changes.mode & 0o7777)
        if changes.uid is not None or changes.gid is not None:
            _chown(inode, changes.uid, changes.gid)
        # Under the writeback cache the kernel owns mtime: a truncate that changes the size
        # comes with one; a same-size truncate does not, and the kernel keeps its old mtime.
        if changes.size is not None and changes.mtime_ns is None and not self._data.kernel_times:
            inode.mtime_ns = now
        if changes.atime_ns is not None:
            inode.atime_ns = changes.atime_ns
        if changes.mtime_ns is not None:
            inode.mtime_ns = changes.mtime_ns
        if changes.ctime_ns is not None:
            inode.ctime_ns = changes.ctime_ns
        else:
            inode.ctime_ns = nodes.file_time(inode.mode, now)
        if not resize and before == (inode.mode, inode.uid, inode.gid, inode.atime_ns, inode.mtime_ns,
                                     inode.ctime_ns):
            return inode
        with self._engine.operation() as op:
            if resize:
                assert changes.size is not None
                self._data.truncate(inode, changes.size, op)
            nodes.put(inode)
        return inode

    def access(self, ino: InodeId, mode: int, ctx: Ctx) -> None:
        inode = self._nodes.inode(ino)
        if ctx.uid == 0:
            if mode & 1 and not (inode.mode & 0o111) and not stat.S_ISDIR(inode.mode):
                raise PermissionDenied("no execute permission for anyone")
            return
        if ctx.uid == inode.uid:
            bits = (inode.mode >> 6) & 7
        elif ctx.gid == inode.gid:
            bits = (inode.mode >> 3) & 7
        else:
            bits = inode.mode & 7
        if mode & ~bits & 7:
            raise PermissionDenied("permission denied")


def _chown(inode: Inode, uid: int | None, gid: int | None) -> None:
    new_uid = inode.uid if uid is None else uid
    new_gid = inode.gid if gid is None else gid
    if (new_uid, new_gid) != (inode.uid, inode.gid) and not stat.S_ISDIR(inode.mode):
        # chown(2): set-user-id is cleared, set-group-id too if group-executable.
        inode.mode &= ~stat.S_ISUID
        if inode.mode & stat.S_IXGRP:
            inode.mode &= ~stat.S_ISGID
    inode.uid, inode.gid = new_uid, new_gid
