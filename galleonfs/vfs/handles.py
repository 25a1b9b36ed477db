"""``Handles``: what the kernel holds of the volume, so an unlinked file lives on while held.

Two counts per inode (FUSE's protocol): *lookups* (each reply naming an inode, undone by
FORGET) and *opens* (each OPEN/CREATE, undone by RELEASE). An inode whose last name is gone
is deleted only once both are zero (``orphans.py``).

A file handle is its inode's number: handles of one inode share everything (the VFS keeps
no state per open: no offset, no buffer; the kernel keeps those), so no table maps them.
``HandleId`` keeps the two apart in signatures all the same.

What it must not do: persist anything (the kernel's references die with the mount; a crash
leaves orphans, which the next mount deletes).
"""

from __future__ import annotations

from ..errors import BadHandle
from ..ids import HandleId, InodeId
from ..meta.schema import Inode


class Handles:
    def __init__(self) -> None:
        self._lookups: dict[int, int] = {}        # kernel lookup counts (FUSE forget protocol)
        self._opens: dict[int, int] = {}          # open handles per inode

    def remember(self, inode: Inode) -> Inode:
        """The kernel now holds a reference to ``inode`` (one more lookup)."""
        self._lookups[inode.ino] = self._lookups.get(inode.ino, 0) + 1
        return inode

    def forget(self, ino: int, count: int) -> bool:
        """The kernel dropped ``count`` lookups of ``ino``; True if it holds none now."""
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return False
        self._lookups.pop(ino, None)
        return True

    def open(self, ino: int) -> HandleId:
        self._opens[ino] = self._opens.get(ino, 0) + 1
        return HandleId(ino)

    def release(self, fh: HandleId) -> bool:
        """One open of ``fh`` ended; True if it was the last."""
        left = self._opens.get(fh, 0) - 1
        if left < 0:
            raise BadHandle(f"inode {fh} is not open")
        if left:
            self._opens[fh] = left
            return False
        del self._opens[fh]
        return True

    def held(self, ino: int) -> bool:
        """True while the kernel looks at ``ino`` or has it open."""
        return bool(self._lookups.get(ino) or self._opens.get(ino))

    @staticmethod
    def inode_of(fh: HandleId) -> InodeId:
        return InodeId(fh)
