"""The kernel-free VFS tier's helpers: a real engine on a temporary directory, the real
``Vfs`` over it, no FUSE, no root."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.errors import GalleonError
from galleonfs.meta.schema import Inode
from galleonfs.vfs.vfs import Ctx, Vfs

BS = 4096
SIZE = 64 << 20
USER = Ctx(1000, 1000)
ROOT = 1


class Volume:
    """A volume directory and the ``Vfs`` open on it now."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.vfs = Vfs(Engine.open(path))

    def reopen(self) -> Vfs:
        """Close the volume (checkpointing it) and open it again: what persisted."""
        self.vfs.engine.close()
        self.vfs = Vfs(Engine.open(self.path))
        return self.vfs


def volume(tmp_path: Path, *, size: int = SIZE) -> Iterator[Volume]:
    """A fresh volume with 4 KiB blocks, opened; closed afterwards, and then it must be fsck
    clean (for a fixture: ``yield from volume(tmp_path)``)."""
    path = str(tmp_path / "vol")
    Engine.create(path, size=size, block_size=BS)
    vol = Volume(path)
    yield vol
    vol.vfs.engine.close()
    report = fsck(path)
    assert report.clean, report.render()


def fails(v: Vfs, err: int, fn: Callable[..., Any], *args: Any) -> GalleonError:
    """Call ``fn(*args)``; it must raise a ``GalleonError`` whose errno (what the application
    sees through FUSE) is ``err``, journal nothing and leave nothing pending. Returns it."""
    lsn = v.engine.appended_lsn
    with pytest.raises(GalleonError) as info:
        fn(*args)
    exc = info.value
    assert exc.errno == err, f"{type(exc).__name__} ({exc}) is errno {exc.errno}, not {err}"
    assert not v.engine.in_op() and v.engine.appended_lsn == lsn
    return exc


def new_file(v: Vfs, name: bytes, data: bytes = b"", parent: int = ROOT) -> Inode:
    """Create ``name`` with ``data``, close it and let the kernel forget it."""
    inode = v.create(parent, name, 0o644, USER)
    if data:
        v.write(inode.ino, 0, data)
    v.release(inode.ino)
    v.forget([(inode.ino, 1)])
    return v.inode(inode.ino)


def names(v: Vfs, ino: int = ROOT) -> list[bytes]:
    return [e.name for e in v.readdir(ino, 0) if e.name not in (b".", b"..")]
