"""Linux's file-descriptor mount API and ``openat2``, through ctypes (Python has neither).

The building blocks of ``mounts.py``: resolve a path without following symlinks
(``openat2`` with ``RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH``, or an
``O_NOFOLLOW`` walk where the kernel lacks ``openat2``), clone a directory into a detached
bind mount (``open_tree``), set its flags (``mount_setattr``), attach it to a directory
given by fd (``move_mount``), read a mount's ids (``statx``) and unmount through an fd.

No library on PyPI wraps these (the one path-resolution binding needs a Rust-built
libpathrs that Debian does not ship, and resolves symlinks inside a root rather than
refusing them), and each is one syscall.

The new-style syscalls (``open_tree`` 428, ``move_mount`` 429, ``openat2`` 437,
``mount_setattr`` 442) have the same number on every architecture since Linux 5.1's table
unification; ``statx`` and ``umount2`` go through glibc's wrappers.

What it must not do: decide anything. Policy (roots, emptiness, which mount is ours) is
``mounts.py``'s; every function here is one syscall that raises ``OSError`` with its errno.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
# What every lookup of a path that someone else may write goes through: no symlink of
# any kind, and never above the directory it starts from.
RESOLVE_STRICT = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH

AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_STATX_DONT_SYNC = 0x4000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
STATX_MNT_ID = 0x1000
STATX_MNT_ID_UNIQUE = 0x4000        # Linux 6.8: 64-bit ids that are never reused
STATX_ATTR_MOUNT_ROOT = 0x2000

_STATX_SIZE = 256
_STATX_MASK_OFFSET = 0
_STATX_ATTRIBUTES_OFFSET = 8
_STATX_MNT_ID_OFFSET = 144


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _syscall(number: int, what: str, *args: object) -> int:
    return _check(int(_libc.syscall(ctypes.c_long(number), *args)), what)


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """``openat2(2)``; raises ``OSError`` (``ENOSYS`` before Linux 5.6)."""
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode, resolve)
    return _syscall(SYS_OPENAT2, "openat2", ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                    ctypes.c_char_p(how), ctypes.c_size_t(len(how)))


def walk(dir_fd: int, path: str, flags: int, *, no_xdev: bool = False, use_openat2: bool = True) -> int:
    """Open ``path`` beneath ``dir_fd`` following no symlink and no ``..`` above it.

    A symlink anywhere gives ``ELOOP``, an escape ``EXDEV``. ``openat2`` does it in one
    call and atomically; without it (``ENOSYS``, or ``use_openat2=False`` in tests) each
    component is opened with ``O_NOFOLLOW`` from the fd of the one before, which is as
    safe, only slower.
    """
    resolve = RESOLVE_STRICT | (RESOLVE_NO_XDEV if no_xdev else 0)
    if use_openat2:
        try:
            return openat2(dir_fd, path, flags, resolve)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
    return _walk_nofollow(dir_fd, path, flags, no_xdev=no_xdev)


def _walk_nofollow(dir_fd: int, path: str, flags: int, *, no_xdev: bool) -> int:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise OSError(errno.EXDEV, f"{path}: leaves the directory it is resolved in")
    start_mount = mount_ids(dir_fd).mount_id if no_xdev else 0
    current = os.dup(dir_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                fd = os.open(part, (flags if last else os.O_PATH | os.O_DIRECTORY) | os.O_NOFOLLOW
                             | os.O_CLOEXEC, dir_fd=current)
            except OSError as exc:
                # O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR; say what openat2 says.
                if exc.errno in (errno.ENOTDIR, errno.ELOOP) and is_symlink(current, part):
                    raise OSError(errno.ELOOP, f"{part}: is a symbolic link") from None
                raise
            os.close(current)
            current = fd
            if no_xdev and mount_ids(current).mount_id != start_mount:
                raise OSError(errno.EXDEV, f"{part}: crosses into another mount")
        if not parts:
            fd = os.open(".", flags | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = fd
        result, current = current, -1
        return result
    finally:
        if current >= 0:
            os.close(current)


def is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def open_tree_clone(fd: int) -> int:
    """A detached bind mount of the directory ``fd`` (not recursive, like ``mount --bind``)."""
    return _syscall(SYS_OPEN_TREE, "open_tree", ctypes.c_int(fd), ctypes.c_char_p(b""),
                    ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC | AT_EMPTY_PATH))


def mount_setattr(fd: int, attr_set: int) -> None:
    """Set mount flags (``MOUNT_ATTR_*``) on the mount ``fd`` refers to (Linux 5.12)."""
    attr = struct.pack("QQQQ", attr_set, 0, 0, 0)
    _syscall(SYS_MOUNT_SETATTR, "mount_setattr", ctypes.c_int(fd), ctypes.c_char_p(b""),
             ctypes.c_uint(AT_EMPTY_PATH), ctypes.c_char_p(attr), ctypes.c_size_t(len(attr)))


def move_mount(from_fd: int, to_fd: int) -> None:
    """Attach the detached mount ``from_fd`` on the directory ``to_fd`` (no path lookup)."""
    _syscall(SYS_MOVE_MOUNT, "move_mount", ctypes.c_int(from_fd), ctypes.c_char_p(b""),
             ctypes.c_int(to_fd), ctypes.c_char_p(b""),
             ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


@dataclass(frozen=True)
class MountIds:
    mount_id: int          # as in /proc/self/mountinfo; reused once the mount is gone
    unique_id: int         # never reused (Linux 6.8); 0 where the kernel lacks it
    is_mount_root: bool    # the fd is the root of its mount (something is mounted there)


def _statx(fd: int, mask: int) -> tuple[int, int, int]:
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    # AT_STATX_DONT_SYNC: never ask a FUSE server (a dead worker's mount answers ENOTCONN;
    # a live one would make this wait for it). The ids and the attribute come from the VFS.
    _check(int(_libc.statx(ctypes.c_int(fd), ctypes.c_char_p(b""),
                           ctypes.c_int(AT_EMPTY_PATH | AT_STATX_DONT_SYNC), ctypes.c_uint(mask), buf)),
           "statx")
    got, = struct.unpack_from("I", buf, _STATX_MASK_OFFSET)
    attributes, = struct.unpack_from("Q", buf, _STATX_ATTRIBUTES_OFFSET)
    mnt_id, = struct.unpack_from("Q", buf, _STATX_MNT_ID_OFFSET)
    return got, attributes, mnt_id


def mount_ids(fd: int) -> MountIds:
    """The ids of the mount ``fd`` is on, and whether ``fd`` is that mount's root."""
    got, attributes, mnt_id = _statx(fd, STATX_MNT_ID)
    if not got & STATX_MNT_ID:
        raise OSError(errno.ENOSYS, "statx: this kernel does not report mount ids (Linux 5.8 needed)")
    got_unique, _, unique = _statx(fd, STATX_MNT_ID_UNIQUE)
    return MountIds(mnt_id, unique if got_unique & STATX_MNT_ID_UNIQUE else 0,
                    bool(attributes & STATX_ATTR_MOUNT_ROOT))


def fd_path(fd: int) -> str:
    """Where ``fd`` is now, as the kernel names it (no symlinks in it)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def umount_mount(fd: int) -> None:
    """Detach the mount whose root ``fd`` is (lazily: an fd on the mount keeps it busy, so
    only ``MNT_DETACH`` can act on exactly this mount)."""
    _check(int(_libc.umount2(ctypes.c_char_p(f"/proc/self/fd/{fd}".encode()), ctypes.c_int(MNT_DETACH))),
           "umount2")


def umount_at(parent_fd: int, name: str) -> None:
    """Unmount what is mounted on ``name`` in the directory ``parent_fd``, refusing when it
    is busy. ``UMOUNT_NOFOLLOW``: should ``name`` have become a symlink, nothing happens
    (``EINVAL``); the only link followed is ``/proc/self/fd/N``, our own fd."""
    if "/" in name or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, f"umount2: {name!r} is not one path component")
    path = f"/proc/self/fd/{parent_fd}/{name}".encode()
    _check(int(_libc.umount2(ctypes.c_char_p(path), ctypes.c_int(UMOUNT_NOFOLLOW))), "umount2")
