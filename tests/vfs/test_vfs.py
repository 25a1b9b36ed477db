"""The VFS without a kernel: the rules the kernel hides from mount tests.

Lookup counts and orphans (an unlinked file lives while the kernel holds it), deletes and
truncates too big for one journal record, readdir cookies, and the quota's exact
accounting. Each test reopens the engine where persistence matters and ends with fsck.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.engine import crashpoints
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.errors import NoSpace, NotFound
from galleonfs.vfs import orphans
from galleonfs.vfs.vfs import Ctx, SetAttr, Vfs

CTX = Ctx(1000, 1000)
BS = 4096


@pytest.fixture
def volume_dir(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "v")
    Engine.create(path, size=64 << 20, block_size=BS)
    yield path
    report = fsck(path)
    assert report.clean, report.render()


def open_vfs(path: str) -> Vfs:
    return Vfs(Engine.open(path))


def test_unlinked_file_lives_until_released_and_forgotten(volume_dir: str) -> None:
    v = open_vfs(volume_dir)
    f = v.create(1, b"f", 0o644, CTX)              # one open, one lookup
    v.write(f.ino, 0, b"x" * 10_000)
    used = v.engine.used_bytes
    v.unlink(1, b"f", CTX)
    assert v.read(f.ino, 0, 5) == b"xxxxx"           # still readable through the open handle
    assert v.engine.used_bytes == used
    v.release(f.ino)
    assert v.inode(f.ino).nlink == 0                 # the kernel still holds a lookup
    v.forget([(f.ino, 1)])
    with pytest.raises(NotFound):
        v.inode(f.ino)
    assert v.engine.used_bytes == 0
    v.engine.close()


def test_orphans_left_by_a_crash_are_deleted_at_the_next_mount(volume_dir: str) -> None:
    v = open_vfs(volume_dir)
    f = v.create(1, b"f", 0o644, CTX)
    v.write(f.ino, 0, os.urandom(20_000))
    v.unlink(1, b"f", CTX)
    v.engine.commit()
    v.engine.close(checkpoint=False)                 # as if the worker died with it open
    v = open_vfs(volume_dir)
    assert v.purge_orphans() == 1
    with pytest.raises(NotFound):
        v.inode(f.ino)
    assert v.engine.used_bytes == 0
    v.engine.close()


def test_deleting_a_file_bigger_than_one_record_takes_several(volume_dir: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orphans, "PURGE_CHUNK", 8)
    v = open_vfs(volume_dir)
    f = v.create(1, b"big", 0o644, CTX)
    data = os.urandom(50 * BS)
    v.write(f.ino, 0, data)
    v.release(f.ino)
    v.forget([(f.ino, 1)])
    before = v.engine.appended_lsn
    v.unlink(1, b"big", CTX)
    assert v.engine.appended_lsn - before >= 50 // 8  # one record per chunk
    assert v.engine.used_bytes == 0
    v.engine.close()


def test_truncate_in_chunks_resumes_after_a_crash(volume_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orphans, "PURGE_CHUNK", 4)
    v = open_vfs(volume_dir)
    f = v.create(1, b"f", 0o644, CTX)
    data = os.urandom(40 * BS + 100)
    v.write(f.ino, 0, data)
    v.release(f.ino)
    crashpoints.arm("journal.after_append_before_sync", 3)   # in the middle of the chunks
    with pytest.raises(crashpoints.SimulatedCrash):
        v.setattr(f.ino, SetAttr(size=BS + 10), CTX)
    v.engine.close(checkpoint=False)
    v = open_vfs(volume_dir)
    assert v.inode(f.ino).size == BS + 10            # the first record already set the size
    assert v.purge_orphans() == 1                     # the mount finishes the truncate
    assert v.read(f.ino, 0, 2 * BS) == data[: BS + 10]
    v.setattr(f.ino, SetAttr(size=3 * BS), CTX)     # grow again: the cut part reads as zeros
    assert v.read(f.ino, 0, 3 * BS) == data[: BS + 10] + bytes(3 * BS - BS - 10)
    assert v.inode(f.ino).alloc == BS + 10            # one whole block, 10 bytes of the cut one
    assert v.engine.used_bytes == BS + 10
    v.engine.close()


def test_readdir_offsets_survive_changes(volume_dir: str) -> None:
    v = open_vfs(volume_dir)
    for i in range(20):
        v.mknod(1, b"f%02d" % i, 0o100644, 0, CTX)
    first = list(v.readdir(1, 0))[:10]               # . .. and 8 entries
    resume = first[-1].next_offset
    v.unlink(1, b"f00", CTX)                         # already returned
    v.unlink(1, b"f15", CTX)                         # not yet returned
    v.mknod(1, b"new", 0o100644, 0, CTX)
    rest = list(v.readdir(1, resume))
    names = [e.name for e in first + rest]
    expected_survivors = [b"f%02d" % i for i in range(20) if i not in (15,)]
    assert sorted(n for n in names if n.startswith(b"f")) == expected_survivors
    assert len(names) == len(set(names))             # nothing twice
    assert b"f15" not in names and b"new" in names
    v.engine.close()


def test_quota_counts_unique_stored_bytes(volume_dir: str) -> None:
    v = open_vfs(volume_dir)
    size = v.engine.size
    f = v.create(1, b"a", 0o644, CTX)
    chunk = os.urandom(BS)
    v.write(f.ino, 0, chunk * 4)                     # four equal blocks: stored once
    assert v.engine.used_bytes == BS
    g = v.create(1, b"b", 0o644, CTX)
    with pytest.raises(NoSpace):
        v.write(g.ino, 0, os.urandom(size))          # refused whole, nothing half written
    assert v.inode(g.ino).size == 0 and v.engine.used_bytes == BS
    v.write(g.ino, 0, bytes(5 * BS))                 # zeros are holes: no space at all
    assert v.engine.used_bytes == BS and v.inode(g.ino).alloc == 0
    v.release(f.ino)
    v.release(g.ino)
    v.engine.close()
    v = open_vfs(volume_dir)                          # the counters survive a reopen
    assert v.engine.used_bytes == BS
    v.engine.close()
