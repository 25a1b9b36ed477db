"""``Data``: file contents: open, read, write, truncate, sparse files.

A file's contents are blocks of the volume's block size, named by extents (block number ->
block id); a missing extent is a hole and reads as zeros. A write stores whole blocks: the
blocks at its edges are read, merged and stored again (read-modify-write); an all-zero
block is stored as a hole. Truncate drops the blocks past the new size and cuts the block
it ends in; growing makes a hole.

The write path makes one call into the block store for the new contents (hashing, the
quota check, appending new frames, references: ``BlockStore.write``) and one for the blocks
it replaced (``BlockStore.release``), each index entry read once for the operation.

What it must not do: import pyfuse3 or know errno values (errors are ``GalleonError``), or
change anything before a bad block or a full volume could still refuse the request.
"""

from __future__ import annotations

import stat
import time

from .. import limits
from ..engine.engine import Engine
from ..engine.ops import Operation
from ..errors import FileTooBig, InvalidArgument, IsADirectory
from ..ids import BlockId, HandleId, InodeId
from ..meta import schema
from ..meta.schema import Db, Inode
from ..meta.store import PRESERVED
from .common import ZEROS, is_zero
from .handles import Handles
from .nodes import Nodes
from .orphans import Orphans

Content = bytes | bytearray


