"""The storage layer: every byte the engine writes to the volume directory goes here.

Role: a thin, explicit surface over files (append, positional read, data sync, truncate)
and directories (list, unlink, sync), below the engine and the key files of ``crypto``
(DESIGN §5: engine -> meta, crypto, storage). The engine never calls ``open()`` or
``os.write()`` on its journal or data segments itself, so a test double
(``galleonfs.testing.faulty``) can record what was synced and cut the power: discard
everything that was not.

LMDB does its own I/O. Its guarantee is that after a crash the store holds the last
committed transaction; ``meta_committed`` tells the storage layer when that happened, so
the double can model it.

What it must not do: buffer in user space (DESIGN §3: the journal is appended with a plain
``write()``), or retry silently. An ``OSError`` propagates; ``no_space`` tells the callers
which ones mean a full host disk (``engine/space.py`` decides what to do about it). It
imports nothing of GalleonFS: it is the floor the engine and crypto stand on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Sequence

FALLOC_FL_KEEP_SIZE = 0x01      # linux/falloc.h: allocate without changing the file size

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def no_space(exc: BaseException) -> bool:
    """True if ``exc`` says the host file system is out of space (or the user's quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def fallocate(fd: int, offset: int, length: int, *, keep_size: bool = False) -> bool:
    """Allocate disk blocks for ``[offset, offset + length)`` of ``fd`` now, so that writing
    there later cannot fail for lack of space. False if the file system cannot (NFS v3,
    some FUSE file systems); ``OSError`` (ENOSPC ...) if it can but has no room.

    ``keep_size`` allocates past the end without changing the size (fallocate(2)'s
    ``FALLOC_FL_KEEP_SIZE``): an append-only file keeps reading as long as what was
    written. ``os.posix_fallocate`` has no such flag, hence the libc call.
    """
    mode = FALLOC_FL_KEEP_SIZE if keep_size else 0
    if _libc.fallocate(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries durable (a file created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still allocate on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_bytes(path: str) -> int:
    """Bytes allocated to every file under ``path`` (what ``du`` says; files that vanish
    while it walks are skipped)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def _write_all(fd: int, bufs: Sequence[bytes | bytearray | memoryview], offset: int) -> int:
    """Write ``bufs`` (at most IOV_MAX of them) at ``offset``; return the offset past them."""
    total = sum(len(b) for b in bufs)
    done = os.pwritev(fd, bufs, offset) if len(bufs) > 1 else os.pwrite(fd, bufs[0], offset)
    while done < total:       # short writes are rare (signals, full disk); finish them
        rest = b"".join(bytes(b) for b in bufs)[done:]
        n = os.pwrite(fd, rest, offset + done)
        if n == 0:
            raise OSError(28, "short write")
        done += n
    return offset + total


class File:
    """An open file of the volume directory: append-only writes, positional reads."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def append(self, bufs: Sequence[bytes | bytearray | memoryview]) -> int:
        """Write ``bufs`` at the end of the file; return the offset of the first byte.
        One pwritev takes at most IOV_MAX buffers (EINVAL beyond: 512 frames of two
        buffers each), so a longer list is written in runs of that many."""
        offset = self.size
        end = offset
        for start in range(0, len(bufs), IOV_MAX):
            end = _write_all(self.fd, bufs[start:start + IOV_MAX], end)
        self.size = end
        return offset

    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (inside the file, e.g. into zeros written ahead, or
        past its end); the size grows if the write ends past it."""
        view = memoryview(data)
        done = 0
        while done < len(data):
            n = os.pwrite(self.fd, view[done:], offset + done)
            if n == 0:
                raise OSError(28, "short write")
            done += n
        self.size = max(self.size, offset + len(data))

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def sync(self) -> None:
        """Make every byte appended so far durable (safe to call from a worker thread)."""
        os.fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def undo_append(self, size: int) -> None:
        """A failed append may have left part of its bytes at ``size`` and after: cut them
        off (that frees their blocks; it never needs space). Best effort: the bytes past
        ``size`` are garbage nobody points at, so a failure here loses nothing."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, size)
        self.size = size

    def preallocate(self, length: int) -> bool:
        """Allocate ``length`` bytes past the end (the size stays): appends into them cannot
        fail for lack of space. See ``fallocate``."""
        return fallocate(self.fd, self.size, length, keep_size=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Storage:
    """The real thing: the local filesystem."""

    def open_file(self, path: str, *, create: bool = False, writable: bool = True) -> File:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags, 0o600)
        return File(path, fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def sync_dir(self, path: str) -> None:
        fsync_dir(path)

    def write_file_durably(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically and durably (write, sync, rename)."""
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")

    def read_small_file(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(64 * 1024)
        except FileNotFoundError:
            return None

    def meta_committed(self, volume_dir: str) -> None:
        """LMDB just committed durably. The real disk needs nothing; doubles take a copy."""

    def lock(self, path: str) -> int | None:
        """Take the volume's exclusive lock; return its fd, or None if another process has it.

        ``flock`` locks die with their process, so ``kill -9`` of a worker frees the volume.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def unlock(self, fd: int) -> None:
        os.close(fd)
