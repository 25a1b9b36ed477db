"""Tampered, missing and cut objects are named by restore and by verify, never returned as data.

The damage is done through the target itself (put/delete of raw bytes), so the same tests
run against the directory and the S3 server.
"""

from __future__ import annotations

import random

import pytest

from galleonfs.backup import Repository, Target, open_backup, verify
from galleonfs.backup.errors import (
    BlobMissing,
    ObjectCorrupt,
    ObjectMissing,
    ObjectTruncated,
)
from galleonfs.backup.layout import BACKUPS
from galleonfs.backup.manifests import BackupInfo
from galleonfs.backup.packs import KIND_DATA, KIND_SEALED, Entry, pack_name

from .util import REPO_KEY, Vol, backup, restore, same_content


def stored(repo: Repository, vol: Vol, sealed: bool = False) -> tuple[BackupInfo, str, Entry]:
    """One backup; returns it, one data pack's name and one data blob's entry in it."""
    info = backup(repo, vol)
    repo.load_index(full=True)
    for pack_id, entry in repo.index.blobs.values():
        if entry.kind == (KIND_SEALED if sealed else KIND_DATA):
            return info, pack_name(pack_id), entry
    raise AssertionError("no data blob stored")


def some_volume(encrypted: bool = False) -> Vol:
    rng = random.Random(5)
    vol = Vol(encrypted=encrypted)
    for i in range(20):
        vol.set(b"k%02d" % i, b"v", [rng.randbytes(4096) + bytes(4096)])
    return vol


def fresh(target: Target) -> Repository:
    """A new process's view: nothing cached."""
    return Repository.open(target, REPO_KEY)


def flip(target: Target, name: str, offset: int) -> None:
    data = bytearray(target.get(name))
    data[offset] ^= 0x40
    target.put(name, bytes(data))


def problem(repo: Repository, deep: bool) -> tuple[type, str]:
    """The one damaged object verify found (its class and message). A deep verify also
    names, as BlobMissing, each backup record whose blob sat in the damaged object."""
    report = verify(repo, deep=deep)
    first = [p for p in report.problems if not isinstance(p.error, BlobMissing)] or report.problems
    assert len({p.name for p in first}) == 1, report.problems
    for p in report.problems:
        if p not in first:
            assert isinstance(p.error, BlobMissing) and p.name.startswith("backups/b-"), p
    return type(first[0].error), str(first[0].error)


def test_altered_blob_is_named_by_restore_and_deep_verify(repo: Repository) -> None:
    info, pack, entry = stored(repo, some_volume())
    flip(repo.target, pack, entry.offset + 5)
    r = fresh(repo.target)
    with pytest.raises(ObjectCorrupt) as err:
        restore(r, info.backup_id)
    assert type(err.value) is ObjectCorrupt
    assert pack in str(err.value) and entry.blob_id.hex() in str(err.value)
    assert "fails authentication" in str(err.value) and "\n" not in str(err.value)
    assert verify(r).ok                                  # same size: only a deep verify reads it
    cls, message = problem(r, deep=True)
    assert cls is ObjectCorrupt and pack in message and entry.blob_id.hex() in message


def test_missing_pack_is_named(repo: Repository) -> None:
    info, pack, _entry = stored(repo, some_volume())
    repo.target.delete(pack)
    r = fresh(repo.target)
    with pytest.raises(ObjectMissing, match=f"backup object {pack} is missing from"):
        restore(r, info.backup_id)
    cls, message = problem(r, deep=False)
    assert cls is ObjectMissing and pack in message


