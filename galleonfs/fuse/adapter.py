"""The pyfuse3 adapter: a protocol translator, nothing more (the borg habit).

Each FUSE operation converts arguments, calls the VFS and converts the answer. Errors are
translated at exactly one place (``_op``): a ``GalleonError`` becomes
``pyfuse3.FUSEError(errno)``; anything else is a bug, propagates, ends the mount and the
worker marks the volume for check (DESIGN §5).

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
import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from ..engine.committer import Committer
from ..errors import GalleonError, NotFound
from ..meta.schema import Inode
from ..metrics.volume import VolumeStats
from ..qos.throttle import Throttle
from ..vfs.vfs import Ctx, SetAttr, Vfs
from .tuning import Tuning

T = TypeVar("T")


def _ctx(ctx: Any) -> Ctx:
    return Ctx(ctx.uid, ctx.gid, ctx.pid, ctx.umask)


def _op(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Make a synchronous handler a pyfuse3 handler; translate errors at this one place.

    With metrics on, also count the request and its latency (``metrics/volume.py``: plain
    ints, ~0.5 µs against the ~76 µs floor of a request).
    """
    name = fn.__name__

    @functools.wraps(fn)
    async def handler(self: FuseOps, *args: Any) -> T:
        stats = self.stats
        start = time.perf_counter() if stats is not None else 0.0
        try:
            return fn(self, *args)
        except GalleonError as exc:
            self.failed(exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        finally:
            if stats is not None:
                stats.ops[name].observe(time.perf_counter() - start)

    return handler


# Operations counted by name in metrics: every handler (FSYNCDIR counts as fsync).
OPS = ("lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink", "rmdir",
       "symlink", "rename", "link", "access", "open", "create", "read", "write", "release",
       "fsync", "opendir", "readdir", "releasedir", "getxattr", "setxattr",
       "listxattr", "removexattr", "statfs")


def _charged(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Charge a READ (its size) or WRITE (its length) to the volume's QoS throttle first.

    One attribute check when the volume has no rates; otherwise the request may wait
    (``qos/throttle.py``), never fail.
    """

    @functools.wraps(handler)
    async def charged(self: FuseOps, fh: int, off: int, arg: Any) -> T:
        if self.qos is not None:
            stats = self.stats                 # a waiting request is in flight (metrics)
            if stats is not None:
                stats.in_flight += 1
            try:
                await self.qos.admit(arg if isinstance(arg, int) else len(arg))
            finally:
                if stats is not None:
                    stats.in_flight -= 1
        return await handler(self, fh, off, arg)

    return charged


class FuseOps(pyfuse3.Operations):  # type: ignore[misc]
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
        if tuning.flush:
            self.flush = self._flush_noop          # measured: one round trip per close
        self._blksize = vfs.bs
        self.errors: dict[int, int] = {}
        self.qos: Throttle | None = None          # set by the worker while QoS rates apply
        self.stats: VolumeStats | None = None     # set by the worker when metrics are on

    async def _flush_noop(self, fh: int) -> None:
        pass

    def snapshots_changed(self, name: str) -> None:
        """A snapshot appeared or went: drop what the kernel cached about its name."""
        from ..vfs.views import SNAPDIR_INO

        self.vfs.snapshots_changed()
        # Async: invalidate_entry would block the loop until the kernel answers.
        pyfuse3.invalidate_entry_async(SNAPDIR_INO, name.encode(), ignore_enoent=True)

    def init(self) -> None:
        if self._on_init is not None:
            self._on_init()

    def failed(self, exc: GalleonError) -> None:
        # An error must not leave an operation half done: validation comes first.
        assert not self.vfs.engine.in_op(), f"operation failed half-way: {exc!r}"
        self.errors[exc.errno] = self.errors.get(exc.errno, 0) + 1

    def entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode.ino
        attr.generation = 0                       # inode numbers are never reused
        attr.entry_timeout = self._entry_timeout
        attr.attr_timeout = self._attr_timeout
        attr.st_mode = inode.mode
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

    # --- names ---------------------------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        stats = self.stats
        start = time.perf_counter() if stats is not None else 0.0
        try:
            return self.entry(self.vfs.lookup(parent_inode, name, _ctx(ctx)))
        except NotFound:
            # The application sees ENOENT, so metrics count it as one.
            self.errors[errno.ENOENT] = self.errors.get(errno.ENOENT, 0) + 1
            negative = pyfuse3.EntryAttributes()      # cached "does not exist"
            negative.st_ino = 0
            negative.entry_timeout = self._negative_timeout
            return negative
        except GalleonError as exc:
            self.failed(exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        finally:
            if stats is not None:
                stats.ops["lookup"].observe(time.perf_counter() - start)

    @_op
    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        self.vfs.forget(inode_list)

    @_op
    def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.entry(self.vfs.getattr(inode))

    @_op
    def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        changes = SetAttr(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        return self.entry(self.vfs.setattr(inode, changes, _ctx(ctx)))

    @_op
    def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.vfs.readlink(inode)

    @_op
    def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.entry(self.vfs.mknod(parent_inode, name, mode, rdev, _ctx(ctx)))

    @_op
    def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.entry(self.vfs.mkdir(parent_inode, name, mode, _ctx(ctx)))

    @_op
    def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.vfs.unlink(parent_inode, name, _ctx(ctx))

    @_op
    def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.vfs.rmdir(parent_inode, name, _ctx(ctx))

    @_op
    def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.entry(self.vfs.symlink(parent_inode, name, target, _ctx(ctx)))

    @_op
    def rename(self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes,
               flags: int, ctx: Any) -> None:
        self.vfs.rename(parent_old, name_old, parent_new, name_new, flags, _ctx(ctx))

    @_op
    def link(self, inode: int, new_parent: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.entry(self.vfs.link(inode, new_parent, new_name, _ctx(ctx)))

    @_op
    def access(self, inode: int, mode: int, ctx: Any) -> None:
        self.vfs.access(inode, mode, _ctx(ctx))

    # --- files ---------------------------------------------------------------------------------
    @_op
    def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        fh = self.vfs.open(inode, writable, truncate=bool(flags & os.O_TRUNC))
        return pyfuse3.FileInfo(fh=fh, keep_cache=self._keep_cache)

    @_op
    def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        inode = self.vfs.create(parent_inode, name, mode, _ctx(ctx))
        return pyfuse3.FileInfo(fh=inode.ino, keep_cache=self._keep_cache), self.entry(inode)

    @_charged
    @_op
    def read(self, fh: int, off: int, size: int) -> bytes:
        data = self.vfs.read(fh, off, size)
        if self.stats is not None:
            self.stats.read_bytes += len(data)
        return data

    @_charged
    @_op
    def write(self, fh: int, off: int, buf: bytes) -> int:
        written = self.vfs.write(fh, off, buf)
        if self.stats is not None:
            self.stats.written_bytes += written
        return written

    @_op
    def release(self, fh: int) -> None:
        self.vfs.release(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        stats = self.stats
        if stats is not None:
            start = time.perf_counter()
            stats.in_flight += 1
        try:
            await self.committer.commit()
        except GalleonError as exc:
            self.failed(exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        finally:
            if stats is not None:
                stats.in_flight -= 1
                stats.ops["fsync"].observe(time.perf_counter() - start)

    # --- directories ---------------------------------------------------------------------------
    @_op
    def opendir(self, inode: int, ctx: Any) -> int:
        return self.vfs.opendir(inode)

    @_op
    def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for entry in self.vfs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, entry.name, self.entry(entry.inode), entry.next_offset):
                break
            self.vfs.note_readdir_entry(entry)

    @_op
    def releasedir(self, fh: int) -> None:
        pass

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.fsync(fh, datasync)

    # --- xattrs and the volume -----------------------------------------------------------------
    @_op
    def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return self.vfs.getxattr(inode, name)

    @_op
    def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.vfs.setxattr(inode, name, value, _ctx(ctx))

    @_op
    def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return self.vfs.listxattr(inode, _ctx(ctx))

    @_op
    def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.vfs.removexattr(inode, name, _ctx(ctx))

    @_op
    def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        fs = self.vfs.statfs()
        out = pyfuse3.StatvfsData()
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
