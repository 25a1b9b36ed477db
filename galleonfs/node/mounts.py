"""Mount points of a volume: bind mounts of its worker's one FUSE mount (DESIGN §2).

Every user-visible mount point is a bind mount of the worker's private FUSE mount
(``<data-dir>/mounts/<volume id>``), read-only where asked. So all mount points of one
volume share one page cache and see each other's writes at once, and there is never a
second writer process.

Uses mount(8)/umount(8) from util-linux: the syscalls' flag dance (bind, then remount
read-only) is what those tools already get right. Root only, as bind mounts are.
"""

from __future__ import annotations

import os

import trio

from ..errors import Busy, GalleonError, InvalidArgument
from ..fuse.kernel import find_mount


async def _run(*command: str) -> tuple[int, str]:
    done = await trio.run_process(list(command), capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, (done.stderr or b"").decode(errors="replace").strip()


def is_mounted(path: str) -> bool:
    return find_mount(path) is not None


def prepare_mount_point(path: str) -> None:
    """A mount point must be absolute, a directory (created if missing), empty and unused."""
    if not os.path.isabs(path):
        raise InvalidArgument(f"mount point {path!r} must be an absolute path")
    if is_mounted(path):
        raise Busy(f"something is already mounted on {path}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"cannot create mount point {path}: {exc.strerror}") from exc
    if not os.path.isdir(path):
        raise InvalidArgument(f"mount point {path} is not a directory")
    if os.listdir(path):
        raise InvalidArgument(f"mount point {path} is not empty; use an empty directory")


async def bind(source: str, target: str, *, read_only: bool) -> None:
    code, err = await _run("mount", "--bind", source, target)
    if code != 0:
        raise GalleonError(f"cannot bind-mount the volume on {target}: {err}")
    if read_only:
        code, err = await _run("mount", "-o", "remount,bind,ro", target)
        if code != 0:
            await _run("umount", target)
            raise GalleonError(f"cannot make {target} read-only: {err}")


async def unbind(target: str, *, lazy: bool = False) -> None:
    """Unmount a mount point; a busy one raises ``Busy`` unless ``lazy``."""
    if not is_mounted(target):
        return
    code, err = await _run("umount", *(["-l"] if lazy else []), target)
    if code != 0 and is_mounted(target):
        if "busy" in err.lower():
            raise Busy(f"mount point {target} is busy (files or directories in use there); "
                       f"close them, or use --force")
        raise GalleonError(f"cannot unmount {target}: {err}")


async def clear_dead(path: str) -> None:
    """Detach whatever is left at ``path`` after its worker died (ENOTCONN mounts)."""
    while is_mounted(path):
        code, _ = await _run("umount", "-l", path)
        if code != 0:
            code, _ = await _run("fusermount3", "-uz", path)
            if code != 0:
                return
