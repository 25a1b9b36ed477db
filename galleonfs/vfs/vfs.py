"""``Vfs``: POSIX semantics over the engine, as Linux tmpfs and ext4 behave.

Role: every rule of the file system lives here: name limits, link counts, rename corner
cases, sticky set-group-id directories, sparse files, the volume quota, the kernel's lookup
counts and what happens to an unlinked file that is still open. The FUSE adapter only
translates; this module is usable, and tested, without a kernel.

Concurrency: all methods are synchronous and run on the one trio thread that owns the
volume, so each operation is atomic (no ``await`` inside). Each mutating method validates
everything first and then changes state, so an error leaves nothing half done; it ends
with ``engine.end_op()``, which journals the operation as one record.

Permissions: mounts use ``default_permissions``, so the kernel checks access rights before
calling us; ``access`` is implemented for completeness. Owner and mode of new objects come
from the request (``Ctx``), never from the worker process.

What it must not do: import pyfuse3 or know errno values (errors are ``GalleonError``).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .. import limits
from ..engine import snapshots
from ..engine.engine import Engine
from ..errors import (
    AlreadyExists,
    BadHandle,
    CrossDevice,
    FileTooBig,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    OutOfRange,
    PermissionDenied,
    ReadOnly,
    TooBig,
    TooManyLinks,
)
from ..ids import ROOT_INODE, InodeId
from ..meta import schema
from ..meta.schema import Db, Inode
from ..meta.store import PRESERVED
from . import views
from .views import LIVE, SNAPDIR_INO, SNAPDIR_NAME, View

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.", b"system.")
_DAY_NS = 86_400 * 10**9
_PURGE_CHUNK = 16384          # extents removed per journal record when deleting a big file
_FILE_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)
_MARK_UNLINKED = b""          # orphans value: unlinked, delete when closed and forgotten
_MARK_TRUNCATE = b"t"         # orphans value: extents beyond size still to be dropped


@dataclass(slots=True, frozen=True)
class Ctx:
    """Who asks: the calling process's ids (and umask, already applied by the kernel)."""

    uid: int
    gid: int
    pid: int = 0
    umask: int = 0o022


ROOT_CTX = Ctx(0, 0)


