"""``Namespace``: names in directories, as Linux tmpfs and ext4 keep them.

Lookup, creation of every file type, hard links, unlink and rmdir, and listing. Rules kept
here: name limits, the reserved ``.snapshots`` name in the root, link counts (a directory
has 2 + its subdirectories), set-group-id directories (new entries take the directory's
group, new subdirectories its set-group-id bit), and stable readdir offsets (cookies).

Each change validates everything first, then changes the volume inside one
``engine.operation()`` (one journal record); an error leaves nothing half done.

What it must not do: import pyfuse3 or know errno values (errors are ``GalleonError``), or
free what an unlinked inode owns while the kernel holds it (``orphans.py`` decides).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator

from .. import limits
from ..engine import snapshots
from ..engine.engine import Engine
from ..errors import (
    AlreadyExists,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    ReadOnly,
    TooManyLinks,
)
from ..ids import ROOT_INODE, HandleId, InodeId
from ..meta import schema
from ..meta.schema import Db, Inode
from . import views
from .common import Ctx, DirEntry, check_name
from .handles import Handles
from .nodes import Nodes
from .orphans import Orphans
from .quota import Quota
from .views import SNAPDIR_INO, SNAPDIR_NAME

_FILE_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)
_READDIR_BATCH = 256        # index entries read per scan while listing


class Namespace:
    def __init__(self, engine: Engine, nodes: Nodes, handles: Handles, orphans: Orphans,
                 quota: Quota) -> None:
        self._engine = engine
        self._nodes = nodes
        self._handles = handles
        self._orphans = orphans
        self._quota = quota

    # --- lookup ----------------------------------------------------------------------------------
    def lookup(self, parent: InodeId, name: bytes) -> Inode:
        nodes, remember = self._nodes, self._handles.remember
        if parent == ROOT_INODE and name == SNAPDIR_NAME:
            return remember(nodes.snapdir())
        if parent == SNAPDIR_INO and name not in (b".", b".."):
            return remember(nodes.snapshot_root(name))
        directory = nodes.dir(parent)
        if name == b".":
            return remember(directory)
        if name == b"..":
            return remember(nodes.inode(directory.parent))
        inode, _ = nodes.existing(parent, name)
        return remember(inode)

    def readlink(self, ino: InodeId) -> bytes:
        """The target; reading it is an access (relatime), as following the link is: the
        kernel sends READLINK each time it follows one (FUSE inodes are S_NOATIME)."""
        inode = self._nodes.inode(ino)
        if not stat.S_ISLNK(inode.mode):
            raise InvalidArgument("not a symbolic link")
        self._nodes.note_access(inode)
        return inode.target

    # --- creation --------------------------------------------------------------------------------
    def mknod(self, parent: InodeId, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Inode:
        if stat.S_IFMT(mode) == 0:
            mode |= stat.S_IFREG
        if stat.S_IFMT(mode) not in _FILE_TYPES:
            raise InvalidArgument(f"mknod cannot create file type {stat.S_IFMT(mode):o}")
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            rdev = 0
        return self.create_entry(parent, name, mode, ctx, rdev=rdev)

    def mkdir(self, parent: InodeId, name: bytes, mode: int, ctx: Ctx) -> Inode:
        return self.create_entry(parent, name, stat.S_IFDIR | (mode & 0o7777), ctx)

    def symlink(self, parent: InodeId, name: bytes, target: bytes, ctx: Ctx) -> Inode:
        if not target:
            raise NotFound("a symbolic link needs a target")
        if len(target) > limits.symlink_target_max_bytes:
            raise NameTooLong(f"symlink target is {len(target)} bytes; at most 4095 are allowed")
        return self.create_entry(parent, name, stat.S_IFLNK | 0o777, ctx, target=target)

    def create_entry(self, parent_ino: InodeId, name: bytes, mode: int, ctx: Ctx, *,
                     rdev: int = 0, target: bytes = b"") -> Inode:
        nodes = self._nodes
        nodes.admit(parent_ino)
        check_name(name)
        nodes.not_reserved(parent_ino, name, AlreadyExists)
        parent = nodes.dir(parent_ino)
        if parent.nlink == 0:
            raise NotFound("the directory was removed")
        if nodes.child(parent_ino, name) is not None:
            raise AlreadyExists(f"{name!r} already exists")
        now = time.time_ns()
        inode = self._new_inode(parent, mode, ctx, nodes.file_time(mode, now), rdev=rdev, target=target)
        is_dir = stat.S_ISDIR(mode)
        if is_dir and parent.nlink >= limits.link_count_max:
            raise TooManyLinks("the parent directory has too many subdirectories")
        with self._engine.operation():
            if is_dir:
                parent.nlink += 1
            inode.ino = self._engine.sb.allocate_inode()
            nodes.put(inode)
            nodes.add_entry(parent, name, inode.ino)
            nodes.touch(parent, now)
            nodes.put(parent)
        return self._handles.remember(inode)

    def _new_inode(self, parent: Inode, mode: int, ctx: Ctx, now: int, *, rdev: int,
                   target: bytes) -> Inode:
        self._quota.admit_inode()
        gid = ctx.gid
        if parent.mode & stat.S_ISGID:               # set-group-id directory: inherit group
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        is_dir = stat.S_ISDIR(mode)
        return Inode(
            ino=0, mode=mode, uid=ctx.uid, gid=gid, nlink=2 if is_dir else 1,
            size=len(target), alloc=0, atime_ns=now, mtime_ns=now, ctime_ns=now, btime_ns=now,
            rdev=rdev, aux=3 if is_dir else 0, parent=parent.ino if is_dir else 0, target=target,
        )

    # --- links -----------------------------------------------------------------------------------
    def link(self, ino: InodeId, new_parent: InodeId, new_name: bytes) -> Inode:
        nodes = self._nodes
        nodes.admit(ino, new_parent)
        check_name(new_name)
        nodes.not_reserved(new_parent, new_name, AlreadyExists)
        inode = nodes.inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise NotPermitted("hard links to directories are not allowed")
        parent = nodes.dir(new_parent)
        if parent.nlink == 0:
            raise NotFound("the directory was removed")
        if nodes.child(new_parent, new_name) is not None:
            raise AlreadyExists(f"{new_name!r} already exists")
        if inode.nlink >= limits.link_count_max:
            raise TooManyLinks(f"the file already has {inode.nlink} links")
        if inode.nlink == 0:
            raise NotFound("the file was deleted")
        now = time.time_ns()
        with self._engine.operation():
            inode.nlink += 1
            inode.ctime_ns = nodes.file_time(inode.mode, now)
            nodes.put(inode)
            nodes.add_entry(parent, new_name, ino)
            nodes.touch(parent, now)
            nodes.put(parent)
        return self._handles.remember(inode)

    def unlink(self, parent: InodeId, name: bytes) -> None:
        nodes = self._nodes
        nodes.admit(parent)
        nodes.not_reserved(parent, name, ReadOnly)
        directory = nodes.dir(parent)
        inode, cookie = nodes.existing(parent, name)
        if stat.S_ISDIR(inode.mode):
            raise IsADirectory(f"{name!r} is a directory; use rmdir")
        now = time.time_ns()
        with self._engine.operation() as op:
            nodes.remove_entry(parent, name, cookie, inode.ino)
            nodes.touch(directory, now)
            nodes.put(directory)
            self._orphans.drop_link(inode, now, op)
        self._orphans.purge_deferred()

    def rmdir(self, parent: InodeId, name: bytes) -> None:
        nodes = self._nodes
        nodes.admit(parent)
        nodes.not_reserved(parent, name, ReadOnly)
        if name == b".":
            raise InvalidArgument("cannot remove '.'")
        if name == b"..":
            raise NotEmpty("cannot remove '..'")
        directory = nodes.dir(parent)
        inode, cookie = nodes.existing(parent, name)
        if not stat.S_ISDIR(inode.mode):
            raise NotADirectory(f"{name!r} is not a directory")
        if not nodes.is_empty_dir(inode.ino):
            raise NotEmpty(f"directory {name!r} is not empty")
        now = time.time_ns()
        with self._engine.operation() as op:
            nodes.remove_entry(parent, name, cookie, inode.ino)
            directory.nlink -= 1
            nodes.touch(directory, now)
            nodes.put(directory)
            inode.nlink = 0
            inode.ctime_ns = now
            nodes.put(inode)
            self._orphans.orphan_or_purge(inode, op)
        self._orphans.purge_deferred()

    # --- listing ---------------------------------------------------------------------------------
    def opendir(self, ino: InodeId) -> HandleId:
        self._nodes.dir(ino)
        return HandleId(ino)

    def readdir(self, fh: HandleId, offset: int) -> Iterator[DirEntry]:
        """Entries from ``offset`` on, in stable cookie order; ``.`` and ``..`` first.

        Offsets are cookies: an entry keeps its offset while others come and go, so a
        reader that resumes at an offset never skips or repeats a surviving entry.
        """
        nodes = self._nodes
        ino = Handles.inode_of(fh)
        directory = nodes.dir(ino)
        # Listing is reading: relatime applies, as ext4's iterate_dir -> file_accessed does.
        nodes.note_access(directory)
        if offset < 1:
            yield DirEntry(b".", directory, 1)
        if offset < 2:
            yield DirEntry(b"..", nodes.inode(directory.parent), 2)
        if ino == SNAPDIR_INO:
            yield from self._readdir_snapshots(offset)
            return
        view, local = nodes.view(ino)
        prefix = schema.ino_key(local)
        start = schema.dirindex_key(local, max(offset, 3))
        entries = list(view.scan(nodes.meta, Db.DIRINDEX, prefix, start=start, limit=_READDIR_BATCH))
        while entries:
            for key, value in entries:
                child, name = schema.decode_dirindex(value)
                cookie = schema.cookie_of_dirindex_key(key)
                yield DirEntry(name, nodes.inode(view.fuse(child)), cookie + 1)
            start = schema.dirindex_key(local, cookie + 1)
            entries = list(view.scan(nodes.meta, Db.DIRINDEX, prefix, start=start, limit=_READDIR_BATCH))

    def _readdir_snapshots(self, offset: int) -> Iterator[DirEntry]:
        """``.snapshots``: one directory per snapshot; the slot is the stable cookie."""
        for snap in sorted(snapshots.snapshots(self._engine), key=lambda s: s.slot):
            if snap.slot + 3 >= offset:
                self._nodes.note_slot(snap.slot, snap.gen)
                root = self._nodes.inode(views.join(snap.slot, ROOT_INODE))
                yield DirEntry(snap.name.encode(), root, snap.slot + 4)

    def note_readdir_entry(self, entry: DirEntry) -> None:
        """The kernel took a reference to an entry returned by readdirplus."""
        if entry.name not in (b".", b".."):
            self._handles.remember(entry.inode)
