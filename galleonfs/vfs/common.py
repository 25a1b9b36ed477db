"""What the VFS modules share: who asks (``Ctx``), what a request carries, name rules.

What it must not do: hold state (``nodes.py`` holds the volume's tree, ``handles.py`` what
the kernel holds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import limits
from ..errors import InvalidArgument, NameTooLong
from ..meta.schema import Inode

# <linux/time.h>; Python's time module has no name for it.
CLOCK_REALTIME_COARSE = 5
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.", b"system.")
ZEROS = bytes(limits.block_size_max_bytes)


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
    return data == ZEROS[: len(data)]


def now_ns() -> int:
    """Now, for file times: from the clock the kernel stamps them with (``current_time``:
    the coarse clock, one tick per jiffy, 4 ms at HZ=250), as ext4 and tmpfs stamp them.

    With the writeback cache the kernel owns a regular file's mtime and ctime once it knows
    the file: on each change it compares its own "now" with the times it has, and only a
    time that moved marks the inode dirty and is sent back in a SETATTR. A time stamped
    from the fine clock never equals the kernel's, so every file created and written within
    one tick cost a SETATTR at close, and every unlink, link, rename and setxattr one more
    (``fuse_update_ctime``); stamped from the same clock, those times agree, the first
    SETATTR is not sent at all and the others change nothing (``attrs.py`` then writes no
    record). Measured in docs/benchmarks.md ("Issue 11 — FUSE requests").
    """
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
