"""Engine tier: a full host disk is an errno, never a crash (engine/space.py), without FUSE.

The disk is real: a small tmpfs (``SmallDisk``) under the volume, so that space freed or
kept shows in the kernel's own accounting.
"""

from __future__ import annotations

import os
from pathlib import Path

from test_engine import tree, write_file

from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.testing.disk import SmallDisk
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

KiB = 1024
MiB = 1024 * KiB
BS = 64 * KiB


def _assert_clean(vol: str) -> None:
    report = fsck(vol)
    assert report.clean, report.render()


def test_a_deleted_file_gives_its_space_back_to_the_host_disk(tmp_path: Path) -> None:
    """GC rolls the mostly dead segment being written and deletes it at the checkpoint: its
    blocks must go back to the disk then, not at unmount (regression: the rolled segment's
    descriptor stayed open, so the deleted file kept its space)."""
    with SmallDisk(tmp_path / "disk", 64 * MiB) as disk:
        vol = str(disk.path / "vol")
        Engine.create(vol, size=1 << 30, block_size=BS)
        engine = Engine.open(vol)
        vfs = Vfs(engine, atime=False)
        keep = os.urandom(MiB)
        write_file(vfs, "keep", keep)
        write_file(vfs, "big", os.urandom(24 * MiB))
        engine.commit()
        low = disk.free_bytes()
        vfs.unlink(1, b"big", ROOT_CTX)
        report = engine.gc()
        assert report.bytes_reclaimed >= 24 * MiB
        assert disk.free_bytes() >= low + 23 * MiB
        assert tree(vfs) == {"keep": keep}
        engine.close()
        _assert_clean(vol)
