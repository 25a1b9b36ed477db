"""``rename``: every case rename(2) and renameat2(2) have, as Linux tmpfs and ext4 do them.

A plain rename replaces a target of the same kind (a file by a file, a directory by an empty
directory), refuses to move a directory into itself, and keeps the replaced name's readdir
cookie, so a reader resuming a listing sees the name once. ``RENAME_NOREPLACE`` refuses an
existing target; ``RENAME_EXCHANGE`` swaps two names (both keep their places). Renaming a
name onto another link of the same file does nothing, as POSIX says.

What it must not do: change anything before every check passed (one record, or nothing).
"""

from __future__ import annotations

import stat
import time

from .. import limits
from ..engine.engine import Engine
from ..engine.ops import Operation
from ..errors import (
    AlreadyExists,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    ReadOnly,
    TooManyLinks,
)
from ..ids import InodeId
from ..meta import schema
from ..meta.schema import Db, Inode
from .common import RENAME_EXCHANGE, RENAME_NOREPLACE, check_name
from .nodes import Nodes
from .orphans import Orphans


class Renamer:
    def __init__(self, engine: Engine, nodes: Nodes, orphans: Orphans) -> None:
        self._engine = engine
        self._nodes = nodes
        self._orphans = orphans

    def rename(self, old_parent: InodeId, old_name: bytes, new_parent: InodeId, new_name: bytes,
               flags: int) -> None:
        nodes = self._nodes
        nodes.admit(old_parent, new_parent)
        nodes.not_reserved(old_parent, old_name, ReadOnly)
        nodes.not_reserved(new_parent, new_name, ReadOnly)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise InvalidArgument(f"unsupported rename flags {flags:#x}")
        check_name(new_name)
        src_dir = nodes.dir(old_parent)
        dst_dir = src_dir if new_parent == old_parent else nodes.dir(new_parent)
        src, src_cookie = nodes.existing(old_parent, old_name)
        found = nodes.child(new_parent, new_name)
        dst = nodes.inode(found[0]) if found is not None else None
        if flags & RENAME_EXCHANGE:
            if dst is None or found is None:
                raise NotFound(f"{new_name!r} does not exist; RENAME_EXCHANGE needs both names")
            self._check_move(src, new_parent)
            self._check_move(dst, old_parent)
            if src.ino != dst.ino:
                with self._engine.operation():
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
        with self._engine.operation() as op:
            nodes.remove_entry(old_parent, old_name, src_cookie, src.ino)
            reuse_cookie = None
            if dst is not None and found is not None:
                reuse_cookie = found[1]             # the name keeps its place in readdir
                self._drop_target(dst_dir, new_name, dst, now, op)
            if stat.S_ISDIR(src.mode) and new_parent != old_parent:
                src_dir.nlink -= 1
                dst_dir.nlink += 1
                src.parent = new_parent
            nodes.add_entry(dst_dir, new_name, src.ino, reuse_cookie)
            self._stamp(src, src_dir, dst_dir, now)
        self._orphans.purge_deferred()

    def _drop_target(self, dst_dir: Inode, name: bytes, dst: Inode, now: int, op: Operation) -> None:
        """The replaced target loses its name (its entry is overwritten by the new one)."""
        meta = self._nodes.meta
        meta.delete(Db.DIRENTS, schema.dirent_key(dst_dir.ino, name))
        meta.delete(Db.LINKS, schema.link_key(dst.ino, dst_dir.ino, name))
        if stat.S_ISDIR(dst.mode):
            dst_dir.nlink -= 1
            dst.nlink = 0
            dst.ctime_ns = now
            self._nodes.put(dst)
            self._orphans.orphan_or_purge(dst, op)
        else:
            self._orphans.drop_link(dst, now, op)

    def _stamp(self, src: Inode, src_dir: Inode, dst_dir: Inode, now: int) -> None:
        nodes = self._nodes
        src.ctime_ns = nodes.file_time(src.mode, now)
        nodes.put(src)
        nodes.touch(src_dir, now)
        nodes.touch(dst_dir, now)
        nodes.put(src_dir)
        if dst_dir is not src_dir:
            nodes.put(dst_dir)

    def _check_move(self, inode: Inode, new_parent: int) -> None:
        if stat.S_ISDIR(inode.mode) and self._nodes.is_ancestor(inode.ino, new_parent):
            raise InvalidArgument("cannot move a directory into itself or its own subdirectory")

    def _check_replace(self, src: Inode, dst: Inode) -> None:
        if stat.S_ISDIR(src.mode) and not stat.S_ISDIR(dst.mode):
            raise NotADirectory("cannot replace a non-directory with a directory")
        if not stat.S_ISDIR(src.mode) and stat.S_ISDIR(dst.mode):
            raise IsADirectory("cannot replace a directory with a non-directory")
        if stat.S_ISDIR(dst.mode) and not self._nodes.is_empty_dir(dst.ino):
            raise NotEmpty("the target directory is not empty")

    def _exchange(self, src_dir: Inode, src_name: bytes, src: Inode, src_cookie: int,
                  dst_dir: Inode, dst_name: bytes, dst: Inode, dst_cookie: int) -> None:
        """RENAME_EXCHANGE: swap what the two names point to; both keep their readdir place."""
        now = time.time_ns()
        self._point(src_dir, src_name, src_cookie, dst.ino, was=src.ino)
        self._point(dst_dir, dst_name, dst_cookie, src.ino, was=dst.ino)
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
        nodes = self._nodes
        src.ctime_ns, dst.ctime_ns = nodes.file_time(src.mode, now), nodes.file_time(dst.mode, now)
        nodes.put(src)
        nodes.put(dst)
        nodes.touch(src_dir, now)
        nodes.put(src_dir)
        if dst_dir.ino != src_dir.ino:
            nodes.touch(dst_dir, now)
            nodes.put(dst_dir)

    def _point(self, directory: Inode, name: bytes, cookie: int, child: int, *, was: int) -> None:
        """Make ``name`` in ``directory`` name ``child`` instead of ``was``, in the same place."""
        meta = self._nodes.meta
        meta.put(Db.DIRENTS, schema.dirent_key(directory.ino, name), schema.encode_dirent(child, cookie))
        meta.put(Db.DIRINDEX, schema.dirindex_key(directory.ino, cookie), schema.encode_dirindex(child, name))
        meta.delete(Db.LINKS, schema.link_key(was, directory.ino, name))
        meta.put(Db.LINKS, schema.link_key(child, directory.ino, name), b"")