def test_truncated_pack_is_named(repo: Repository) -> None:
    info, pack, entry = stored(repo, some_volume())
    data = repo.target.get(pack)
    repo.target.put(pack, data[:entry.offset + entry.stored_len // 2])
    r = fresh(repo.target)
    with pytest.raises(ObjectTruncated) as err:
        restore(r, info.backup_id)
    assert pack in str(err.value)
    cls, message = problem(r, deep=False)
    assert cls is ObjectTruncated and pack in message


def test_moved_pack_fails_authentication(repo: Repository) -> None:
    """Pack B's bytes under pack A's name: the AAD binds the pack id, so this is no copy of A."""
    vol = some_volume()
    info = backup(repo, vol)
    other = Vol(vol_id="vol-2")
    other.set(b"x", b"", [b"something else" * 1000])
    backup(repo, other)
    packs = sorted(repo.list_packs().items(), key=lambda p: -p[1])
    a, b = (pack_name(p) for p, _ in packs[:2])
    repo.target.put(a, repo.target.get(b))
    r = fresh(repo.target)
    with pytest.raises(ObjectCorrupt) as err:
        restore(r, info.backup_id)
    assert a in str(err.value)


def test_altered_sealed_blob_fails_its_hash(repo: Repository) -> None:
    info, pack, entry = stored(repo, some_volume(encrypted=True), sealed=True)
    flip(repo.target, pack, entry.offset + 20)
    r = fresh(repo.target)
    with pytest.raises(ObjectCorrupt, match="does not match its hash") as err:
        restore(r, info.backup_id, encrypted=True)
    assert pack in str(err.value)
    cls, message = problem(r, deep=True)
    assert cls is ObjectCorrupt and pack in message


def test_altered_pack_index_is_found_by_deep_verify(repo: Repository) -> None:
    _info, pack, _entry = stored(repo, some_volume())
    size = repo.target.head(pack)
    assert size is not None
    flip(repo.target, pack, size - 20)                     # inside the pack's own index
    r = fresh(repo.target)
    cls, message = problem(r, deep=True)
    assert cls is ObjectCorrupt and pack in message and "index" in message


@pytest.mark.parametrize("where", ["header", "body", "cut"])
def test_damaged_manifest_is_named(repo: Repository, where: str) -> None:
    info, _pack, _entry = stored(repo, some_volume())
    name = BACKUPS + info.backup_id
    data = repo.target.get(name)
    if where == "cut":
        repo.target.put(name, data[:-10])
        expected: type = ObjectTruncated
    else:
        flip(repo.target, name, 30 if where == "header" else len(data) - 5)
        expected = ObjectCorrupt
    r = fresh(repo.target)
    with pytest.raises(expected) as err, open_backup(r, info.backup_id):
        pass
    assert type(err.value) is expected and name in str(err.value)
    if where == "header":
        with pytest.raises(ObjectCorrupt, match=name):
            r.list_backups()
    cls, message = problem(r, deep=False)
    assert cls is expected and name in message


def test_lost_index_is_named_then_rebuilt_from_the_packs(repo: Repository) -> None:
    vol = some_volume()
    info = backup(repo, vol)
    for name, _size in list(repo.target.list("index/")):
        repo.target.delete(name)
    r = fresh(repo.target)
    with pytest.raises(BlobMissing, match="is not stored in"):
        restore(r, info.backup_id)
    report = verify(r)
    assert {type(p.error) for p in report.problems} == {BlobMissing}
    assert report.unindexed_packs >= 1
    assert r.rebuild_index() >= 1
    same_content(vol, restore(fresh(repo.target), info.backup_id))
    assert verify(fresh(repo.target), deep=True).ok


def test_damaged_index_object_is_named(repo: Repository) -> None:
    stored(repo, some_volume())
    (name, _size), = list(repo.target.list("index/"))
    data = repo.target.get(name)
    repo.target.put(name, data[:-3])
    cls, message = problem(fresh(repo.target), deep=False)
    assert cls is ObjectTruncated and name in message


def test_altered_config_is_named(repo: Repository) -> None:
    flip(repo.target, "config", len(repo.target.get("config")) - 3)
    with pytest.raises(ObjectCorrupt, match=r"backup object config in .* is damaged"):
        fresh(repo.target)
