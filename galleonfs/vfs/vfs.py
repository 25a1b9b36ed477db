"""``Vfs``: POSIX semantics over the engine, as Linux tmpfs and ext4 behave: the facade.

Role: every rule of the file system lives in this package, one concern per module, and
``Vfs`` is the one object the FUSE adapter (and the kernel-free tests) call::

    nodes.py      inodes, names, extents; the views of snapshots (views.py)
    fence.py      cluster mode: no change or fsync acknowledged past the primary term
    handles.py    what the kernel holds (lookup counts, opens); file handles
    orphans.py    deleting unlinked inodes when let go, in bounded records
    namespace.py  lookup, create, link, unlink, rmdir, readdir
    rename.py     rename(2) and renameat2(2)
    data.py       open, read, write, truncate, sparse files
    attrs.py      setattr, access
    xattrs.py     extended attributes
    quota.py      the volume's byte and inode quota; statfs

Concurrency: all methods are synchronous and run on the one trio thread that owns the
volume, so each operation is atomic (no ``await`` inside). Each mutating method validates
everything first and then changes state inside ``engine.operation()``, which journals the
operation as one record; an error leaves nothing half done.

Owner and mode of new objects come from the request (``Ctx``), never from the worker
process. Inode numbers are FUSE's (``InodeId``: the view is in the high bits); a file
handle is a ``HandleId``.

What it must not do: import pyfuse3 or know errno values (errors are ``GalleonError``).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator

from ..engine.engine import Engine
from ..ids import HandleId, InodeId
from ..meta.schema import Inode
from .attrs import Attrs
from .common import ROOT_CTX as ROOT_CTX
from .common import Ctx as Ctx
from .common import DirEntry as DirEntry
from .common import SetAttr as SetAttr
from .common import StatFs as StatFs
from .data import Data
from .handles import Handles
from .namespace import Namespace
from .nodes import Nodes
from .orphans import Orphans
from .quota import Quota
from .rename import Renamer
from .xattrs import Xattrs


class Vfs:
    def __init__(self, engine: Engine, *, atime: bool = True, kernel_times: bool = False) -> None:
        self.engine = engine
        self.meta = engine.meta
        self.bs = engine.block_size
        self.nodes = Nodes(engine, atime=atime, kernel_times=kernel_times)
        self.fence = self.nodes.fence
        self.handles = Handles()
        self.orphans = Orphans(self.nodes, self.handles, engine)
        self.quota = Quota(engine)
        self.names = Namespace(engine, self.nodes, self.handles, self.orphans, self.quota)
        self.renamer = Renamer(engine, self.nodes, self.orphans)
        self.data = Data(engine, self.nodes, self.handles, self.orphans, kernel_times=kernel_times)
        self.attrs = Attrs(engine, self.nodes, self.data)
        self.xattrs = Xattrs(engine, self.nodes)

    # --- inodes and names ----------------------------------------------------------------------
    def inode(self, ino: InodeId) -> Inode:
        return self.nodes.inode(ino)

    def getattr(self, ino: InodeId) -> Inode:
        return self.nodes.inode(ino)

    def lookup(self, parent: InodeId, name: bytes, ctx: Ctx = ROOT_CTX) -> Inode:
        return self.names.lookup(parent, name)

    def forget(self, items: list[tuple[InodeId, int]]) -> None:
        for ino, count in items:
            if self.handles.forget(ino, count):
                self.orphans.maybe_purge(ino)

    def mknod(self, parent: InodeId, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Inode:
        return self.names.mknod(parent, name, mode, rdev, ctx)

    def mkdir(self, parent: InodeId, name: bytes, mode: int, ctx: Ctx) -> Inode:
        return self.names.mkdir(parent, name, mode, ctx)

    def symlink(self, parent: InodeId, name: bytes, target: bytes, ctx: Ctx) -> Inode:
        return self.names.symlink(parent, name, target, ctx)

    def readlink(self, ino: InodeId) -> bytes:
        return self.names.readlink(ino)

    def link(self, ino: InodeId, new_parent: InodeId, new_name: bytes, ctx: Ctx) -> Inode:
        return self.names.link(ino, new_parent, new_name)

    def unlink(self, parent: InodeId, name: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.names.unlink(parent, name)

    def rmdir(self, parent: InodeId, name: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.names.rmdir(parent, name)

    def rename(self, old_parent: InodeId, old_name: bytes, new_parent: InodeId, new_name: bytes,
               flags: int, ctx: Ctx = ROOT_CTX) -> None:
        self.renamer.rename(old_parent, old_name, new_parent, new_name, flags)

    def purge_orphans(self) -> int:
        """At mount: finish deletions and truncations a crash or an unmount left open."""
        return self.orphans.purge_orphans()

    # --- attributes ----------------------------------------------------------------------------
    def setattr(self, ino: InodeId, changes: SetAttr, ctx: Ctx = ROOT_CTX) -> Inode:
        return self.attrs.setattr(ino, changes)

    def access(self, ino: InodeId, mode: int, ctx: Ctx) -> None:
        self.attrs.access(ino, mode, ctx)

    # --- files ---------------------------------------------------------------------------------
    def open(self, ino: InodeId, writable: bool, *, truncate: bool = False) -> HandleId:
        return self.data.open(ino, writable, truncate=truncate)

    def create(self, parent: InodeId, name: bytes, mode: int, ctx: Ctx) -> Inode:
        """Create and open a regular file (the caller pairs it with ``release``)."""
        inode = self.names.create_entry(parent, name, stat.S_IFREG | (mode & 0o7777), ctx)
        self.handles.open(inode.ino)
        return inode

    def release(self, fh: HandleId) -> None:
        self.data.release(fh)

    def read(self, fh: HandleId, offset: int, size: int) -> bytes:
        return self.data.read(fh, offset, size)

    def write(self, fh: HandleId, offset: int, data: bytes) -> int:
        return self.data.write(fh, offset, data)

    # --- directories ---------------------------------------------------------------------------
    def opendir(self, ino: InodeId) -> HandleId:
        return self.names.opendir(ino)

    def readdir(self, fh: HandleId, offset: int) -> Iterator[DirEntry]:
        return self.names.readdir(fh, offset)

    def note_readdir_entry(self, entry: DirEntry) -> None:
        self.names.note_readdir_entry(entry)

    # --- xattrs --------------------------------------------------------------------------------
    def getxattr(self, ino: InodeId, name: bytes) -> bytes:
        return self.xattrs.get(ino, name)

    def setxattr(self, ino: InodeId, name: bytes, value: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.xattrs.set(ino, name, value)

    def listxattr(self, ino: InodeId, ctx: Ctx = ROOT_CTX) -> list[bytes]:
        return self.xattrs.list(ino, ctx)

    def removexattr(self, ino: InodeId, name: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.xattrs.remove(ino, name)

    # --- the volume ----------------------------------------------------------------------------
    def statfs(self) -> StatFs:
        return self.quota.statfs()

    def snapshots_changed(self) -> None:
        """The snapshot list changed: re-read which slot is which generation."""
        self.nodes.snapshots_changed()

