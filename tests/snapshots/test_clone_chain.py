"""Clones of clones, in process (engine + VFS, no kernel).

A clone's blocks point into its origin's segments, one hop deep. A snapshot of a clone
that still shares blocks with the clone's origin cannot be cloned (the new clone would
need pointers to pointers): ``clones.create`` refuses it with an error that says to
flatten first, before it makes anything, so nothing logs a WARNING and the clone and its
snapshot stay as they were. Once nothing shared remains in the snapshot (the clone wrote
its own blocks, or was flattened), the clone of the clone works.

The regression test for a flaky ``test_engine_model.py``: the refusal used to come from
the middle of copying the tree into the new clone, whose engine then logged "an operation
failed after it had changed the volume; undoing its changes".
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

from galleonfs.engine import clones, snapshots
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import check_engine
from galleonfs.errors import FailedPrecondition
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 4096
REFUSAL = ("cloning a snapshot of a clone that shares blocks with its own origin is not "
           "supported; flatten the clone first")


def write_file(engine: Engine, name: bytes, content: bytes) -> None:
    """Create ``name`` in the root, or overwrite it from offset 0 if it exists."""
    vfs = Vfs(engine, atime=False)
    names = {e.name for e in vfs.readdir(1, 0)}
    inode = vfs.lookup(1, name, ROOT_CTX) if name in names else vfs.create(1, name, 0o644, ROOT_CTX)
    if name in names:
        vfs.open(inode.ino, True)
    assert vfs.write(inode.ino, 0, content) == len(content)
    vfs.release(inode.ino)


def read_file(engine: Engine, name: bytes) -> bytes:
    vfs = Vfs(engine, atime=False)
    inode = vfs.lookup(1, name, ROOT_CTX)
    return vfs.read(inode.ino, 0, inode.size + 1)


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Engine, Engine, bytes]:
    """An origin with a file of two blocks, snapshot ``s0``, and an open clone ``c0`` of it
    with its own snapshot ``s0`` of that same tree (every block shared with the origin)."""
    content = random.Random(1).randbytes(2 * BS)
    Engine.create(str(tmp_path / "origin"), size=64 << 20, block_size=BS)
    origin = Engine.open(str(tmp_path / "origin"))
    write_file(origin, b"f", content)
    snapshots.create(origin, "s0")
    clones.create(origin, "s0", str(tmp_path / "c0"), clone_id="c0")
    c0 = Engine.open(str(tmp_path / "c0"))
    snapshots.create(c0, "s0")
    return origin, c0, content


def test_a_shared_snapshot_of_a_clone_is_refused_before_anything_is_made(
        tmp_path: Path, clone: tuple[Engine, Engine, bytes], caplog: pytest.LogCaptureFixture) -> None:
    origin, c0, content = clone
    lsn, gen = c0.appended_lsn, c0.generation
    with caplog.at_level(logging.INFO), pytest.raises(FailedPrecondition) as refused:
        clones.create(c0, "s0", str(tmp_path / "c1"), clone_id="c1")
    assert str(refused.value) == REFUSAL
    loud = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], "a refused clone must not log warnings"
    assert not os.path.exists(tmp_path / "c1")
    assert (c0.appended_lsn, c0.generation) == (lsn, gen), "the refusal changed the clone"
    held = snapshots.get(c0, "s0")
    assert (held.holds, held.pin_seg) == ([], 0)
    assert read_file(c0, b"f") == content
    assert check_engine(c0).clean and check_engine(origin).clean
    c0.close()
    origin.close()


def test_a_clone_of_a_clone_works_once_nothing_shared_is_left(
        tmp_path: Path, clone: tuple[Engine, Engine, bytes]) -> None:
    origin, c0, content = clone
    own = random.Random(2).randbytes(2 * BS)      # not in the origin: no dedup into it
    write_file(c0, b"f", own)
    snapshots.create(c0, "s1")
    clones.create(c0, "s1", str(tmp_path / "c1"), clone_id="c1")
    c1 = Engine.open(str(tmp_path / "c1"))
    assert read_file(c1, b"f") == own

    with pytest.raises(FailedPrecondition, match="flatten the clone first"):
        clones.create(c0, "s0", str(tmp_path / "c2"), clone_id="c2")
    clones.flatten(c0)
    clones.release(origin, "s0", "c0")
    clones.create(c0, "s0", str(tmp_path / "c2"), clone_id="c2")
    c2 = Engine.open(str(tmp_path / "c2"))
    assert read_file(c2, b"f") == content
    assert sorted(snapshots.get(c0, "s0").holds) == ["c2"]
    assert sorted(snapshots.get(c0, "s1").holds) == ["c1"]
    for engine in (origin, c0, c1, c2):
        report = check_engine(engine)
        assert report.clean, report.render()
        engine.close()
