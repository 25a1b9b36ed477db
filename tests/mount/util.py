"""Helpers for the real-mount POSIX tests: errno checks, syscalls Python lacks, cache control.

The tests compare GalleonFS with what Linux tmpfs and ext4 do. Reads after a write would
mostly be served by the kernel's page cache (the mount uses the writeback cache and
``keep_cache``), so tests that must see the bytes GalleonFS stored either remount or call
``drop_cache`` (fsync, then ``POSIX_FADV_DONTNEED``) before reading.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from galleonfs.testing.mount import MountedVolume
from galleonfs.testing.users import run_as

T = TypeVar("T")

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61}[os.uname().machine]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_SYMLINK_NOFOLLOW = 0x100
_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.utimensat.restype = ctypes.c_int


def utimensat(path: str | Path, atime: tuple[int, int], mtime: tuple[int, int],
              follow: bool = True) -> None:
    """``utimensat(2)`` with raw ``(sec, nsec)`` pairs, so UTIME_NOW and UTIME_OMIT can be sent
    one time at a time (``os.utime`` sets both or neither)."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


def expect_errno(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OSError:
    """Call ``fn`` and require that it fails with exactly ``code``."""
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    got = info.value.errno
    assert got == code, (
        f"{getattr(fn, '__name__', fn)}{args!r}: expected {errno.errorcode[code]}, "
        f"got {errno.errorcode.get(got, got)} ({info.value})"
    )
    return info.value


def renameat2(old: str | Path, new: str | Path, flags: int) -> None:
    """``renameat2(AT_FDCWD, old, AT_FDCWD, new, flags)``; raises OSError like ``os.rename``."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old), None, str(new))


def getdents(fd: int, bufsize: int = 1024) -> list[tuple[int, int, int, bytes]]:
    """One ``getdents64`` call: ``[(ino, d_off, d_type, name), ...]``; [] at the end.

    A small buffer makes the kernel ask the file system again for every few entries, at
    the offset of the last entry returned: exactly what a slow ``readdir`` loop does.
    """
    buf = ctypes.create_string_buffer(bufsize)
    n = _libc.syscall(SYS_GETDENTS64, fd, buf, bufsize)
    if n < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    out = []
    pos = 0
    raw = buf.raw[:n]
    while pos < n:
        ino, off, reclen, dtype = struct.unpack_from("<QqHB", raw, pos)
        name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
        out.append((ino, off, dtype, name))
        pos += reclen
    return out


def drop_cache(path: str | Path) -> None:
    """Write back and drop the page cache of one file, so the next read asks GalleonFS."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def remount(volume: MountedVolume) -> None:
    """Unmount cleanly (the worker must exit 0) and mount again: every cache is gone."""
    # A synchronous round trip first: the RELEASE of a file closed just before is sent
    # asynchronously, and an unmount that overtakes it makes libfuse log an error.
    os.statvfs(volume.mountpoint)
    assert volume.unmount() == 0, volume.log()
    volume.mount()


def df(n: int, frsize: int = 4096) -> int:
    """What statfs shows for ``n`` bytes of data: whole fragments of ``frsize``, rounded up."""
    return -(-n // frsize) * frsize


def used_bytes(volume: MountedVolume) -> int:
    st = os.statvfs(volume.mountpoint)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def wait_used_bytes(volume: MountedVolume, expected: int, timeout_s: float = 5.0) -> int:
    """statfs usage once it equals ``expected`` (or the last value after ``timeout_s``).

    FUSE frees an unlinked inode's data only when the kernel sends FORGET for it, which it
    queues when the inode is evicted; the request can trail the unlink by a moment.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        used = used_bytes(volume)
        if used == expected or time.monotonic() > deadline:
            return used
        time.sleep(0.01)


def as_user(volume: MountedVolume, uid: int, gid: int, fn: Callable[[], T], *,
            groups: list[int] | None = None, umask: int | None = None) -> T:
    """``run_as`` with the mount point as the working directory: ``fn`` uses relative paths.

    The volume lives under pytest's ``tmp_path``, whose parents are 0700 and root's; a user
    could not walk down to the mount point, so the child starts from inside it instead.
    """
    cwd = os.open(volume.mountpoint, os.O_RDONLY | os.O_DIRECTORY)

    def inside() -> T:
        os.fchdir(cwd)
        return fn()

    try:
        return run_as(uid, gid, inside, groups=groups, umask=umask)
    finally:
        os.close(cwd)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
