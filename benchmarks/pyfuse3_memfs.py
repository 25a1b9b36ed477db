"""A trivial in-memory pyfuse3 file system: the per-request floor ``fuse_requests.py`` measures
GalleonFS against.

    python -m benchmarks.pyfuse3_memfs MOUNTPOINT [--counts-file PATH]

It does as little per request as pyfuse3 allows (a dict lookup, an attribute object kept per
inode and handed back as it is, bytes in a ``bytearray``) and faces the kernel exactly as a
GalleonFS mount does, so that both receive the same requests for the same workload: the
same mount options (``default_permissions``, ``nosuid``, ``nodev``, ``allow_other`` as root),
the same ``Tuning`` (writeback cache, entry/attribute/negative timeouts, ``keep_cache``,
ENOSYS for FLUSH; ``GALLEONFS_TUNING`` changes both alike), the same sysfs settings after
INIT (``fuse/kernel.py``) and the same pyfuse3 task bound. What differs is only the work
behind each request: that difference is what GalleonFS adds.

It counts the requests it handles by name (plain ints, as the worker's metering does) and
writes them as JSON to ``--counts-file`` on SIGUSR1 and at exit: FORGET reaches a server
outside the kernel's request trace points, so this count is the only one of it.

What it must not do: grow semantics of its own (no permissions beyond the kernel's
``default_permissions``, no persistence, no limits): it is a floor, not a file system.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyfuse3
import trio
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

from galleonfs import limits
from galleonfs.fuse.kernel import tune_mount
from galleonfs.fuse.tuning import Tuning
from galleonfs.fuse.worker import WorkerConfig, fuse_options


class Node:
    __slots__ = ("attr", "children", "data", "parent", "target", "xattrs")

    def __init__(self, attr: EntryAttributes, parent: int) -> None:
        self.attr = attr
        self.parent = parent
        self.children: dict[bytes, int] = {}
        self.data = bytearray()
        self.target = b""
        self.xattrs: dict[bytes, bytes] = {}


class MemFs(pyfuse3.Operations):
    supports_dot_lookup = True

    def __init__(self, tuning: Tuning, mountpoint: str) -> None:
        super().__init__()
        self.enable_writeback_cache = tuning.writeback
        self.tuning = tuning
        self.mountpoint = mountpoint
        self.counts: Counter[str] = Counter()
        self.nodes: dict[int, Node] = {}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        root = self._attr(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, 0, 0)
        root.st_nlink = 2
        self.nodes[pyfuse3.ROOT_INODE] = Node(root, pyfuse3.ROOT_INODE)

    def _attr(self, ino: int, mode: int, uid: int, gid: int) -> EntryAttributes:
        attr = EntryAttributes()
        now = time.time_ns()
        attr.st_ino = InodeT(ino)
        attr.st_mode = ModeT(mode)
        attr.st_nlink = 1
        attr.st_uid, attr.st_gid = uid, gid
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = now
        attr.st_blksize = 4096
        attr.entry_timeout = self.tuning.entry_timeout_s
        attr.attr_timeout = self.tuning.attr_timeout_s
        return attr

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def init(self) -> None:
        self.counts["init"] += 1

    # --- names ---------------------------------------------------------------------------------
    async def lookup(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> EntryAttributes:
        self.counts["lookup"] += 1
        parent = self._node(parent_inode)
        if name == b".":
            return parent.attr
        if name == b"..":
            return self._node(parent.parent).attr
        ino = parent.children.get(name)
        if ino is None:
            negative = EntryAttributes()
            negative.st_ino = InodeT(0)
            negative.entry_timeout = self.tuning.negative_timeout_s
            return negative
        return self.nodes[ino].attr

    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        self.counts["forget"] += 1

    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        self.counts["getattr"] += 1
        return self._node(inode).attr

    async def setattr(self, inode: InodeT, attr: EntryAttributes, fields: SetattrFields,
                      fh: FileHandleT | None, ctx: RequestContext) -> EntryAttributes:
        self.counts["setattr"] += 1
        node = self._node(inode)
        mine = node.attr
        if fields.update_size:
            del node.data[attr.st_size:]
            node.data.extend(bytes(attr.st_size - len(node.data)))
            mine.st_size = attr.st_size
        if fields.update_mode:
            mine.st_mode = ModeT(stat.S_IFMT(mine.st_mode) | (attr.st_mode & 0o7777))
        if fields.update_uid:
            mine.st_uid = attr.st_uid
        if fields.update_gid:
            mine.st_gid = attr.st_gid
        if fields.update_atime:
            mine.st_atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            mine.st_mtime_ns = attr.st_mtime_ns
        mine.st_ctime_ns = attr.st_ctime_ns if fields.update_ctime else time.time_ns()
        return mine

    def _new(self, parent_inode: int, name: bytes, mode: int, ctx: RequestContext) -> Node:
        parent = self._node(parent_inode)
        if name in parent.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        ino = self.next_ino
        self.next_ino += 1
        node = Node(self._attr(ino, mode, ctx.uid, ctx.gid), parent_inode)
        self.nodes[ino] = node
        parent.children[name] = ino
        if stat.S_ISDIR(mode):
            node.attr.st_nlink = 2
            parent.attr.st_nlink += 1
        parent.attr.st_mtime_ns = parent.attr.st_ctime_ns = time.time_ns()
        return node

    async def mknod(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        self.counts["mknod"] += 1
        return self._new(parent_inode, name, mode & ~ctx.umask, ctx).attr

    async def mkdir(self, parent_inode: InodeT, name: FileNameT, mode: ModeT,
                    ctx: RequestContext) -> EntryAttributes:
        self.counts["mkdir"] += 1
        return self._new(parent_inode, name, stat.S_IFDIR | (mode & 0o7777), ctx).attr

    async def symlink(self, parent_inode: InodeT, name: FileNameT, target: FileNameT,
                      ctx: RequestContext) -> EntryAttributes:
        self.counts["symlink"] += 1
        node = self._new(parent_inode, name, stat.S_IFLNK | 0o777, ctx)
        node.target = target
        node.attr.st_size = len(target)
        return node.attr

    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        self.counts["readlink"] += 1
        return FileNameT(self._node(inode).target)

    async def link(self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT,
                   ctx: RequestContext) -> EntryAttributes:
        self.counts["link"] += 1
        node = self._node(inode)
        self._node(new_parent_inode).children[new_name] = inode
        node.attr.st_nlink += 1
        return node.attr

    def _remove(self, parent_inode: int, name: bytes) -> Node:
        parent = self._node(parent_inode)
        ino = parent.children.pop(name, None)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        node.attr.st_nlink -= 1
        parent.attr.st_mtime_ns = parent.attr.st_ctime_ns = time.time_ns()
        return node

    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        self.counts["unlink"] += 1
        self._remove(parent_inode, name)

    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        self.counts["rmdir"] += 1
        node = self._node(self._node(parent_inode).children.get(name, 0))
        if node.children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._remove(parent_inode, name)
        self.nodes[parent_inode].attr.st_nlink -= 1

    async def rename(self, parent_inode_old: InodeT, name_old: FileNameT, parent_inode_new: InodeT,
                     name_new: FileNameT, flags: FlagT, ctx: RequestContext) -> None:
        self.counts["rename"] += 1
        ino = self._node(parent_inode_old).children.pop(name_old)
        self._node(parent_inode_new).children[name_new] = ino
        self.nodes[ino].parent = parent_inode_new

    async def access(self, inode: InodeT, mode: ModeT, ctx: RequestContext) -> bool:
        self.counts["access"] += 1
        return True

    # --- files ---------------------------------------------------------------------------------
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        self.counts["open"] += 1
        node = self._node(inode)
        if flags & os.O_TRUNC:
            node.data.clear()
            node.attr.st_size = 0
        return FileInfo(fh=FileHandleT(inode), keep_cache=self.tuning.keep_cache)

    async def create(self, parent_inode: InodeT, name: FileNameT, mode: ModeT, flags: FlagT,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        self.counts["create"] += 1
        node = self._new(parent_inode, name, stat.S_IFREG | (mode & 0o7777), ctx)
        return FileInfo(fh=FileHandleT(node.attr.st_ino), keep_cache=self.tuning.keep_cache), node.attr

    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        self.counts["read"] += 1
        return bytes(self.nodes[fh].data[off:off + size])

    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        self.counts["write"] += 1
        node = self.nodes[fh]
        data = node.data
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off:off + len(buf)] = buf
        node.attr.st_size = len(data)
        node.attr.st_blocks = (len(data) + 511) // 512
        return len(buf)

    async def flush(self, fh: FileHandleT) -> None:
        if not self.tuning.flush:
            raise pyfuse3.FUSEError(errno.ENOSYS)   # as GalleonFS: no more FLUSH requests
        self.counts["flush"] += 1

    async def release(self, fh: FileHandleT) -> None:
        self.counts["release"] += 1

    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        self.counts["fsync"] += 1

    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        self.counts["opendir"] += 1
        return FileHandleT(inode)

    async def readdir(self, fh: FileHandleT, start_id: int, token: ReaddirToken) -> None:
        self.counts["readdir"] += 1
        node = self.nodes[fh]
        names = sorted(node.children)
        for i, name in enumerate(names[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, FileNameT(name), self.nodes[node.children[name]].attr, i):
                break

    async def releasedir(self, fh: FileHandleT) -> None:
        self.counts["releasedir"] += 1

    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:
        self.counts["fsyncdir"] += 1

    # --- xattrs and the volume -----------------------------------------------------------------
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        self.counts["getxattr"] += 1
        try:
            return self._node(inode).xattrs[name]
        except KeyError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None

    async def setxattr(self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: RequestContext) -> None:
        self.counts["setxattr"] += 1
        self._node(inode).xattrs[name] = value

    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> Sequence[XAttrNameT]:
        self.counts["listxattr"] += 1
        return [XAttrNameT(n) for n in self._node(inode).xattrs]

    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        self.counts["removexattr"] += 1
        if self._node(inode).xattrs.pop(name, None) is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        self.counts["statfs"] += 1
        out = StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        out.f_blocks = out.f_bfree = out.f_bavail = 1 << 24
        out.f_files = out.f_ffree = out.f_favail = 1 << 24
        out.f_namemax = 255
        return out

    def write_counts(self, path: Path | None) -> None:
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(self.counts)))
            tmp.replace(path)


async def serve(fs: MemFs, counts_file: Path | None) -> None:
    async with trio.open_nursery() as nursery:
        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGTERM, signal.SIGINT) as received:
                async for signum in received:
                    fs.write_counts(counts_file)
                    if signum != signal.SIGUSR1:
                        pyfuse3.terminate()
                        return

        async def tune() -> None:
            # After INIT, as the worker does (fuse/worker.py): the mount exists only then.
            while not fs.counts["init"]:
                await trio.sleep(0.01)
            tune_mount(fs.mountpoint, fs.tuning)

        nursery.start_soon(signals)
        nursery.start_soon(tune)
        await pyfuse3.main(min_tasks=1, max_tasks=limits.fuse_tasks_max)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--counts-file", type=Path, default=None)
    args = parser.parse_args(argv)
    tuning = Tuning.from_environment()
    mountpoint = os.path.abspath(args.mountpoint)
    fs = MemFs(tuning, mountpoint)
    options = fuse_options(WorkerConfig(volume_dir="memfs", mountpoint=mountpoint))
    pyfuse3.init(fs, mountpoint, options)
    try:
        trio.run(serve, fs, args.counts_file)
    finally:
        pyfuse3.close(unmount=True)
        fs.write_counts(args.counts_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
