"""The pyfuse3 adapter: a protocol translator, nothing more (the borg habit).

Each FUSE operation converts arguments (pyfuse3's ``InodeT``/``FileHandleT`` to the VFS's
``InodeId``/``HandleId``), calls the VFS and converts the answer. Errors are translated at
exactly one place (``_Request``): a ``GalleonError`` becomes ``pyfuse3.FUSEError(errno)``;
anything else is a bug, propagates, ends the mount and the worker marks the volume for
check (DESIGN §5).

Kernel-side choices, each measured in docs/benchmarks.md:

* writeback cache on: the kernel merges small writes into up to 1 MiB requests;
* no ``flush`` handler: with the writeback cache the kernel writes dirty pages at
  ``close()`` by itself, and the FLUSH request that follows would be a round trip for
  nothing (the worker holds no dirty state), so ENOSYS turns it off for the session;
* long entry/attribute timeouts and negative entries: the worker is the volume's only
  writer, so the kernel's caches cannot go stale behind its back;
* ``keep_cache`` on open: the page cache survives close/open for the same reason.

What it must not do: hold file system rules (the VFS does) or know about the engine.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import pyfuse3
from pyfuse3 import (
    EntryAttributes,
    FileHandleT,
    FileInfo,
    FileNameT,
    FlagT,
    InodeT,
    ModeT,
    ReaddirToken,
    RequestContext,
    SetattrFields,
    StatvfsData,
    XAttrNameT,
)

from ..engine.committer import Committer
from ..errors import GalleonError, NotFound
from ..ids import HandleId, InodeId
from ..meta.schema import Inode
from ..metrics.volume import VolumeStats
from ..qos.throttle import Throttle
from ..vfs.vfs import Ctx, SetAttr, Vfs
from ..vfs.views import SNAPDIR_INO
from .tuning import Tuning

# Operations counted by name in metrics: every handler (FSYNCDIR counts as fsync).
OPS = ("lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink", "rmdir",
       "symlink", "rename", "link", "access", "open", "create", "read", "write", "release",
       "fsync", "opendir", "readdir", "releasedir", "getxattr", "setxattr",
       "listxattr", "removexattr", "statfs")


def _ctx(ctx: RequestContext) -> Ctx:
    return Ctx(ctx.uid, ctx.gid, ctx.pid, ctx.umask)


class _Request:
    """``with self._req[name]:`` around a handler's synchronous work: the one place a
    ``GalleonError`` becomes the errno the application sees, and where the request is
    counted in metrics (``metrics/volume.py``: plain ints, ~0.5 µs against the ~76 µs floor
    of a request). One per operation, reused: nothing inside awaits."""

    __slots__ = ("_name", "_ops", "_start")

    def __init__(self, ops: FuseOps, name: str) -> None:
        self._ops = ops
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        if self._ops.stats is not None:
            self._start = time.perf_counter()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stats = self._ops.stats
        if stats is not None:
            stats.ops[self._name].observe(time.perf_counter() - self._start)
        if isinstance(exc, GalleonError):
            self._ops.failed(exc)
            raise pyfuse3.FUSEError(exc.errno) from None


class FuseOps(pyfuse3.Operations):
    enable_writeback_cache = True
    supports_dot_lookup = True

    def __init__(self, vfs: Vfs, committer: Committer, *, on_init: Callable[[], None] | None = None,
                 tuning: Tuning | None = None) -> None:
        super().__init__()
        tuning = tuning or Tuning()
        self.vfs = vfs
        self.committer = committer
        self._on_init = on_init
        self._attr_timeout = tuning.attr_timeout_s
        self._entry_timeout = tuning.entry_timeout_s
        self._negative_timeout = tuning.negative_timeout_s
        self._keep_cache = tuning.keep_cache
        self.enable_writeback_cache = tuning.writeback
        self._answer_flush = tuning.flush          # measured: one round trip per close
        self._blksize = vfs.bs
        self.errors: dict[int, int] = {}
        self.qos: Throttle | None = None          # set by the worker while QoS rates apply
        self.stats: VolumeStats | None = None     # set by the worker when metrics are on
        self._req = {name: _Request(self, name) for name in OPS}

    def snapshots_changed(self, name: str) -> None:
        """A snapshot appeared or went: drop what the kernel cached about its name."""
        self.vfs.snapshots_changed()
        # Async: invalidate_entry would block the loop until the kernel answers.
        pyfuse3.invalidate_entry_async(InodeT(SNAPDIR_INO), name.encode(), ignore_enoent=True)

    def init(self) -> None:
        if self._on_init is not None:
            self._on_init()

    def failed(self, exc: GalleonError) -> None:
        # An error must not leave an operation half done (``engine/ops.py`` sees to it).
        assert not self.vfs.engine.in_op(), f"operation failed half-way: {exc!r}"
        self.errors[exc.errno] = self.errors.get(exc.errno, 0) + 1

    def entry(self, inode: Inode) -> EntryAttributes:
        attr = EntryAttributes()
        attr.st_ino = InodeT(inode.ino)
        attr.generation = 0                       # inode numbers are never reused
        attr.entry_timeout = self._entry_timeout
        attr.attr_timeout = self._attr_timeout
        attr.st_mode = ModeT(inode.mode)
        attr.st_nlink = inode.nlink
        attr.st_uid = inode.uid
        attr.st_gid = inode.gid
        attr.st_rdev = inode.rdev
        attr.st_size = inode.size
        attr.st_blksize = self._blksize
        attr.st_blocks = (inode.alloc + 511) // 512
        attr.st_atime_ns = inode.atime_ns
        attr.st_mtime_ns = inode.mtime_ns
        attr.st_ctime_ns = inode.ctime_ns
        return attr

    def _file_info(self, fh: HandleId) -> FileInfo:
        return FileInfo(fh=FileHandleT(fh), keep_cache=self._keep_cache)

    async def _admit(self, nbytes: int) -> None:
        """Charge a READ (its size) or WRITE (its length) to the volume's QoS throttle: the
        request may wait (``qos/throttle.py``), never fail."""
        assert self.qos is not None
        stats = self.stats                     # a waiting request is in flight (metrics)
        if stats is not None:
            stats.in_flight += 1
        try:
            await self.qos.admit(nbytes)
        finally:
            if stats is not None:
                stats.in_flight -= 1

    # --- names ---------------------------------------------------------------------------------
    async def lookup(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> EntryAttributes:
        stats = self.stats
        start = time.perf_counter() if stats is not None else 0.0
        try:
            return self.entry(self.vfs.lookup(InodeId(parent_inode), name, _ctx(ctx)))
        except NotFound:
            # The application sees ENOENT, so metrics count it as one.
            self.errors[errno.ENOENT] = self.errors.get(errno.ENOENT, 0) + 1
            negative = EntryAttributes()      # cached "does not exist"
            negative.st_ino = InodeT(0)
            negative.entry_timeout = self._negative_timeout
            return negative
        except GalleonError as exc:
            self.failed(exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        finally:
            if stats is not None:
                stats.ops["lookup"].observe(time.perf_counter() - start)

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        with self._req["forget"]:
            self.vfs.forget([(InodeId(ino), count) for ino, count in inode_list])

    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        with self._req["getattr"]:
            return self.entry(self.vfs.getattr(InodeId(inode)))

    async def setattr(self, inode: InodeT, attr: EntryAttributes, fields: SetattrFields,
                      fh: FileHandleT | None, ctx: RequestContext) -> EntryAttributes:
        with self._req["setattr"]:
            changes = SetAttr(
                mode=attr.st_mode if fields.update_mode else None,
                uid=attr.st_uid if fields.update_uid else None,
                gid=attr.st_gid if fields.update_gid else None,
                size=attr.st_size if fields.update_size else None,
                atime_ns=attr.st_atime_ns if fields.update_atime else None,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
            )
            return self.entry(self.vfs.setattr(InodeId(inode), changes, _ctx(ctx)))

    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        with self._req["readlink"]:
            return self.vfs.readlink(InodeId(inode))

    async def mknod(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        with self._req["mknod"]:
            return self.entry(self.vfs.mknod(InodeId(parent_inode), name, mode, rdev, _ctx(ctx)))

    async def mkdir(self, parent_inode: InodeT, name: FileNameT, mode: ModeT,
                    ctx: RequestContext) -> EntryAttributes:
        with self._req["mkdir"]:
            return self.entry(self.vfs.mkdir(InodeId(parent_inode), name, mode, _ctx(ctx)))

    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        with self._req["unlink"]:
            self.vfs.unlink(InodeId(parent_inode), name, _ctx(ctx))

    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        with self._req["rmdir"]:
            self.vfs.rmdir(InodeId(parent_inode), name, _ctx(ctx))

    async def symlink(self, parent_inode: InodeT, name: FileNameT, target: FileNameT,
                      ctx: RequestContext) -> EntryAttributes:
        with self._req["symlink"]:
            return self.entry(self.vfs.symlink(InodeId(parent_inode), name, target, _ctx(ctx)))

    async def rename(self, parent_inode_old: InodeT, name_old: FileNameT, parent_inode_new: InodeT,
                     name_new: FileNameT, flags: FlagT, ctx: RequestContext) -> None:
        with self._req["rename"]:
            self.vfs.rename(InodeId(parent_inode_old), name_old, InodeId(parent_inode_new),
                            name_new, flags, _ctx(ctx))

    async def link(self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT,
                   ctx: RequestContext) -> EntryAttributes:
        with self._req["link"]:
            return self.entry(self.vfs.link(InodeId(inode), InodeId(new_parent_inode), new_name, _ctx(ctx)))

    async def access(self, inode: InodeT, mode: ModeT, ctx: RequestContext) -> bool:
        with self._req["access"]:
            self.vfs.access(InodeId(inode), mode, _ctx(ctx))
            return True

    # --- files ---------------------------------------------------------------------------------
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        with self._req["open"]:
            writable = (flags & os.O_ACCMODE) != os.O_RDONLY
            return self._file_info(self.vfs.open(InodeId(inode), writable, truncate=bool(flags & os.O_TRUNC)))

    async def create(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        with self._req["create"]:
            inode = self.vfs.create(InodeId(parent_inode), name, mode, _ctx(ctx))
            return self._file_info(HandleId(inode.ino)), self.entry(inode)

    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        if self.qos is not None:
            await self._admit(size)
        with self._req["read"]:
            data = self.vfs.read(HandleId(fh), off, size)
            if self.stats is not None:
                self.stats.read_bytes += len(data)
            return data

    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        if self.qos is not None:
            await self._admit(len(buf))
        with self._req["write"]:
            written = self.vfs.write(HandleId(fh), off, buf)
            if self.stats is not None:
                self.stats.written_bytes += written
            return written

    async def flush(self, fh: FileHandleT) -> None:
        if not self._answer_flush:
            # ENOSYS once, and the kernel sends no more FLUSH requests in this session.
            raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: FileHandleT) -> None:
        with self._req["release"]:
            self.vfs.release(HandleId(fh))

    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        stats = self.stats
        start = time.perf_counter()
        if stats is not None:
            stats.in_flight += 1
        try:
            self.vfs.fence.check()          # cluster mode: no fsync acknowledged once fenced,
            await self.committer.commit()
            self.vfs.fence.check()          # nor one whose sync outlasted the primary term
        except GalleonError as exc:
            self.failed(exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        finally:
            if stats is not None:
                stats.in_flight -= 1
                stats.ops["fsync"].observe(time.perf_counter() - start)

    # --- directories ---------------------------------------------------------------------------
    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        with self._req["opendir"]:
            return FileHandleT(self.vfs.opendir(InodeId(inode)))

    async def readdir(self, fh: FileHandleT, start_id: int, token: ReaddirToken) -> None:
        with self._req["readdir"]:
            for entry in self.vfs.readdir(HandleId(fh), start_id):
                if not pyfuse3.readdir_reply(token, entry.name, self.entry(entry.inode), entry.next_offset):
                    break
                self.vfs.note_readdir_entry(entry)

    async def releasedir(self, fh: FileHandleT) -> None:
        with self._req["releasedir"]:
            pass

    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:
        await self.fsync(fh, datasync)

    # --- xattrs and the volume -----------------------------------------------------------------
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        with self._req["getxattr"]:
            return self.vfs.getxattr(InodeId(inode), name)

    async def setxattr(self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: RequestContext) -> None:
        with self._req["setxattr"]:
            self.vfs.setxattr(InodeId(inode), name, value, _ctx(ctx))

    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> Sequence[XAttrNameT]:
        with self._req["listxattr"]:
            return self.vfs.listxattr(InodeId(inode), _ctx(ctx))

    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        with self._req["removexattr"]:
            self.vfs.removexattr(InodeId(inode), name, _ctx(ctx))

    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        with self._req["statfs"]:
            fs = self.vfs.statfs()
            out = StatvfsData()
            out.f_bsize = fs.block_size
            out.f_frsize = fs.block_size
            out.f_blocks = fs.blocks
            out.f_bfree = fs.blocks_free
            out.f_bavail = fs.blocks_avail if fs.blocks_avail >= 0 else fs.blocks_free
            out.f_files = fs.files
            out.f_ffree = fs.files_free
            out.f_favail = fs.files_free
            out.f_namemax = fs.name_max
            return out