class Data:
    def __init__(self, engine: Engine, nodes: Nodes, handles: Handles, orphans: Orphans, *,
                 kernel_times: bool) -> None:
        self._engine = engine
        self._nodes = nodes
        self._handles = handles
        self._orphans = orphans
        # With the kernel's writeback cache the kernel owns a regular file's mtime and ctime
        # on write and truncate-at-open: it keeps its own and sends them in a SETATTR when
        # they change. Stamping our clock as well would store a time the user never saw.
        self.kernel_times = kernel_times
        self._meta = engine.meta
        self._bs = engine.block_size

    # --- open ------------------------------------------------------------------------------------
    def open(self, ino: InodeId, writable: bool, *, truncate: bool = False) -> HandleId:
        """Open ``ino``; ``truncate`` is ``O_TRUNC``.

        libfuse 3 turns on ``atomic_o_trunc``, so the kernel sends no ``setattr`` for
        ``O_TRUNC`` and truncates only its own page cache: emptying the file is ours to do,
        with mtime and ctime updated as ``do_truncate`` would (even when already empty).
        """
        inode = self._nodes.inode(ino)
        if stat.S_ISDIR(inode.mode) and writable:
            raise IsADirectory("cannot open a directory for writing")
        truncate = truncate and stat.S_ISREG(inode.mode)
        if writable or truncate:
            self._nodes.admit(ino)
        if truncate:
            self.check_truncate(inode, 0)
            with self._engine.operation() as op:
                self.truncate(inode, 0, op)
                if not self.kernel_times:
                    inode.mtime_ns = inode.ctime_ns = time.time_ns()
                self._nodes.put(inode)
        return self._handles.open(ino)

    def release(self, fh: HandleId) -> None:
        if self._handles.release(fh):
            self._orphans.maybe_purge(Handles.inode_of(fh))

    # --- read ------------------------------------------------------------------------------------
    def read(self, fh: HandleId, offset: int, size: int) -> bytes:
        ino = Handles.inode_of(fh)
        inode = self._nodes.inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise IsADirectory("cannot read a directory")
        if offset < 0 or size < 0:
            raise InvalidArgument("negative offset or size")
        end = min(offset + size, inode.size)
        if offset >= end:
            return b""
        bs = self._bs
        first, last = offset // bs, (end - 1) // bs
        extents = self._nodes.extents(ino, first, last)
        datas = self._engine.blocks.read(list(extents.values())) if extents else []
        by_blk = dict(zip(extents, datas, strict=True))
        parts: list[bytes | memoryview] = []
        for blk in range(first, last + 1):
            lo = max(offset, blk * bs) - blk * bs
            hi = min(end, (blk + 1) * bs) - blk * bs
            data = by_blk.get(blk)
            if data is None:
                parts.append(ZEROS[: hi - lo])
            elif lo == 0 and hi == len(data):
                parts.append(data)
            else:
                piece = memoryview(data)[lo:hi]
                parts.append(piece)
                if len(piece) < hi - lo:
                    parts.append(ZEROS[: hi - lo - len(piece)])
        self._nodes.note_access(inode)
        return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)

    # --- write -----------------------------------------------------------------------------------
    def write(self, fh: HandleId, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; whole blocks are stored, edges read-modify-written."""
        ino = Handles.inode_of(fh)
        self._nodes.admit(ino)
        n = len(data)
        if n == 0:
            return 0
        if offset < 0:
            raise InvalidArgument("negative offset")
        end = offset + n
        if end > limits.file_size_max_bytes:
            raise FileTooBig("file size limit exceeded")
        inode = self._nodes.inode(ino)
        if not stat.S_ISREG(inode.mode):
            raise InvalidArgument("not a regular file")
        first, last = offset // self._bs, (end - 1) // self._bs
        old = self._nodes.extents(ino, first, last)
        contents = self._new_contents(offset, memoryview(data), first, last, old)
        with self._engine.operation():
            ids = self._engine.blocks.write(contents, old.values())
            self._set_extents(inode, first, contents, ids, old)
            if end > inode.size:
                inode.size = end
            if not self.kernel_times:
                inode.mtime_ns = inode.ctime_ns = time.time_ns()
            self._nodes.put(inode)
        return n

    def _set_extents(self, inode: Inode, first: int, contents: list[Content | None],
                     ids: list[BlockId | None], old: dict[int, BlockId]) -> None:
        """Point the blocks from ``first`` on at their new ids (a hole: no extent); the
        replaced blocks go back to the store (a snapshot may keep its reference)."""
        meta, ino = self._meta, inode.ino
        dropped: list[tuple[BlockId, bool]] = []
        for blk, (content, bid) in enumerate(zip(contents, ids, strict=True), first):
            key = schema.extent_key(ino, blk)
            old_bid = old.get(blk)
            if content is not None:
                assert bid is not None
                kept = meta.put(Db.EXTENTS, key, bid)
                inode.alloc += len(content)
            elif old_bid is not None:
                kept = meta.delete(Db.EXTENTS, key) == PRESERVED
            if old_bid is not None:
                dropped.append((old_bid, kept))
        if dropped:
            inode.alloc -= self._engine.blocks.release(dropped)

    def _new_contents(self, offset: int, view: memoryview, first: int, last: int,
                      old: dict[int, BlockId]) -> list[Content | None]:
        """The new content of each block in ``[first, last]``; None for an all-zero block."""
        bs = self._bs
        end = offset + len(view)
        edges = sorted({first, last} & old.keys())
        partial = [b for b in edges if offset > b * bs or end < (b + 1) * bs]
        old_data = dict(zip(partial, self._engine.blocks.read([old[b] for b in partial]), strict=True))
        contents: list[Content | None] = []
        for blk in range(first, last + 1):
            base = blk * bs
            lo, hi = max(offset, base), min(end, base + bs)
            piece = view[lo - offset:hi - offset]
            content: Content
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

    # --- truncate --------------------------------------------------------------------------------
    def check_truncate(self, inode: Inode, size: int) -> None:
        """Refuse a truncate to ``size`` before anything changes (a bad block included)."""
        if stat.S_ISDIR(inode.mode):
            raise IsADirectory("cannot truncate a directory")
        if not stat.S_ISREG(inode.mode):
            raise InvalidArgument("only regular files can be truncated")
        if size < 0:
            raise InvalidArgument("negative file size")
        if size > limits.file_size_max_bytes:
            raise FileTooBig("file size limit exceeded")
        if size < inode.size and size % self._bs:
            found = self._meta.get(Db.EXTENTS, schema.extent_key(inode.ino, size // self._bs))
            if found is not None:
                self._engine.blocks.read([BlockId(found)])   # a bad block fails here, before any change

    def truncate(self, inode: Inode, size: int, op: Operation) -> None:
        """Set the size; drop whole blocks past it and cut the block it ends in."""
        if size >= inode.size:
            inode.size = size                      # growing makes a hole: nothing to store
            return
        bs = self._bs
        cut_blk = size // bs
        if size % bs:
            key = schema.extent_key(inode.ino, cut_blk)
            bid = self._meta.get(Db.EXTENTS, key)
            if bid is not None:
                (old,) = self._engine.blocks.read([BlockId(bid)])
                keep = old[: size % bs]
                self._replace_block(inode, cut_blk, BlockId(bid), None if is_zero(keep) else keep)
            cut_blk += 1
        inode.size = size
        self._orphans.truncate_extents(inode, cut_blk, op)

    def _replace_block(self, inode: Inode, blk: int, old: BlockId, data: bytes | None) -> None:
        key = schema.extent_key(inode.ino, blk)
        blocks = self._engine.blocks
        if data is not None:
            (new,) = blocks.store([data])
            kept = self._meta.put(Db.EXTENTS, key, new)
            inode.alloc += len(data)
        else:
            kept = self._meta.delete(Db.EXTENTS, key) == PRESERVED
        inode.alloc -= blocks.release([(old, kept)])
