"""``Quota``: what a volume may hold, and what ``df`` shows of it.

Bytes: the volume's size caps the raw bytes of its stored blocks, each counted once however
many files (or snapshots) share it; zero blocks are holes and cost nothing. The check runs
before a write stores anything (``BlockStore.write``), so a write that does not fit is
refused whole with ENOSPC. Inodes: one per ``limits.inodes_per_byte_divisor`` bytes of
size, at least ``limits.inodes_min``.

What it must not do: count anything itself (the engine's super record does), or let a
full host disk show as free space.
"""

from __future__ import annotations

from .. import limits
from ..engine.engine import Engine
from ..errors import NoSpace
from .common import StatFs


class Quota:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def files_max(self) -> int:
        return limits.inodes_max(self._engine.sb.size)

    def admit_inode(self) -> None:
        """Refuse a new inode when the volume has as many as it may."""
        if self._engine.sb.inode_count >= self.files_max():
            raise NoSpace("no free inodes left on the volume")

    def statfs(self) -> StatFs:
        """The volume's size and what is left of it. What writers can still use is never
        more than the host disk under it has (an overcommitted node), and nothing while
        that disk is full: ``df`` shows it in Avail, Used stays the volume's own."""
        engine = self._engine
        frsize = 4096
        size, used = engine.sb.size, engine.sb.used_bytes
        free = max(0, size - used)
        avail = free
        if not engine.read_only:
            avail = 0 if engine.space.full else min(free, engine.space.free_bytes())
        files = self.files_max()
        return StatFs(
            block_size=frsize, blocks=size // frsize,
            blocks_free=free // frsize, files=files,
            files_free=max(0, files - engine.sb.inode_count),
            name_max=limits.name_max_bytes, blocks_avail=avail // frsize,
        )
