"""``Nodes``: the volume's tree as the other VFS modules see it: inodes, names, extents.

Reads go through a ``View`` (``views.py``): FUSE inode numbers of the live tree read the
live records, those under ``.snapshots`` read the records as they were at a snapshot's
generation. Writes only ever go to the live tree (``live`` refuses the rest).

The records: an inode (``schema.Inode``), its names (a directory entry, a readdir index
entry keyed by a stable cookie, a link record for paths in diffs) and its extents (block
number -> block id). A change here is part of the caller's operation (``engine.operation``).

What it must not do: decide POSIX rules (the modules that call it do), or write to a view
that is not the live tree.
"""

from __future__ import annotations

import stat
import time

from ..engine import snapshots
from ..engine.engine import Engine
from ..errors import NotADirectory, NotFound, ReadOnly
from ..ids import ROOT_INODE, BlockId, InodeId
from ..meta import schema
from ..meta.schema import Db, Inode
from . import views
from .common import check_name, now_ns
from .fence import Fence
from .views import LIVE, SNAPDIR_INO, SNAPDIR_NAME, View

_DAY_NS = 86_400 * 10**9


class Nodes:
    def __init__(self, engine: Engine, *, atime: bool, kernel_times: bool = False) -> None:
        self.engine = engine
        self.meta = engine.meta
        self.bs = engine.block_size
        self.atime = atime                        # relatime-style updates; off for `-o noatime`
        self.kernel_times = kernel_times          # the kernel owns regular files' mtime/ctime
        self._slot_gens: dict[int, int] = {}      # snapshot slot -> generation (cache)
        self.fence = Fence(engine.name or engine.volume_id)   # cluster mode: the primary term

    # --- inodes, in whichever view ---------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        """The inode behind a FUSE inode number, in whichever view the number names."""
        if ino == SNAPDIR_INO:
            return self.snapdir()
        view, local = self.view(ino)
        raw = view.get(self.meta, Db.INODES, schema.ino_key(local))
        if raw is None:
            raise NotFound(f"inode {ino} does not exist")
        inode = Inode.decode(ino, raw)
        if view.slot and inode.parent:
            inode.parent = SNAPDIR_INO if local == ROOT_INODE else view.fuse(inode.parent)
        return inode

    def dir(self, ino: int) -> Inode:
        inode = self.inode(ino)
        if not stat.S_ISDIR(inode.mode):
            raise NotADirectory(f"inode {ino} is not a directory")
        return inode

    def put(self, inode: Inode) -> None:
        self.meta.put(Db.INODES, schema.ino_key(inode.ino), inode.encode())

    @staticmethod
    def touch(inode: Inode, now: int, *, mtime: bool = True) -> None:
        inode.ctime_ns = now
        if mtime:
            inode.mtime_ns = now

    def file_time(self, mode: int, now: int) -> int:
        """The time to stamp on a file of ``mode`` changed ``now`` (fine clock): where the
        kernel owns the times (regular files under the writeback cache), its own coarse clock
        (``common.now_ns``, which says why), else ``now``."""
        return now_ns() if self.kernel_times and stat.S_ISREG(mode) else now

    def note_access(self, inode: Inode) -> None:
        """relatime: update atime if it is older than mtime/ctime or a day old. Not while
        the host disk is full: a read must not fail for an atime. (Not admitted: a read
        does not refuse for want of journal room; the record is tiny.)"""
        engine = self.engine
        if (not self.atime or not engine.writable or views.is_snapshot(inode.ino) or engine.space.full
                or self.fence.fenced):
            return
        now = time.time_ns()
        a = inode.atime_ns
        if a <= inode.mtime_ns or a <= inode.ctime_ns or now - a >= _DAY_NS:
            with engine.operation():
                inode.atime_ns = now
                self.put(inode)

    # --- views: the live tree and the snapshots --------------------------------------------------
    def view(self, fino: int) -> tuple[View, int]:
        """The view a FUSE inode number names, and its inode number there."""
        if fino <= views.INO_MASK:
            return LIVE, fino                     # the live tree: every request but snapshots'
        slot, ino = views.split(fino)
        gen = self._slot_gens.get(slot)
        if gen is None:
            self.snapshots_changed()
            gen = self._slot_gens.get(slot)
            if gen is None:
                raise NotFound("that snapshot was deleted")
        return View(slot, gen), ino

    def snapshots_changed(self) -> None:
        """The snapshot list changed: re-read which slot is which generation."""
        self._slot_gens = {snap.slot: snap.gen for snap in snapshots.snapshots(self.engine)}

    @staticmethod
    def live(*finos: int) -> None:
        """Refuse changes anywhere under ``.snapshots``: snapshots are read-only."""
        for fino in finos:
            if views.is_snapshot(fino):
                raise ReadOnly("snapshots are read-only")

    def admit(self, *finos: int) -> None:
        """An operation that will change ``finos`` may begin: the volume takes writes (and
        has journal room for the record, ``Engine.check_writable``), none is in a snapshot,
        and the mount is not fenced (``fence.py``: EIO, checked first)."""
        self.fence.check()
        self.engine.check_writable()
        self.live(*finos)

    @staticmethod
    def not_reserved(parent: int, name: bytes, error: type[Exception]) -> None:
        if parent == ROOT_INODE and name == SNAPDIR_NAME:
            raise error(f"{SNAPDIR_NAME.decode()} is reserved for snapshots")

    def snapdir(self) -> Inode:
        root = self.inode(ROOT_INODE)
        count = len(snapshots.snapshots(self.engine))
        return Inode(ino=SNAPDIR_INO, mode=stat.S_IFDIR | 0o555, uid=root.uid, gid=root.gid,
                     nlink=2 + count, size=0, alloc=0, atime_ns=root.atime_ns, mtime_ns=root.ctime_ns,
                     ctime_ns=root.ctime_ns, btime_ns=root.btime_ns, rdev=0, aux=0, parent=ROOT_INODE)

    def snapshot_root(self, name: bytes) -> Inode:
        for snap in snapshots.snapshots(self.engine):
            if snap.name.encode() == name:
                self._slot_gens[snap.slot] = snap.gen
                return self.inode(views.join(snap.slot, ROOT_INODE))
        raise NotFound(f"no snapshot named {name!r}")

    def note_slot(self, slot: int, gen: int) -> None:
        self._slot_gens[slot] = gen

    # --- names -----------------------------------------------------------------------------------
    def child(self, parent: int, name: bytes) -> tuple[InodeId, int] | None:
        """Return ``(child inode, cookie)`` of ``name`` in ``parent``, or None."""
        view, local = self.view(parent)
        raw = view.get(self.meta, Db.DIRENTS, schema.dirent_key(local, name))
        if raw is None:
            return None
        child, cookie = schema.decode_dirent(raw)
        return InodeId(view.fuse(child)), cookie

    def existing(self, parent: int, name: bytes) -> tuple[Inode, int]:
        check_name(name)
        found = self.child(parent, name)
        if found is None:
            raise NotFound(f"{name!r} does not exist in directory {parent}")
        return self.inode(found[0]), found[1]

    def add_entry(self, parent: Inode, name: bytes, child: int, cookie: int | None = None) -> None:
        if cookie is None:
            cookie = parent.aux
            parent.aux += 1
        self.meta.put(Db.DIRENTS, schema.dirent_key(parent.ino, name), schema.encode_dirent(child, cookie))
        self.meta.put(Db.DIRINDEX, schema.dirindex_key(parent.ino, cookie),
                      schema.encode_dirindex(child, name))
        self.meta.put(Db.LINKS, schema.link_key(child, parent.ino, name), b"")

    def remove_entry(self, parent: int, name: bytes, cookie: int, child: int) -> None:
        self.meta.delete(Db.DIRENTS, schema.dirent_key(parent, name))
        self.meta.delete(Db.DIRINDEX, schema.dirindex_key(parent, cookie))
        self.meta.delete(Db.LINKS, schema.link_key(child, parent, name))

    def is_empty_dir(self, ino: int) -> bool:
        return not self.meta.has_prefix(Db.DIRENTS, schema.ino_key(ino))

    def is_ancestor(self, ancestor: int, ino: int) -> bool:
        """True if directory ``ancestor`` is ``ino`` or lies on the path from ``ino`` to the root."""
        seen = 0
        while True:
            if ino == ancestor:
                return True
            if ino == ROOT_INODE:
                return False
            ino = self.inode(ino).parent
            seen += 1
            assert seen < 1 << 20, "directory parent chain does not reach the root"

    # --- extents ---------------------------------------------------------------------------------
    def extents(self, fino: int, first: int, last: int) -> dict[int, BlockId]:
        """Block number -> block id for the file's blocks in ``[first, last]`` (holes absent),
        in the view ``fino`` names."""
        view, ino = self.view(fino)
        out: dict[int, BlockId] = {}
        if first == last:
            bid = view.get(self.meta, Db.EXTENTS, schema.extent_key(ino, first))
            if bid is not None:
                out[first] = BlockId(bid)
            return out
        for key, bid in view.scan(self.meta, Db.EXTENTS, schema.ino_key(ino),
                                  start=schema.extent_key(ino, first)):
            blk = schema.blkno_of_extent_key(key)
            if blk > last:
                break
            out[blk] = BlockId(bid)
        return out