@dataclass(slots=True)
class SetAttr:
    """The fields a ``setattr`` changes; ``None`` means leave alone."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


@dataclass(slots=True, frozen=True)
class StatFs:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int
    blocks_avail: int = -1     # what writers can still use (-1: blocks_free)


@dataclass(slots=True, frozen=True)
class DirEntry:
    name: bytes
    inode: Inode
    next_offset: int


def check_name(name: bytes) -> None:
    if len(name) > limits.name_max_bytes:
        raise NameTooLong(f"name is {len(name)} bytes; at most {limits.name_max_bytes} are allowed")
    if not name or b"/" in name or b"\0" in name:
        raise InvalidArgument(f"invalid file name {name!r}")


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    return data == _ZEROS[: len(data)]


_ZEROS = bytes(limits.block_size_max_bytes)


class Vfs:
    def __init__(self, engine: Engine, *, atime: bool = True, kernel_times: bool = False) -> None:
        self.engine = engine
        # With the kernel's writeback cache the kernel owns a regular file's mtime and ctime
        # on write and truncate-at-open: it keeps its own and sends them in a SETATTR when
        # they change. Stamping our clock as well would store a time the user never saw.
        self.kernel_times = kernel_times
        self.meta = engine.meta
        self.bs = engine.block_size
        self.atime = atime                        # relatime-style updates; off for `-o noatime`
        self._lookups: dict[int, int] = {}        # kernel lookup counts (FUSE forget protocol)
        self._opens: dict[int, int] = {}          # open handles per inode
        self._deferred_purges: list[int] = []     # big unlinked files, deleted after the op
        self._slot_gens: dict[int, int] = {}      # snapshot slot -> generation (cache)

    # --- helpers -------------------------------------------------------------------------------
    def inode(self, ino: int) -> Inode:
        """The inode behind a FUSE inode number, in whichever view the number names."""
        if ino == SNAPDIR_INO:
            return self._snapdir()
        view, local = self._view(ino)
        raw = view.get(self.meta, Db.INODES, schema.ino_key(local))
        if raw is None:
            raise NotFound(f"inode {ino} does not exist")
        inode = Inode.decode(ino, raw)
        if view.slot and inode.parent:
            inode.parent = SNAPDIR_INO if local == ROOT_INODE else view.fuse(inode.parent)
        return inode

    # --- views: the live tree and the snapshots ------------------------------------------------
    def _view(self, fino: int) -> tuple[View, int]:
        slot, ino = views.split(fino)
        if slot == 0:
            return LIVE, ino
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

    def _live(self, *finos: int) -> None:
        """Refuse changes anywhere under ``.snapshots``: snapshots are read-only."""
        for fino in finos:
            if views.is_snapshot(fino):
                raise ReadOnly("snapshots are read-only")

    @staticmethod
    def _not_reserved(parent: int, name: bytes, error: type[Exception]) -> None:
        if parent == ROOT_INODE and name == SNAPDIR_NAME:
            raise error(f"{SNAPDIR_NAME.decode()} is reserved for snapshots")

    def _snapdir(self) -> Inode:
        root = self.inode(ROOT_INODE)
        count = len(snapshots.snapshots(self.engine))
        return Inode(ino=SNAPDIR_INO, mode=stat.S_IFDIR | 0o555, uid=root.uid, gid=root.gid,
                     nlink=2 + count, size=0, alloc=0, atime_ns=root.atime_ns, mtime_ns=root.ctime_ns,
                     ctime_ns=root.ctime_ns, btime_ns=root.btime_ns, rdev=0, aux=0, parent=ROOT_INODE)

    def _snapshot_root(self, name: bytes) -> Inode:
        for snap in snapshots.snapshots(self.engine):
            if snap.name.encode() == name:
                self._slot_gens[snap.slot] = snap.gen
                return self.inode(views.join(snap.slot, ROOT_INODE))
        raise NotFound(f"no snapshot named {name!r}")

    def _put(self, inode: Inode) -> None:
        self.meta.put(Db.INODES, schema.ino_key(inode.ino), inode.encode())

    def _dir(self, ino: int) -> Inode:
        inode = self.inode(ino)
        if not stat.S_ISDIR(inode.mode):
            raise NotADirectory(f"inode {ino} is not a directory")
        return inode

    def _child(self, parent: int, name: bytes) -> tuple[int, int] | None:
        """Return ``(child inode, cookie)`` of ``name`` in ``parent``, or None."""
        view, local = self._view(parent)
        raw = view.get(self.meta, Db.DIRENTS, schema.dirent_key(local, name))
        if raw is None:
            return None
        child, cookie = schema.decode_dirent(raw)
        return view.fuse(child), cookie

    def _existing(self, parent: int, name: bytes) -> tuple[Inode, int]:
        check_name(name)
        found = self._child(parent, name)
        if found is None:
            raise NotFound(f"{name!r} does not exist in directory {parent}")
        return self.inode(found[0]), found[1]

    def _add_entry(self, parent: Inode, name: bytes, child: int, cookie: int | None = None) -> None:
        if cookie is None:
            cookie = parent.aux
            parent.aux += 1
        self.meta.put(Db.DIRENTS, schema.dirent_key(parent.ino, name), schema.encode_dirent(child, cookie))
        self.meta.put(Db.DIRINDEX, schema.dirindex_key(parent.ino, cookie),
                      schema.encode_dirindex(child, name))
        self.meta.put(Db.LINKS, schema.link_key(child, parent.ino, name), b"")

    def _remove_entry(self, parent: int, name: bytes, cookie: int, child: int) -> None:
        self.meta.delete(Db.DIRENTS, schema.dirent_key(parent, name))
        self.meta.delete(Db.DIRINDEX, schema.dirindex_key(parent, cookie))
        self.meta.delete(Db.LINKS, schema.link_key(child, parent, name))

    def _touch(self, inode: Inode, now: int, *, mtime: bool = True) -> None:
        inode.ctime_ns = now
        if mtime:
            inode.mtime_ns = now

    def _remember(self, inode: Inode) -> Inode:
        """The kernel now holds a reference to ``inode`` (one more lookup)."""
        self._lookups[inode.ino] = self._lookups.get(inode.ino, 0) + 1
        return inode

    def _is_ancestor(self, ancestor: int, ino: int) -> bool:
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

    def _new_inode(self, parent: Inode, mode: int, ctx: Ctx, now: int, *, rdev: int = 0,
                   target: bytes = b"") -> Inode:
        if self.engine.get_int(b"inode_count") >= self._files_max():
            raise NoSpace("no free inodes left on the volume")
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

    def _create_entry(self, parent_ino: int, name: bytes, mode: int, ctx: Ctx, *,
                      rdev: int = 0, target: bytes = b"") -> Inode:
        self.engine.check_writable()
        self._live(parent_ino)
        check_name(name)
        self._not_reserved(parent_ino, name, AlreadyExists)
        parent = self._dir(parent_ino)
        if parent.nlink == 0:
            raise NotFound("the directory was removed")
        if self._child(parent_ino, name) is not None:
            raise AlreadyExists(f"{name!r} already exists")
        now = time.time_ns()
        inode = self._new_inode(parent, mode, ctx, now, rdev=rdev, target=target)
        if stat.S_ISDIR(mode):
            if parent.nlink >= limits.link_count_max:
                raise TooManyLinks("the parent directory has too many subdirectories")
            parent.nlink += 1
        inode.ino = self.engine.allocate_inode()
        self._put(inode)
        self._add_entry(parent, name, inode.ino)
        self._touch(parent, now)
        self._put(parent)
        self.engine.end_op()
        return self._remember(inode)

    def _files_max(self) -> int:
        return max(limits.inodes_min, self.engine.size // limits.inodes_per_byte_divisor)

    # --- names ---------------------------------------------------------------------------------
    def lookup(self, parent: int, name: bytes, ctx: Ctx = ROOT_CTX) -> Inode:
        if parent == ROOT_INODE and name == SNAPDIR_NAME:
            return self._remember(self._snapdir())
        if parent == SNAPDIR_INO and name not in (b".", b".."):
            return self._remember(self._snapshot_root(name))
        directory = self._dir(parent)
        if name == b".":
            return self._remember(directory)
        if name == b"..":
            return self._remember(self.inode(directory.parent))
        inode, _ = self._existing(parent, name)
        return self._remember(inode)

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            left = self._lookups.get(ino, 0) - count
            if left > 0:
                self._lookups[ino] = left
                continue
            self._lookups.pop(ino, None)
            self._maybe_purge(ino)

    def getattr(self, ino: int) -> Inode:
        return self.inode(ino)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Inode:
        if stat.S_IFMT(mode) == 0:
            mode |= stat.S_IFREG
        if stat.S_IFMT(mode) not in _FILE_TYPES:
            raise InvalidArgument(f"mknod cannot create file type {stat.S_IFMT(mode):o}")
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            rdev = 0
        return self._create_entry(parent, name, mode, ctx, rdev=rdev)

    def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Inode:
        return self._create_entry(parent, name, stat.S_IFDIR | (mode & 0o7777), ctx)

    def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Inode:
        if not target:
            raise NotFound("a symbolic link needs a target")
        if len(target) > limits.symlink_target_max_bytes:
            raise NameTooLong(f"symlink target is {len(target)} bytes; at most 4095 are allowed")
        return self._create_entry(parent, name, stat.S_IFLNK | 0o777, ctx, target=target)

    def readlink(self, ino: int) -> bytes:
        """The target; reading it is an access (relatime), as following the link is: the
        kernel sends READLINK each time it follows one (FUSE inodes are S_NOATIME)."""
        inode = self.inode(ino)
        if not stat.S_ISLNK(inode.mode):
            raise InvalidArgument("not a symbolic link")
        self._note_access(inode)
        return inode.target

    def link(self, ino: int, new_parent: int, new_name: bytes, ctx: Ctx) -> Inode:
        self.engine.check_writable()
        self._live(ino, new_parent)
        check_name(new_name)
        self._not_reserved(new_parent, new_name, AlreadyExists)
        inode = self.inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise NotPermitted("hard links to directories are not allowed")
        parent = self._dir(new_parent)
        if parent.nlink == 0:
            raise NotFound("the directory was removed")
        if self._child(new_parent, new_name) is not None:
            raise AlreadyExists(f"{new_name!r} already exists")
        if inode.nlink >= limits.link_count_max:
            raise TooManyLinks(f"the file already has {inode.nlink} links")
        if inode.nlink == 0:
            raise NotFound("the file was deleted")
        now = time.time_ns()
        inode.nlink += 1
        inode.ctime_ns = now
        self._put(inode)
        self._add_entry(parent, new_name, ino)
        self._touch(parent, now)
        self._put(parent)
        self.engine.end_op()
        return self._remember(inode)

    def unlink(self, parent: int, name: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.engine.check_writable()
        self._live(parent)
        self._not_reserved(parent, name, ReadOnly)
        directory = self._dir(parent)
        inode, cookie = self._existing(parent, name)
        if stat.S_ISDIR(inode.mode):
            raise IsADirectory(f"{name!r} is a directory; use rmdir")
        now = time.time_ns()
        self._remove_entry(parent, name, cookie, inode.ino)
        self._touch(directory, now)
        self._put(directory)
        self._drop_link(inode, now)
        self._end_op()

    def rmdir(self, parent: int, name: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.engine.check_writable()
        self._live(parent)
        self._not_reserved(parent, name, ReadOnly)
        if name == b".":
            raise InvalidArgument("cannot remove '.'")
        if name == b"..":
            raise NotEmpty("cannot remove '..'")
        directory = self._dir(parent)
        inode, cookie = self._existing(parent, name)
        if not stat.S_ISDIR(inode.mode):
            raise NotADirectory(f"{name!r} is not a directory")
        if self.meta.has_prefix(Db.DIRENTS, schema.ino_key(inode.ino)):
            raise NotEmpty(f"directory {name!r} is not empty")
        now = time.time_ns()
        self._remove_entry(parent, name, cookie, inode.ino)
        directory.nlink -= 1
        self._touch(directory, now)
        self._put(directory)
        inode.nlink = 0
        inode.ctime_ns = now
        self._put(inode)
        self._orphan_or_purge(inode)
        self._end_op()

    def _drop_link(self, inode: Inode, now: int) -> None:
        inode.nlink -= 1
        inode.ctime_ns = now
        self._put(inode)
        if inode.nlink == 0:
            self._orphan_or_purge(inode)

    def _orphan_or_purge(self, inode: Inode) -> None:
        """An inode lost its last name: delete it now, or record it as an orphan.

        It stays while the kernel holds it. A file too big to delete in one record is
        deleted after the current operation's own record (``_end_op``): its first chunk
        must not be journaled with the operation half done (a rename without its new
        entry yet); the orphan mark makes the next mount finish it if we crash between.
        """
        held = self._lookups.get(inode.ino) or self._opens.get(inode.ino)
        blocks = -(-inode.size // self.bs) if stat.S_ISREG(inode.mode) else 0
        if held or blocks > _PURGE_CHUNK:
            self.meta.put(Db.ORPHANS, schema.ino_key(inode.ino), _MARK_UNLINKED)
            if not held:
                self._deferred_purges.append(inode.ino)
        else:
            self._purge(inode)

    def _end_op(self) -> None:
        """End an operation that may have left inodes to delete after its record."""
        self.engine.end_op()
        while self._deferred_purges:
            self._maybe_purge(self._deferred_purges.pop())

    def _maybe_purge(self, ino: int) -> None:
        """Delete an unlinked inode once nobody holds it any more."""
        if (self._lookups.get(ino) or self._opens.get(ino) or not self.engine.writable
                or views.is_snapshot(ino)):
            return
        raw = self.meta.get(Db.INODES, schema.ino_key(ino))
        if raw is None:
            return
        inode = Inode.decode(ino, raw)
        if inode.nlink == 0:
            self._purge(inode)
            self.engine.end_op()

    def _purge(self, inode: Inode) -> None:
        """Delete an inode and everything it owns. Big files go in several records."""
        key = schema.ino_key(inode.ino)
        if stat.S_ISREG(inode.mode) and self._drop_extents(inode, 0):
            # More blocks than one record should carry: go on in several records, each a
            # consistent state (an orphan with fewer blocks) that mount resumes from.
            self.meta.put(Db.ORPHANS, key, _MARK_UNLINKED)
            self._put(inode)
            self.engine.end_op()
            while self._drop_extents(inode, 0):
                self._put(inode)
                self.engine.end_op()
        names = [k for k, _ in self.meta.scan(Db.XATTRS, prefix=key)]
        for name_key in names:
            self.meta.delete(Db.XATTRS, name_key)
        self.meta.delete(Db.INODES, key)
        self.meta.delete(Db.ORPHANS, key)
        self.engine.release_inode()

    def _drop_extents(self, inode: Inode, first_blk: int) -> bool:
        """Drop up to one chunk of extents from ``first_blk`` on; True if more remain."""
        prefix = schema.ino_key(inode.ino)
        found = list(self.meta.scan(Db.EXTENTS, prefix=prefix,
                                    start=schema.extent_key(inode.ino, first_blk),
                                    limit=_PURGE_CHUNK + 1))
        for key, bid in found[:_PURGE_CHUNK]:
            kept = self.meta.delete(Db.EXTENTS, key) == PRESERVED
            self._release_block(inode, bid, kept)
        return len(found) > _PURGE_CHUNK

    def _release_block(self, inode: Inode, bid: bytes, kept: bool) -> None:
        """The file stopped using block ``bid``; a snapshot that ``kept`` the old extent keeps
        its reference, else the reference goes."""
        info = self.engine.block_info(bid)
        assert info is not None
        inode.alloc -= info.raw_len
        if not kept:
            self.engine.unref_block(bid)

    def purge_orphans(self) -> int:
        """At mount: finish deletions and truncations a crash or an unmount left open."""
        if not self.engine.writable:
            return 0
        pending = list(self.meta.scan(Db.ORPHANS))
        for key, mark in pending:
            ino = schema.ino_of_key(key)
            raw = self.meta.get(Db.INODES, key)
            if raw is None:
                self.meta.delete(Db.ORPHANS, key)
            elif mark == _MARK_TRUNCATE:
                inode = Inode.decode(ino, raw)
                first = (inode.size + self.bs - 1) // self.bs
                while self._drop_extents(inode, first):
                    self._put(inode)
                    self.engine.end_op()
                self._put(inode)
                self.meta.delete(Db.ORPHANS, key)
            else:
                inode = Inode.decode(ino, raw)
                if inode.nlink == 0:
                    self._purge(inode)
                else:
                    self.meta.delete(Db.ORPHANS, key)
            self.engine.end_op()
        return len(pending)

    # --- rename --------------------------------------------------------------------------------
    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               flags: int, ctx: Ctx = ROOT_CTX) -> None:
        self.engine.check_writable()
        self._live(old_parent, new_parent)
        self._not_reserved(old_parent, old_name, ReadOnly)
        self._not_reserved(new_parent, new_name, ReadOnly)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise InvalidArgument(f"unsupported rename flags {flags:#x}")
        check_name(new_name)
        src_dir = self._dir(old_parent)
        dst_dir = src_dir if new_parent == old_parent else self._dir(new_parent)
        src, src_cookie = self._existing(old_parent, old_name)
        found = self._child(new_parent, new_name)
        dst = self.inode(found[0]) if found is not None else None
        if flags & RENAME_EXCHANGE:
            if dst is None or found is None:
                raise NotFound(f"{new_name!r} does not exist; RENAME_EXCHANGE needs both names")
            self._check_move(src, new_parent)
            self._check_move(dst, old_parent)
            self._exchange(src_dir, old_name, src, src_cookie, dst_dir, new_name, dst, found[1])
            return
        if dst is not None and flags & RENAME_NOREPLACE:
            raise AlreadyExists(f"{new_name!r} already exists")
        if dst is not None and dst.ino == src.ino:
            return                                  # same file: POSIX says do nothing
        self._check_move(src, new_parent)
        if dst is not None:
            self._check_replace(src, dst)
        if (stat.S_ISDIR(src.mode) and new_parent != old_parent and dst is None
                and dst_dir.nlink >= limits.link_count_max):
            raise TooManyLinks("the target directory has too many subdirectories")
        now = time.time_ns()
        self._remove_entry(old_parent, old_name, src_cookie, src.ino)
        reuse_cookie = None
        if dst is not None and found is not None:
            reuse_cookie = found[1]                 # the name keeps its place in readdir
            self.meta.delete(Db.DIRENTS, schema.dirent_key(new_parent, new_name))
            self.meta.delete(Db.LINKS, schema.link_key(dst.ino, new_parent, new_name))
            if stat.S_ISDIR(dst.mode):
                dst_dir.nlink -= 1
                dst.nlink = 0
                dst.ctime_ns = now
                self._put(dst)
                self._orphan_or_purge(dst)
            else:
                self._drop_link(dst, now)
        if stat.S_ISDIR(src.mode) and new_parent != old_parent:
            src_dir.nlink -= 1
            dst_dir.nlink += 1
            src.parent = new_parent
        self._add_entry(dst_dir, new_name, src.ino, reuse_cookie)
        src.ctime_ns = now
        self._put(src)
        self._touch(src_dir, now)
        self._touch(dst_dir, now)
        self._put(src_dir)
        if dst_dir is not src_dir:
            self._put(dst_dir)
        self._end_op()

    def _check_move(self, inode: Inode, new_parent: int) -> None:
        if stat.S_ISDIR(inode.mode) and self._is_ancestor(inode.ino, new_parent):
            raise InvalidArgument("cannot move a directory into itself or its own subdirectory")

    def _check_replace(self, src: Inode, dst: Inode) -> None:
        if stat.S_ISDIR(src.mode) and not stat.S_ISDIR(dst.mode):
            raise NotADirectory("cannot replace a non-directory with a directory")
        if not stat.S_ISDIR(src.mode) and stat.S_ISDIR(dst.mode):
            raise IsADirectory("cannot replace a directory with a non-directory")
        if stat.S_ISDIR(dst.mode) and self.meta.has_prefix(Db.DIRENTS, schema.ino_key(dst.ino)):
            raise NotEmpty("the target directory is not empty")

    def _exchange(self, src_dir: Inode, src_name: bytes, src: Inode, src_cookie: int,
                  dst_dir: Inode, dst_name: bytes, dst: Inode, dst_cookie: int) -> None:
        """RENAME_EXCHANGE: swap what the two names point to; both keep their readdir place."""
        if src.ino == dst.ino:
            return
        now = time.time_ns()
        self.meta.put(Db.DIRENTS, schema.dirent_key(src_dir.ino, src_name),
                      schema.encode_dirent(dst.ino, src_cookie))
        self.meta.put(Db.DIRINDEX, schema.dirindex_key(src_dir.ino, src_cookie),
                      schema.encode_dirindex(dst.ino, src_name))
        self.meta.put(Db.DIRENTS, schema.dirent_key(dst_dir.ino, dst_name),
                      schema.encode_dirent(src.ino, dst_cookie))
        self.meta.put(Db.DIRINDEX, schema.dirindex_key(dst_dir.ino, dst_cookie),
                      schema.encode_dirindex(src.ino, dst_name))
        self.meta.delete(Db.LINKS, schema.link_key(src.ino, src_dir.ino, src_name))
        self.meta.delete(Db.LINKS, schema.link_key(dst.ino, dst_dir.ino, dst_name))
        self.meta.put(Db.LINKS, schema.link_key(dst.ino, src_dir.ino, src_name), b"")
        self.meta.put(Db.LINKS, schema.link_key(src.ino, dst_dir.ino, dst_name), b"")
        if src_dir.ino != dst_dir.ino:
            src_is_dir, dst_is_dir = stat.S_ISDIR(src.mode), stat.S_ISDIR(dst.mode)
            if src_is_dir:
                src.parent = dst_dir.ino
            if dst_is_dir:
                dst.parent = src_dir.ino
            if src_is_dir != dst_is_dir:
                moved_to_dst = 1 if src_is_dir else -1
                src_dir.nlink -= moved_to_dst
                dst_dir.nlink += moved_to_dst
        src.ctime_ns = dst.ctime_ns = now
        self._put(src)
        self._put(dst)
        self._touch(src_dir, now)
        self._put(src_dir)
        if dst_dir.ino != src_dir.ino:
            self._touch(dst_dir, now)
            self._put(dst_dir)
        self.engine.end_op()

    # --- attributes ----------------------------------------------------------------------------
    def setattr(self, ino: int, changes: SetAttr, ctx: Ctx = ROOT_CTX) -> Inode:
        self.engine.check_writable()
        self._live(ino)
        inode = self.inode(ino)
        now = time.time_ns()
        if changes.size is not None:
            self._check_truncate(inode, changes.size)
        if changes.mode is not None:
            inode.mode = stat.S_IFMT(inode.mode) | (changes.mode & 0o7777)
        if changes.uid is not None or changes.gid is not None:
            new_uid = inode.uid if changes.uid is None else changes.uid
            new_gid = inode.gid if changes.gid is None else changes.gid
            if (new_uid, new_gid) != (inode.uid, inode.gid) and not stat.S_ISDIR(inode.mode):
                # chown(2): set-user-id is cleared, set-group-id too if group-executable.
                inode.mode &= ~stat.S_ISUID
                if inode.mode & stat.S_IXGRP:
                    inode.mode &= ~stat.S_ISGID
            inode.uid, inode.gid = new_uid, new_gid
        if changes.size is not None:
            self._truncate(inode, changes.size)
            # Under the writeback cache the kernel owns mtime: a truncate that changes the size
            # comes with one; a same-size truncate does not, and the kernel keeps its old mtime.
            if changes.mtime_ns is None and not self.kernel_times:
                inode.mtime_ns = now
        if changes.atime_ns is not None:
            inode.atime_ns = changes.atime_ns
        if changes.mtime_ns is not None:
            inode.mtime_ns = changes.mtime_ns
        inode.ctime_ns = changes.ctime_ns if changes.ctime_ns is not None else now
        self._put(inode)
        self.engine.end_op()
        return inode

    def _check_truncate(self, inode: Inode, size: int) -> None:
        if stat.S_ISDIR(inode.mode):
            raise IsADirectory("cannot truncate a directory")
        if not stat.S_ISREG(inode.mode):
            raise InvalidArgument("only regular files can be truncated")
        if size < 0:
            raise InvalidArgument("negative file size")
        if size > limits.file_size_max_bytes:
            raise FileTooBig("file size limit exceeded")
        if size < inode.size and size % self.bs:
            blk = size // self.bs
            found = self.meta.get(Db.EXTENTS, schema.extent_key(inode.ino, blk))
            if found is not None:
                self.engine.read_blocks([found])    # a bad block fails here, before any change

    def _truncate(self, inode: Inode, size: int) -> None:
        """Set the size; drop whole blocks past it and cut the block it ends in."""
        if size >= inode.size:
            inode.size = size                      # growing makes a hole: nothing to store
            return
        bs = self.bs
        cut_blk = size // bs
        if size % bs:
            key = schema.extent_key(inode.ino, cut_blk)
            bid = self.meta.get(Db.EXTENTS, key)
            if bid is not None:
                (old,) = self.engine.read_blocks([bid])
                keep = old[: size % bs]
                self._replace_block(inode, cut_blk, bid, None if is_zero(keep) else keep)
            cut_blk += 1
        inode.size = size
        if self._drop_extents(inode, cut_blk):
            # Too many blocks for one record: finish in several, resumable after a crash.
            self.meta.put(Db.ORPHANS, schema.ino_key(inode.ino), _MARK_TRUNCATE)
            self._put(inode)
            self.engine.end_op()
            while self._drop_extents(inode, cut_blk):
                self._put(inode)
                self.engine.end_op()
            if inode.nlink:
                self.meta.delete(Db.ORPHANS, schema.ino_key(inode.ino))
            else:
                self.meta.put(Db.ORPHANS, schema.ino_key(inode.ino), _MARK_UNLINKED)

    def _replace_block(self, inode: Inode, blk: int, old: bytes | None, data: bytes | None) -> None:
        key = schema.extent_key(inode.ino, blk)
        kept = False
        if data is not None:
            (new,) = self.engine.store_blocks([data])
            kept = self.meta.put(Db.EXTENTS, key, new)
            inode.alloc += len(data)
        elif old is not None:
            kept = self.meta.delete(Db.EXTENTS, key) == PRESERVED
        if old is not None:
            self._release_block(inode, old, kept)

    def access(self, ino: int, mode: int, ctx: Ctx) -> None:
        inode = self.inode(ino)
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

    # --- files ---------------------------------------------------------------------------------
    def open(self, ino: int, writable: bool, *, truncate: bool = False) -> InodeId:
        """Open ``ino``; ``truncate`` is ``O_TRUNC``.

        libfuse 3 turns on ``atomic_o_trunc``, so the kernel sends no ``setattr`` for
        ``O_TRUNC`` and truncates only its own page cache: emptying the file is ours to do,
        with mtime and ctime updated as ``do_truncate`` would (even when already empty).
        """
        inode = self.inode(ino)
        if stat.S_ISDIR(inode.mode) and writable:
            raise IsADirectory("cannot open a directory for writing")
        truncate = truncate and stat.S_ISREG(inode.mode)
        if writable or truncate:
            self.engine.check_writable()
            self._live(ino)
        if truncate:
            self._check_truncate(inode, 0)
            self._truncate(inode, 0)
            if not self.kernel_times:
                inode.mtime_ns = inode.ctime_ns = time.time_ns()
            self._put(inode)
            self.engine.end_op()
        self._opens[ino] = self._opens.get(ino, 0) + 1
        return InodeId(ino)

    def create(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Inode:
        """Create and open a regular file (the caller pairs it with ``release``)."""
        inode = self._create_entry(parent, name, stat.S_IFREG | (mode & 0o7777), ctx)
        self._opens[inode.ino] = self._opens.get(inode.ino, 0) + 1
        return inode

    def release(self, ino: int) -> None:
        left = self._opens.get(ino, 0) - 1
        if left < 0:
            raise BadHandle(f"inode {ino} is not open")
        if left:
            self._opens[ino] = left
            return
        del self._opens[ino]
        self._maybe_purge(ino)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        inode = self.inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise IsADirectory("cannot read a directory")
        if offset < 0 or size < 0:
            raise InvalidArgument("negative offset or size")
        end = min(offset + size, inode.size)
        if offset >= end:
            return b""
        bs = self.bs
        first, last = offset // bs, (end - 1) // bs
        extents = self._extents(ino, first, last, *self._view(ino))
        datas = self.engine.read_blocks(list(extents.values())) if extents else []
        by_blk = dict(zip(extents, datas, strict=True))
        parts: list[bytes | memoryview] = []
        for blk in range(first, last + 1):
            lo = max(offset, blk * bs) - blk * bs
            hi = min(end, (blk + 1) * bs) - blk * bs
            data = by_blk.get(blk)
            if data is None:
                parts.append(_ZEROS[: hi - lo])
            elif lo == 0 and hi == len(data):
                parts.append(data)
            else:
                piece = memoryview(data)[lo:hi]
                parts.append(piece)
                if len(piece) < hi - lo:
                    parts.append(_ZEROS[: hi - lo - len(piece)])
        self._note_access(inode)
        return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)

    def _note_access(self, inode: Inode) -> None:
        """relatime: update atime if it is older than mtime/ctime or a day old. Not while
        the host disk is full: a read must not fail for an atime."""
        if (not self.atime or not self.engine.writable or views.is_snapshot(inode.ino)
                or self.engine.space.full):
            return
        now = time.time_ns()
        a = inode.atime_ns
        if a <= inode.mtime_ns or a <= inode.ctime_ns or now - a >= _DAY_NS:
            inode.atime_ns = now
            self._put(inode)
            self.engine.end_op()

    def _extents(self, ino: int, first: int, last: int, view: View = LIVE,
                 local: int | None = None) -> dict[int, bytes]:
        """Block number -> block id for the file's blocks in ``[first, last]`` (holes absent)."""
        ino = ino if local is None else local
        out: dict[int, bytes] = {}
        if first == last:
            bid = view.get(self.meta, Db.EXTENTS, schema.extent_key(ino, first))
            if bid is not None:
                out[first] = bid
            return out
        for key, bid in view.scan(self.meta, Db.EXTENTS, schema.ino_key(ino),
                                  start=schema.extent_key(ino, first)):
            blk = schema.blkno_of_extent_key(key)
            if blk > last:
                break
            out[blk] = bid
        return out

    def write(self, ino: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; whole blocks are stored, edges read-modify-written."""
        self.engine.check_writable()
        self._live(ino)
        n = len(data)
        if n == 0:
            return 0
        if offset < 0:
            raise InvalidArgument("negative offset")
        end = offset + n
        if end > limits.file_size_max_bytes:
            raise FileTooBig("file size limit exceeded")
        inode = self.inode(ino)
        if not stat.S_ISREG(inode.mode):
            raise InvalidArgument("not a regular file")
        bs = self.bs
        first, last = offset // bs, (end - 1) // bs
        old = self._extents(ino, first, last)
        contents = self._new_contents(offset, memoryview(data), first, last, old)
        new_ids = self._check_space(contents, old)
        stored = self.engine.store_blocks([c for c in contents if c is not None],
                                          [i for i in new_ids if i is not None])
        it = iter(stored)
        for blk, content in zip(range(first, last + 1), contents, strict=True):
            key = schema.extent_key(ino, blk)
            old_bid = old.get(blk)
            if content is not None:
                kept = self.meta.put(Db.EXTENTS, key, next(it))
                inode.alloc += len(content)
            elif old_bid is not None:
                kept = self.meta.delete(Db.EXTENTS, key) == PRESERVED
            if old_bid is not None:
                self._release_block(inode, old_bid, kept)
        if end > inode.size:
            inode.size = end
        if not self.kernel_times:
            inode.mtime_ns = inode.ctime_ns = time.time_ns()
        self._put(inode)
        self.engine.end_op()
        return n

    def _new_contents(self, offset: int, view: memoryview, first: int, last: int,
                      old: dict[int, bytes]) -> list[bytes | bytearray | None]:
        """The new content of each block in ``[first, last]``; None for an all-zero block."""
        bs = self.bs
        end = offset + len(view)
        edges = sorted({first, last} & old.keys())
        partial = [b for b in edges if offset > b * bs or end < (b + 1) * bs]
        old_data = dict(zip(partial, self.engine.read_blocks([old[b] for b in partial]), strict=True))
        contents: list[bytes | bytearray | None] = []
        for blk in range(first, last + 1):
            base = blk * bs
            lo, hi = max(offset, base), min(end, base + bs)
            piece = view[lo - offset:hi - offset]
            content: bytes | bytearray
            if lo == base and hi == base + bs:
                content = bytes(piece)
            else:
                before = old_data.get(blk, b"")
                buf = bytearray(max(len(before), hi - base))
                buf[: len(before)] = before
                buf[lo - base:hi - base] = piece
                content = buf
            contents.append(None if is_zero(content) else content)
        return contents

    def _check_space(self, contents: list[bytes | bytearray | None], old: dict[int, bytes]) -> list[bytes | None]:
        """Hash the new blocks and refuse the write if it would overflow the volume."""
        ids = [None if c is None else self.engine.hash_block(c) for c in contents]
        grow = 0
        fresh: set[bytes] = set()
        for bid, content in zip(ids, contents, strict=True):
            if bid is not None and content is not None and bid not in fresh and self.engine.block_info(bid) is None:
                fresh.add(bid)
                grow += len(content)
        kept = set(ids)
        for bid in set(old.values()) - kept:
            info = self.engine.block_info(bid)
            if info is not None and info.refs == 1:
                grow -= info.raw_len
        if grow > 0 and self.engine.used_bytes + grow > self.engine.size:
            raise NoSpace("the volume is full")
        return ids

    # --- directories ---------------------------------------------------------------------------
    def opendir(self, ino: int) -> InodeId:
        self._dir(ino)
        return InodeId(ino)

    def readdir(self, ino: int, offset: int) -> Iterator[DirEntry]:
        """Entries from ``offset`` on, in stable cookie order; ``.`` and ``..`` first.

        Offsets are cookies: an entry keeps its offset while others come and go, so a
        reader that resumes at an offset never skips or repeats a surviving entry.
        """
        directory = self._dir(ino)
        # Listing is reading: relatime applies, as ext4's iterate_dir -> file_accessed does.
        self._note_access(directory)
        if offset < 1:
            yield DirEntry(b".", directory, 1)
        if offset < 2:
            yield DirEntry(b"..", self.inode(directory.parent), 2)
        if ino == SNAPDIR_INO:
            yield from self._readdir_snapshots(offset)
            return
        view, local = self._view(ino)
        prefix = schema.ino_key(local)
        start = schema.dirindex_key(local, max(offset, 3))
        entries = list(view.scan(self.meta, Db.DIRINDEX, prefix, start=start, limit=256))
        while entries:
            for key, value in entries:
                child, name = schema.decode_dirindex(value)
                cookie = schema.cookie_of_dirindex_key(key)
                yield DirEntry(name, self.inode(view.fuse(child)), cookie + 1)
            start = schema.dirindex_key(local, cookie + 1)
            entries = list(view.scan(self.meta, Db.DIRINDEX, prefix, start=start, limit=256))

    def _readdir_snapshots(self, offset: int) -> Iterator[DirEntry]:
        """``.snapshots``: one directory per snapshot; the slot is the stable cookie."""
        for snap in sorted(snapshots.snapshots(self.engine), key=lambda s: s.slot):
            if snap.slot + 3 >= offset:
                self._slot_gens[snap.slot] = snap.gen
                yield DirEntry(snap.name.encode(), self.inode(views.join(snap.slot, ROOT_INODE)), snap.slot + 4)

    def note_readdir_entry(self, entry: DirEntry) -> None:
        """The kernel took a reference to an entry returned by readdirplus."""
        if entry.name not in (b".", b".."):
            self._remember(entry.inode)

    # --- xattrs --------------------------------------------------------------------------------
    def _check_xattr_name(self, name: bytes) -> None:
        if len(name) > limits.xattr_name_max_bytes or not name:
            raise OutOfRange("xattr name is empty or longer than 255 bytes")
        if name in XATTR_NAMESPACES:
            raise InvalidArgument(f"xattr name {name!r} has a namespace but no name")
        if not name.startswith(XATTR_NAMESPACES):
            raise NotSupported(f"xattr namespace of {name!r} is not supported")

    def getxattr(self, ino: int, name: bytes) -> bytes:
        self._check_xattr_name(name)
        self.inode(ino)
        view, local = self._view(ino)
        value = view.get(self.meta, Db.XATTRS, schema.xattr_key(local, name))
        if value is None:
            raise NoAttribute(f"no attribute {name!r}")
        return value

    def setxattr(self, ino: int, name: bytes, value: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.engine.check_writable()
        self._live(ino)
        self._check_xattr_name(name)
        if len(value) > limits.xattr_value_max_bytes:
            raise TooBig("xattr value is larger than 64 KiB")
        inode = self.inode(ino)
        key = schema.xattr_key(ino, name)
        if self.meta.get(Db.XATTRS, key) is None:
            total = sum(len(k) - 8 + 1 for k, _ in self.meta.scan(Db.XATTRS, prefix=schema.ino_key(ino)))
            if total + len(name) + 1 > limits.xattr_list_max_bytes:
                raise NoSpace("too many extended attributes on this file")
        self.meta.put(Db.XATTRS, key, value)
        inode.ctime_ns = time.time_ns()
        self._put(inode)
        self.engine.end_op()

    def listxattr(self, ino: int, ctx: Ctx = ROOT_CTX) -> list[bytes]:
        """The attribute names; ``trusted.*`` ones only for root, as ext4 and tmpfs list them.

        The kernel checks ``trusted.*`` reads and writes itself but passes the list through
        unfiltered, so hiding the names is ours. FUSE tells us no capabilities: uid 0 stands
        in for ``CAP_SYS_ADMIN``.
        """
        self.inode(ino)
        view, local = self._view(ino)
        names = [bytes(key[8:]) for key, _ in view.scan(self.meta, Db.XATTRS, schema.ino_key(local))]
        if ctx.uid != 0:
            names = [name for name in names if not name.startswith(b"trusted.")]
        return names

    def removexattr(self, ino: int, name: bytes, ctx: Ctx = ROOT_CTX) -> None:
        self.engine.check_writable()
        self._live(ino)
        self._check_xattr_name(name)
        inode = self.inode(ino)
        if not self.meta.delete(Db.XATTRS, schema.xattr_key(ino, name)):
            raise NoAttribute(f"no attribute {name!r}")
        inode.ctime_ns = time.time_ns()
        self._put(inode)
        self.engine.end_op()

    # --- volume --------------------------------------------------------------------------------
    def statfs(self) -> StatFs:
        """The volume's size and what is left of it. What writers can still use is never
        more than the host disk under it has (an overcommitted node), and nothing while
        that disk is full: ``df`` shows it in Avail, Used stays the volume's own."""
        frsize = 4096
        size, used = self.engine.size, self.engine.used_bytes
        free = max(0, size - used)
        avail = free
        if not self.engine.read_only:
            avail = 0 if self.engine.space.full else min(free, self.engine.space.free_bytes())
        files = self._files_max()
        return StatFs(
            block_size=frsize, blocks=size // frsize,
            blocks_free=free // frsize, files=files,
            files_free=max(0, files - self.engine.get_int(b"inode_count")),
            name_max=limits.name_max_bytes, blocks_avail=avail // frsize,
        )

    def check_same_volume(self, other: Vfs) -> None:
        if other is not self:
            raise CrossDevice("cannot link or rename across volumes")
