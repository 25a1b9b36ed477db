"""GC frees what no backup needs and nothing else; it fails closed; it and backups exclude
each other through lock objects, and a writer that lost its lock cannot commit."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galleonfs.backup import (
    Repository,
    Target,
    begin_backup,
    break_locks,
    collect_garbage,
    limits,
    verify,
)
from galleonfs.backup.errors import GCRefused, LockLost, RepositoryLocked
from galleonfs.backup.index import PackInfo
from galleonfs.backup.layout import BACKUPS
from galleonfs.backup.manifests import BackupInfo
from galleonfs.backup.packs import pack_name
from galleonfs.backup.sealed import MAGIC_LOCK, seal
from galleonfs.backup.testing import FailingList

from .util import REPO_KEY, Vol, backup, object_sizes, restore, same_content


@pytest.fixture(autouse=True)
def _small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 KiB packs: a few dozen blocks of 8 KiB make packs that die whole or in part.
    monkeypatch.setattr(limits, "pack_target_bytes", 64 * 1024)


def pack_bytes(target: Target) -> int:
    return sum(size for name, size in target.list("packs/"))


def history(repo: Repository) -> list[tuple[BackupInfo, Vol]]:
    """Three backups of one volume; each replaces half of the blocks of the one before."""
    rng = random.Random(11)
    vol = Vol()
    for i in range(64):
        vol.set(b"k%03d" % i, b"v", [rng.randbytes(8192)])
    out: list[tuple[BackupInfo, Vol]] = []
    parent: tuple[BackupInfo, Vol] | None = None
    for round_ in range(3):
        info = backup(repo, vol, parent=parent)
        out.append((info, vol.copy()))
        parent = (info, vol.copy())
        for i in range(round_ % 2, 64, 2):
            vol.set(b"k%03d" % i, b"v%d" % round_, [rng.randbytes(8192)])
    return out


def test_gc_after_deletes_frees_space_and_keeps_what_is_kept(repo: Repository) -> None:
    (b1, _v1), (b2, v2), (b3, v3) = history(repo)
    before = pack_bytes(repo.target)
    report = collect_garbage(repo)
    assert report.packs_deleted == 0 and report.bytes_freed == 0   # everything is live
    repo.delete_backups([b1.backup_id])
    report = collect_garbage(repo)
    assert report.packs_deleted + report.packs_repacked > 0
    middle = pack_bytes(repo.target)
    assert middle < before and report.bytes_freed == before - middle
    same_content(v2, restore(repo, b2.backup_id))
    same_content(v3, restore(repo, b3.backup_id))
    repo.delete_backups([b2.backup_id])
    report = collect_garbage(repo)
    after = pack_bytes(repo.target)
    # What is left is about what b3 needs: 64 blocks of 8 KiB, random, plus a table chunk.
    assert 64 * 8192 <= after < 64 * 8192 * 1.25
    fresh = Repository.open(repo.target, REPO_KEY)
    same_content(v3, restore(fresh, b3.backup_id))
    assert verify(fresh, deep=True).ok
    assert collect_garbage(fresh).bytes_freed == 0                 # nothing left to free
    fresh.close()


def test_mostly_dead_packs_are_repacked(dir_repo: Repository) -> None:
    rng = random.Random(12)
    vol = Vol()
    for i in range(7):
        vol.set(b"k%d" % i, b"", [rng.randbytes(8192)])
    first = backup(dir_repo, vol)
    keep = Vol()
    keep.set(b"k0", b"", [vol.blocks[vol.records[b"k0"][1][0]]])
    kept = backup(dir_repo, keep)                # shares one of the 7 blocks
    dir_repo.delete_backups([first.backup_id])
    report = collect_garbage(dir_repo)
    assert report.packs_repacked == 1 and report.packs_written == 1
    assert report.bytes_freed > 5 * 8192
    same_content(keep, restore(dir_repo, kept.backup_id))
    assert verify(dir_repo, deep=True).ok


@pytest.mark.parametrize("prefix", ["backups/", "index/", "packs/"])
def test_gc_with_a_listing_error_deletes_nothing(repo: Repository, prefix: str) -> None:
    (b1, _v1), _b2, _b3 = history(repo)
    repo.delete_backups([b1.backup_id])
    before = object_sizes(repo.target)
    broken = Repository.open(FailingList(repo.target, prefix), REPO_KEY)  # type: ignore[arg-type]
    with pytest.raises(GCRefused, match=r"stopped before deleting anything: .*connection reset by peer"):
        collect_garbage(broken)
    assert object_sizes(repo.target) == before
    broken.close()


def test_gc_with_an_unreadable_manifest_deletes_nothing(repo: Repository) -> None:
    (b1, _v1), (b2, _v2), _b3 = history(repo)
    repo.delete_backups([b1.backup_id])
    name = BACKUPS + b2.backup_id
    data = bytearray(repo.target.get(name))
    data[-4] ^= 1
    repo.target.put(name, bytes(data))
    before = object_sizes(repo.target)
    with pytest.raises(GCRefused, match=f"stopped before deleting anything: backup object {name}"):
        collect_garbage(repo)
    assert object_sizes(repo.target) == before


def test_gc_with_a_missing_blob_deletes_nothing(dir_repo: Repository) -> None:
    (b1, _v1), _b2, (_b3, _v3) = history(dir_repo)
    dir_repo.delete_backups([b1.backup_id])
    pack_id, _entry = dir_repo.index.blobs[next(iter(_v3.records.values()))[1][0]]
    dir_repo.target.delete(pack_name(pack_id))
    before = object_sizes(dir_repo.target)
    with pytest.raises(GCRefused, match="although a backup references it"):
        collect_garbage(dir_repo)
    assert object_sizes(dir_repo.target) == before


def test_backup_and_gc_exclude_each_other(repo: Repository) -> None:
    vol = Vol()
    vol.set(b"a", b"", [b"x" * 5000])
    writer = begin_backup(repo, volume_name="db", volume_id="vol-1", generation=1)
    other = Repository.open(repo.target, REPO_KEY)
    with pytest.raises(RepositoryLocked, match=r"is locked by backup of volume db \(shared\)"):
        collect_garbage(other)
    for bid in vol.records[b"a"][1]:
        writer.put_blob(bid, vol.blocks[bid])
    writer.put_record(b"a", b"", vol.records[b"a"][1])
    info = writer.commit()
    with other.lock(exclusive=True, purpose="gc"), \
            pytest.raises(RepositoryLocked, match=r"is locked by gc \(exclusive\)"):
        begin_backup(repo, volume_name="db", volume_id="vol-1", generation=2)
    assert collect_garbage(other).packs_deleted == 0
    same_content(vol, restore(repo, info.backup_id))
    assert list(repo.target.list("locks/")) == []
    other.close()


def test_writer_that_lost_its_lock_commits_nothing_and_later_backups_lose_nothing(
        dir_repo: Repository) -> None:
    """The race GC must survive: a writer paused past its lock's expiry. GC deletes its
    unreferenced packs; the writer refuses to commit; even an index object it writes late,
    naming deleted packs, does not make the next backup skip blocks."""
    rng = random.Random(13)
    vol = Vol()
    for i in range(30):
        vol.set(b"k%02d" % i, b"", [rng.randbytes(8192)])
    writer = begin_backup(dir_repo, volume_name="db", volume_id="vol-1", generation=1)
    for _v, refs in vol.records.values():
        for bid in refs:
            writer.put_blob(bid, vol.blocks[bid])
    writer._sink.flush()
    stored = list(writer._sink.stored)
    assert stored
    assert break_locks(dir_repo, stale_only=False)            # an operator (or expiry) broke it
    gc = Repository.open(dir_repo.target, REPO_KEY)
    report = collect_garbage(gc)
    assert report.packs_deleted == len(stored)                # nothing referenced them: gone
    assert dir_repo.list_packs() == {}
    for key in sorted(vol.records):
        writer.put_record(key, b"", vol.records[key][1])
    with pytest.raises(LockLost, match="nothing was committed"):
        writer.commit()
    writer.abort()
    assert dir_repo.list_backups() == []
    dir_repo.write_index([PackInfo(p.pack_id, p.size, p.entries) for p in stored])  # the late index
    fresh = Repository.open(dir_repo.target, REPO_KEY)
    info = backup(fresh, vol)
    assert info.stats["blobs_new"] == 30                      # nothing skipped on a dead pack's word
    same_content(vol, restore(fresh, info.backup_id))
    stale = verify(fresh)                                    # the late index names gone packs
    assert {type(p.error).__name__ for p in stale.problems} == {"ObjectMissing"}
    assert collect_garbage(fresh).index_objects_written >= 1   # GC drops the stale entries
    assert verify(fresh, deep=True).ok
    gc.close()
    fresh.close()


def test_stale_locks_do_not_block(dir_target: Target, tmp_path: Path) -> None:
    # A lock of a process of this host that is gone is stale at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = Repository.init(dir_target, REPO_KEY)
    lock = holder.lock(exclusive=False, purpose="backup of volume x")
    lock._stop.set()
    name = lock.name
    import json

    doc = {"exclusive": False, "host": __import__("socket").gethostname(), "pid": dead.pid,
           "purpose": "backup of volume x", "time": time.time(), "ttl_s": 600}
    dir_target.put(name, seal(holder.keys, MAGIC_LOCK, name, json.dumps(doc).encode()))
    assert collect_garbage(Repository.open(dir_target, REPO_KEY)).backups == 0
    # A lock not refreshed for its ttl is stale, and its holder knows it lost it.
    short = Repository.open(dir_target, REPO_KEY, lock_ttl_s=1.0, lock_refresh_s=3600.0)
    paused = short.lock(exclusive=False, purpose="backup of volume y")
    with pytest.raises(RepositoryLocked):
        collect_garbage(Repository.open(dir_target, REPO_KEY))
    time.sleep(1.2)
    collect_garbage(Repository.open(dir_target, REPO_KEY))
    with pytest.raises(LockLost, match="last refreshed"):
        paused.check()
    paused._stop.set()
    assert sorted(break_locks(holder)) == sorted([name, paused.name])   # both stale
    holder.close()
    short.close()


def test_abandoned_backup_leaves_only_garbage(dir_repo: Repository) -> None:
    rng = random.Random(14)
    vol = Vol()
    for i in range(20):
        vol.set(b"k%02d" % i, b"", [rng.randbytes(8192)])
    with begin_backup(dir_repo, volume_name="db", volume_id="vol-1", generation=1) as w:
        for _v, refs in vol.records.values():
            for bid in refs:
                w.put_blob(bid, vol.blocks[bid])
        # no commit: the with block aborts
    assert dir_repo.list_backups() == [] and pack_bytes(dir_repo.target) >= 64 * 1024   # full packs went
    report = collect_garbage(dir_repo)
    assert report.packs_deleted >= 1 and pack_bytes(dir_repo.target) == 0
