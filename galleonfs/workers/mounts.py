"""Mount points: bind mounts of a worker's one FUSE mount, made so that no path race can
move them (DESIGN §2, §7).

Every user-visible mount point is a bind mount of the worker's private FUSE mount
(``<data-dir>/mounts/<volume id>``), or of one snapshot directory inside it. So all mount
points of one volume share one page cache, and there is never a second writer process.

The target comes from an API caller and its path may run through directories that other
local users own. So:

* it must lie inside one of the node's **mount roots** (``mount_roots``: operators' usual
  places and kubelet's directory), never over ``/etc``, ``/root/.ssh`` or a ``PATH``
  directory;
* it is walked from its root component by component **without following symlinks**
  (``openat2`` with ``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH``), so a path with a symlink in
  it is refused, and every recorded path is a real one;
* only its last component is ever created (``mkdirat`` on the pinned parent, mode 0755),
  never missing directories above it;
* it is checked (a directory, empty, nothing mounted on it) and **mounted through its fd**
  (``open_tree`` + ``mount_setattr`` + ``move_mount``): a rename or a symlink swapped in
  after the check cannot send the mount anywhere else;
* every bind mount is ``nosuid,nodev`` (and ``ro`` where asked) from its first moment;
* the mount's ids (``statx``) are recorded, and **unmount acts on that mount only**: the
  path is walked again without symlinks and the ids compared before anything is unmounted.

Who owns the target does not matter: a caller allowed to mount may show a volume to
whoever owns the directory, and nosuid,nodev mean that showing it grants no privilege.

What it must not do: follow a symlink in a target, create more than the last component,
or unmount a mount whose ids it has not just checked. The staging directories of the
workers are the daemon's own (inside the 0700 data directory), so ``clear_dead`` and
``is_mounted`` use their paths directly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import trio

from .. import limits
from ..errors import (
    Busy,
    FailedPrecondition,
    GalleonError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from ..fuse.kernel import _unescape, find_mount
from . import mountapi

log = logging.getLogger(__name__)

# Where the daemon may put mount points unless configured otherwise: where operators mount
# things by hand (FHS: /mnt, /media, /srv), the daemon's own directory for orchestrators
# without one, and kubelet's, under which CSI publishes volumes to pods.
DEFAULT_MOUNT_ROOTS = ("/mnt", "/media", "/srv", "/run/galleonfs/mounts", "/var/lib/kubelet")

_NAME_MAX = limits.name_max_bytes
# A path a caller sent is quoted whole up to this length (kubelet's pod paths run to about
# 150 characters), else cut to its first 64: an answer must not grow with the request.
_QUOTE_WHOLE_MAX = 160
_QUOTE_CUT = 64


def _shown(path: str) -> str:
    return path if len(path) <= _QUOTE_WHOLE_MAX else path[:_QUOTE_CUT] + "..."


async def _run(*command: str) -> tuple[int, str]:
    done = await trio.run_process(list(command), capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, (done.stderr or b"").decode(errors="replace").strip()


def is_mounted(path: str) -> bool:
    """Something is mounted on ``path`` (for the daemon's own staging directories)."""
    return find_mount(path) is not None


def check_roots(roots: Iterable[str]) -> list[str]:
    """Validate ``mount_roots``: absolute directories, never ``/`` itself."""
    out = []
    for root in roots:
        if not isinstance(root, str) or not os.path.isabs(root) or "\0" in root:
            raise InvalidArgument(f"mount root {str(root)[:64]!r} is not an absolute path")
        clean = os.path.normpath(root)
        if clean == "/":
            raise InvalidArgument("'/' cannot be a mount root: it would allow mounts over /etc and "
                                  "/root; list the directories where mounts may go")
        out.append(clean)
    return list(dict.fromkeys(out))


def _describe(roots: list[str]) -> str:
    return ", ".join(roots) if roots else "none are configured"


def _prefixes(roots: list[str]) -> Iterator[tuple[str, str]]:
    """(root as configured or as the kernel names it, root as configured). An operator's
    root may be a symlink (/var/run -> /run); targets may be named either way."""
    for root in roots:
        yield root, root
        real = os.path.realpath(root)
        if real != root:
            yield real, root


def canonical(path: str, roots: list[str]) -> str:
    """``path`` as it is recorded: normalised, under the real path of its root."""
    clean = os.path.normpath(path)
    for prefix, root in _prefixes(roots):
        if clean.startswith(prefix.rstrip("/") + "/"):
            return os.path.join(os.path.realpath(root), clean[len(prefix.rstrip("/")) + 1:])
    return clean


# --- the target --------------------------------------------------------------------------------
@dataclass
class Target:
    """A mount target, opened and checked, pinned by ``fd`` until ``close``."""

    path: str            # its real path when it was checked
    fd: int              # the directory (O_RDONLY|O_DIRECTORY: its entries were listed)
    parent_fd: int
    name: str
    created: bool        # we made the directory (and remove it again if nothing is mounted)
    mounted: bool = False

    def close(self) -> None:
        if self.created and not self.mounted:
            with contextlib.suppress(OSError):
                os.rmdir(self.name, dir_fd=self.parent_fd)
        for fd in (self.fd, self.parent_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = self.parent_fd = -1

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _target_error(path: str, exc: OSError, what: str) -> GalleonError:
    path, what = _shown(path), _shown(what)
    if exc.errno == errno.ELOOP:
        return InvalidArgument(f"mount point {path}: {what} is or goes through a symbolic link; "
                               f"symlinks are not followed in mount points, give the real path")
    if exc.errno == errno.ENOENT:
        return NotFound(f"mount point {path}: {what} does not exist; create the directories above "
                        f"the mount point first (only the last one is created)")
    if exc.errno == errno.ENOTDIR:
        return InvalidArgument(f"mount point {path}: {what} is not a directory")
    if exc.errno == errno.EXDEV:
        return PermissionDenied(f"mount point {path}: {what} leaves its mount root")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"mount point {path}: {what} cannot be opened: {os.strerror(exc.errno)}")
    return GalleonError(f"mount point {path}: cannot open {what}: {os.strerror(exc.errno or errno.EIO)}")


def open_target(path: str, roots: list[str], *, use_openat2: bool = True) -> Target:
    """Open, check and pin the directory ``path`` for a mount (blocking: run on a thread)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise InvalidArgument(f"mount point {str(path)[:64]!r} must be an absolute path")
    if "\0" in path or len(path) > os.pathconf("/", "PC_PATH_MAX"):
        raise InvalidArgument("a mount point must be a path without NUL bytes, at most 4096 bytes long")
    clean = os.path.normpath(path)
    shown = _shown(clean)
    found = next(((prefix, root) for prefix, root in _prefixes(roots)
                  if clean.startswith(prefix.rstrip("/") + "/")), None)
    if found is None and any(clean == prefix for prefix, _ in _prefixes(roots)):
        raise PermissionDenied(f"mount point {shown} is a mount root itself; mount inside it, e.g. "
                               f"{os.path.join(shown, 'data')}")
    if found is None:
        raise PermissionDenied(f"mount point {shown} is outside this node's mount roots "
                               f"({_describe(roots)}); choose a directory inside one of them, or have "
                               f"the operator add a root to mount_roots")
    prefix, root = found
    relative = clean[len(prefix.rstrip("/")) + 1:]
    parent_rel, name = os.path.split(relative)
    if len(name.encode()) > _NAME_MAX:
        raise InvalidArgument(f"mount point {clean[:_QUOTE_CUT]}...: a name is longer than {_NAME_MAX} bytes")
    try:
        # The root comes from the operator's configuration: trusted, and it may be a symlink.
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise NotFound(f"mount root {root} does not exist or is not a directory; the operator must "
                       f"create it") from exc
    try:
        parent_fd = mountapi.walk(root_fd, parent_rel or ".", os.O_PATH | os.O_DIRECTORY,
                                  use_openat2=use_openat2)
    except OSError as exc:
        raise _target_error(clean, exc, f"{os.path.join(root, parent_rel)}") from None
    finally:
        os.close(root_fd)
    target = Target(clean, -1, parent_fd, name, created=False)
    try:
        _open_last(target, use_openat2=use_openat2)
        _check_target(target, os.path.join(os.path.realpath(root), relative))
    except BaseException:
        target.close()
        raise
    return target


def _open_last(target: Target, *, use_openat2: bool) -> None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    for _ in range(2):
        try:
            target.fd = mountapi.walk(target.parent_fd, target.name, flags, use_openat2=use_openat2)
            return
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and mountapi.is_symlink(target.parent_fd, target.name):
                exc = OSError(errno.ELOOP, "a symbolic link")   # O_DIRECTORY answers first
            raise _target_error(target.path, exc, "it") from None
        try:
            # Only the last component, in the directory already pinned; 0755 like mkdir -p.
            os.mkdir(target.name, 0o755, dir_fd=target.parent_fd)
            target.created = True
        except FileExistsError:
            continue                       # made meanwhile: open what is there (and check it)
        except OSError as exc:
            raise _target_error(target.path, exc, "it") from None
    raise NotFound(f"mount point {_shown(target.path)} keeps disappearing; try again")


def _check_target(target: Target, expected: str) -> None:
    ids = mountapi.mount_ids(target.fd)
    if ids.is_mount_root:
        raise Busy(f"something is already mounted on {_shown(target.path)}; unmount it or choose "
                   f"another directory")
    if os.listdir(target.fd):
        raise InvalidArgument(f"mount point {_shown(target.path)} is not empty; use an empty directory")
    real = mountapi.fd_path(target.fd)
    if real != expected:
        # A directory on the way was renamed between the walk and now.
        raise Busy(f"mount point {_shown(target.path)} was moved while it was being checked (it is now "
                   f"{_shown(real)}); not mounted, try again")
    target.path = real


# --- bind --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placed:
    """A mount GalleonFS made: where, and its ids (what unmount checks)."""

    path: str
    mount_id: int
    unique_id: int


def check_snapshot_dir_name(name: str) -> str:
    """A snapshot name becomes one path component inside the worker's mount: refuse
    anything that is not one ordinary name (``''``, ``.``, ``..``, a ``/``, a NUL)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name \
            or len(name.encode()) > _NAME_MAX:
        raise InvalidArgument(f"invalid snapshot name {str(name)[:64]!r}: name one snapshot "
                              f"(see `galleonctl snapshot list`)")
    return name


def _open_source(staging: str, snapshot: str) -> int:
    """The worker's FUSE mount (or one of its snapshot directories), by fd."""
    fd = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not mountapi.mount_ids(fd).is_mount_root:
            # Binding the bare staging directory would hand applications an empty
            # directory on the host disk instead of the volume.
            raise GalleonError(f"the mount worker's mount on {staging} is gone")
        if not snapshot:
            fd, result = -1, fd
            return result
        # Inside the worker's mount, and nowhere else: no symlink, no '..', no other mount.
        try:
            return mountapi.walk(fd, os.path.join(".snapshots", check_snapshot_dir_name(snapshot)),
                                 os.O_PATH | os.O_DIRECTORY, no_xdev=True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NotFound(f"there is no snapshot {snapshot!r}") from None
            raise InvalidArgument(f"snapshot {snapshot!r} cannot be mounted: {os.strerror(exc.errno or 0)}") \
                from None
    finally:
        if fd >= 0:
            os.close(fd)


def bind_now(staging: str, target: Target, *, read_only: bool, snapshot: str = "") -> Placed:
    """Bind the worker's mount (or one snapshot in it) on ``target``, nosuid,nodev, through
    fds only. Blocking (a snapshot lookup asks the worker): run on a thread."""
    source = _open_source(staging, snapshot)
    try:
        tree = mountapi.open_tree_clone(source)
    except OSError as exc:
        raise GalleonError(f"cannot bind-mount the volume on {_shown(target.path)}: {exc.strerror}") from None
    finally:
        os.close(source)
    try:
        flags = mountapi.MOUNT_ATTR_NOSUID | mountapi.MOUNT_ATTR_NODEV
        try:
            mountapi.mount_setattr(tree, flags | (mountapi.MOUNT_ATTR_RDONLY if read_only else 0))
            mountapi.move_mount(tree, target.fd)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                raise GalleonError("this kernel lacks the mount API GalleonFS mounts through "
                                   "(open_tree, mount_setattr: Linux 5.12 or later)") from None
            raise GalleonError(f"cannot bind-mount the volume on {_shown(target.path)}: {exc.strerror}") from None
        target.mounted = True
        ids = mountapi.mount_ids(tree)
        where = mountapi.fd_path(tree)
        if where != target.path:
            # Renamed on the way in: the mount sits on the checked directory, but that
            # directory is no longer where the caller asked. Take it back down.
            mountapi.umount_mount(tree)
            target.mounted = False
            raise Busy(f"mount point {_shown(target.path)} was moved while it was being mounted (to {_shown(where)}); "
                       f"not mounted, try again")
        return Placed(where, ids.mount_id, ids.unique_id)
    finally:
        os.close(tree)


async def bind(staging: str, target: Target, *, read_only: bool, snapshot: str = "") -> Placed:
    placed = await trio.to_thread.run_sync(
        lambda: bind_now(staging, target, read_only=read_only, snapshot=snapshot))
    return placed


# --- unbind ------------------------------------------------------------------------------------
class Recorded(Protocol):
    """What the catalog remembers of a mount point (``managers.model.MountPoint``)."""

    path: str
    mount_id: int
    mount_unique_id: int


def _mountinfo_paths(mount_id: int) -> list[str]:
    """Where the mount with this (reusable) id is, from the kernel's table."""
    with open("/proc/self/mountinfo") as f:
        return [_unescape(fields[4]) for fields in (line.split() for line in f) if fields[0] == str(mount_id)]


def _fstype(mount_id: int) -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[0] == str(mount_id):
                return fields[fields.index("-") + 1]
    return ""


def _open_recorded_at(path: str) -> tuple[int, int, str]:
    """(parent fd, fd of ``path`` itself, last name), walked from ``/`` without symlinks."""
    parent, name = os.path.split(os.path.normpath(path))
    if not os.path.isabs(path) or not name:
        raise OSError(errno.EINVAL, "not an absolute path to a directory")
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent_fd = mountapi.walk(root, parent.lstrip("/") or ".", os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(root)
    try:
        fd = mountapi.walk(parent_fd, name, os.O_PATH | os.O_NOFOLLOW)
    except BaseException:
        os.close(parent_fd)
        raise
    return parent_fd, fd, name


def _is_ours(ids: mountapi.MountIds, point: Recorded) -> bool:
    if not ids.is_mount_root:
        return False
    if point.mount_unique_id and ids.unique_id:
        return ids.unique_id == point.mount_unique_id
    if point.mount_id:
        return ids.mount_id == point.mount_id
    # A catalog written before mount ids were recorded: a GalleonFS mount at the recorded
    # (real) path is the one we made there.
    return _fstype(ids.mount_id) == "fuse.galleonfs"


def locate(point: Recorded) -> Placed | None:
    """Our mount, checked by its ids, wherever it is now (blocking); None if not found."""
    return _find(point, unmount=None)[0]


def _find(point: Recorded, unmount: bool | None) -> tuple[Placed | None, bool]:
    """Look for the recorded mount and check its ids; with ``unmount`` (True: lazily),
    unmount it. Returns it (None: not found) and whether something that may be it is in
    the kernel's table but could not be checked (moved under a symlink, or covered)."""
    listed = _mountinfo_paths(point.mount_id) if point.mount_id else []
    # A directory above the mount point may have been renamed: the kernel knows where the
    # mount went. Each candidate is walked and checked all the same.
    candidates = [point.path, *(p for p in listed if p != point.path)]
    doubt = False
    for path in candidates:
        try:
            parent_fd, fd, name = _open_recorded_at(path)
        except OSError:
            doubt = doubt or path in listed     # a symlink on the way now, or gone
            continue
        try:
            ids = mountapi.mount_ids(fd)
            if not _is_ours(ids, point):
                # The same reusable id with another unique one: recycled, not ours. Another
                # id on top of a place where ours is listed: ours may be covered.
                doubt = doubt or (path in listed and ids.mount_id != point.mount_id)
                continue
            placed = Placed(mountapi.fd_path(fd), ids.mount_id, ids.unique_id)
            if unmount is True:
                mountapi.umount_mount(fd)          # exactly this mount, wherever it is
            elif unmount is False:
                os.close(fd)                       # an fd on the mount would keep it busy
                fd = -1
                mountapi.umount_at(parent_fd, name)
            return placed, False
        finally:
            if fd >= 0:
                os.close(fd)
            os.close(parent_fd)
    if not point.mount_id:
        info = find_mount(point.path)
        doubt = info is not None and info.fstype == "fuse.galleonfs"
    return None, doubt


def unbind_now(point: Recorded, *, lazy: bool = False) -> None:
    """Unmount the mount recorded in ``point``, and only that one (blocking: run on a thread).

    Nothing there any more: done. Something else there: refused, nothing unmounted.
    """
    try:
        placed, doubt = _find(point, unmount=lazy)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise Busy(f"mount point {point.path} is busy (files or directories in use there); "
                       f"close them, or use --force") from None
        raise GalleonError(f"cannot unmount {point.path}: {os.strerror(exc.errno or errno.EIO)}") from None
    if placed is not None:
        return
    if doubt:
        raise FailedPrecondition(
            f"the mount GalleonFS made on {point.path} was moved or covered by another mount, and "
            f"where it is now cannot be checked; nothing was unmounted (see /proc/self/mountinfo)")
    log.info("mount point %s was no longer mounted", point.path)


async def unbind(point: Recorded, *, lazy: bool = False) -> None:
    """Unmount a recorded mount point; a busy one raises ``Busy`` unless ``lazy``."""
    await trio.to_thread.run_sync(lambda: unbind_now(point, lazy=lazy))


async def clear_dead(path: str) -> None:
    """Detach whatever is left at the daemon's own staging ``path`` after its worker died
    (ENOTCONN mounts). Not for user mount points: those go through ``unbind``."""
    while is_mounted(path):
        code, _ = await _run("umount", "-l", path)
        if code != 0:
            code, _ = await _run("fusermount3", "-uz", path)
            if code != 0:
                return
