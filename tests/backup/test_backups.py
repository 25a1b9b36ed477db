"""Backups restore on their own, incrementals send only what changed, and a fresh process
with only the target and the key lists and restores everything (disaster recovery)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from galleonfs.backup import (
    DirectoryTarget,
    Progress,
    Repository,
    Target,
    begin_backup,
    limits,
    open_backup,
    verify,
)
from galleonfs.backup.errors import BackupNotFound, RepositoryKeyRejected
from galleonfs.backup.keys import RepositoryKey
from galleonfs.backup.manifests import BackupInfo
from galleonfs.backup.testing import MotoServer
from galleonfs.errors import InvalidArgument

from .util import REPO_KEY, Vol, backup, block_id, new_bucket, restore, s3_target, same_content


def mixed_block(rng: random.Random, size: int = 64 * 1024) -> bytes:
    """Half random, half zeros: compressible but not trivially."""
    half = size // 2
    return rng.randbytes(half) + bytes(size - half)


def test_full_then_incremental_restore_on_their_own(repo: Repository) -> None:
    rng = random.Random(1)
    vol = Vol()
    for i in range(120):
        vol.set(b"f%05d" % i, b"inode %d" % i, [mixed_block(rng)])
    first = backup(repo, vol)
    v1 = vol.copy()
    for i in (3, 40, 41, 99):
        vol.set(b"f%05d" % i, b"changed", [mixed_block(rng)])
    del vol.records[b"f%05d" % 7]
    vol.set(b"g00001", b"new file", [mixed_block(rng), mixed_block(rng)])
    second = backup(repo, vol, parent=(first, v1))

    assert second.stats["blobs_new"] == 6          # 4 changed + 2 new blocks, nothing else
    assert second.stats["bytes_new"] == 6 * 64 * 1024
    assert second.records == len(vol.records) and second.refs == 121 - 1 + 1
    same_content(v1, restore(repo, first.backup_id))
    same_content(vol, restore(repo, second.backup_id))
    assert [b.backup_id for b in repo.list_backups("vol-1")] == [first.backup_id, second.backup_id]


def test_incremental_cost_follows_the_change_not_the_table(dir_repo: Repository) -> None:
    """20 000 records (~1.2 MB, ~18 table chunks of ~64 KiB); changing 4 records reads and
    writes a few chunks, not the table."""
    vol = Vol()
    shared = os.urandom(4096)
    for i in range(20000):
        vol.records[b"r%08d" % (i * 10)] = (b"x" * 40, ())
    vol.set(b"blk", b"", [shared])
    first = backup(dir_repo, vol)
    assert first.chunks >= 12
    v1 = vol.copy()
    for i in (5, 10000, 19990):
        vol.records[b"r%08d" % (i * 10)] = (b"changed", ())
    vol.records[b"r%08d" % 55] = (b"inserted", ())
    second = backup(dir_repo, vol, parent=(first, v1))
    assert second.stats["chunks_loaded"] <= 2 * 4
    assert second.stats["chunks_new"] <= 2 * 4
    assert second.stats["chunks_carried"] >= first.chunks - 2 * 4
    assert second.stats["bytes_stored"] < 8 * limits.chunk_max_bytes
    same_content(vol, restore(dir_repo, second.backup_id))


def test_encrypted_volume_blocks_stay_its_ciphertext(repo: Repository) -> None:
    rng = random.Random(2)
    vol = Vol(encrypted=True)
    for i in range(10):
        vol.set(b"k%d" % i, b"v", [rng.randbytes(8192)])
    info = backup(repo, vol)
    with open_backup(repo, info.backup_id) as reader:
        for _records, blobs in reader.walk():
            for bid, (kind, data) in blobs.items():
                assert kind == 3 and data == vol.frames[bid]   # stored and returned as given
    same_content(vol, restore(repo, info.backup_id, encrypted=True))


def test_progress_reports_bytes_and_finishes(dir_repo: Repository) -> None:
    seen: list[Progress] = []
    vol = Vol()
    for i in range(8):
        vol.set(b"k%d" % i, b"", [os.urandom(1 << 20)])
    with begin_backup(dir_repo, volume_name="db", volume_id="vol-1", generation=1,
                      progress=seen.append) as w:
        for key, (value, refs) in sorted(vol.records.items()):
            for bid in refs:
                w.put_blob(bid, vol.blocks[bid])
            w.put_record(key, value, refs)
        w.commit()
    assert seen[-1].done and seen[-1].bytes_done == 8 << 20
    assert seen[-1].bytes_transferred > 8 << 20           # random data: sealed, not smaller
    assert seen[-1].eta_s(8 << 20) == 0.0


def test_bad_calls_get_one_sentence(dir_repo: Repository) -> None:
    with begin_backup(dir_repo, volume_name="db", volume_id="v", generation=1) as w:
        w.put_record(b"b", b"")
        with pytest.raises(InvalidArgument, match="strictly increasing key order"):
            w.put_record(b"a", b"")
        with pytest.raises(InvalidArgument, match="which is not stored: put_blob it first"):
            w.put_record(b"c", b"", [b"\1" * 32])
    assert dir_repo.list_backups() == []                   # aborted: no backup
    with pytest.raises(BackupNotFound, match="backup b-nope does not exist in file://"):
        open_backup(dir_repo, "b-nope")
    with pytest.raises(RepositoryKeyRejected, match="the passphrase does not open the backup repository"):
        Repository.open(dir_repo.target, RepositoryKey.from_passphrase("wrong"))


# --- a hypothesis-generated history ----------------------------------------------------------

contents = st.sampled_from([bytes([i]) * 3000 + bytes([i, 7]) * 500 for i in range(12)]
                           + [random.Random(i).randbytes(2500) for i in range(12)])
keys = st.binary(min_size=1, max_size=6)
step = st.fixed_dictionaries({
    "set": st.dictionaries(keys, st.tuples(st.binary(max_size=300), st.lists(contents, max_size=3)), max_size=25),
    "drop": st.lists(keys, max_size=6),
    "incremental": st.booleans(),
})


def small_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny packs and chunks so that a few KiB exercise many packs and chunk cuts."""
    monkeypatch.setattr(limits, "pack_target_bytes", 16 * 1024)
    monkeypatch.setattr(limits, "chunk_min_bytes", 128)
    monkeypatch.setattr(limits, "chunk_avg_extra_bytes", 512)
    monkeypatch.setattr(limits, "chunk_max_bytes", 2048)
    monkeypatch.setattr(limits, "index_flush_packs", 3)


def run_history(target: Target, history: list[dict[str, object]], encrypted: bool) -> None:
    with Repository.init(target, REPO_KEY) as repo:
        vol = Vol(encrypted=encrypted)
        done: list[tuple[BackupInfo, Vol]] = []
        for s in history:
            for key, (value, blocks) in s["set"].items():  # type: ignore[attr-defined]
                vol.set(key, value, blocks)
            for key in s["drop"]:  # type: ignore[attr-defined]
                vol.records.pop(key, None)
            stored_before = {bid for bid, _ in repo.index.blobs.items()}
            parent = done[-1] if s["incremental"] and done else None
            info = backup(repo, vol, parent=parent)
            new_blocks = {b for _v, refs in vol.records.values() for b in refs} - stored_before
            assert info.stats["blobs_new"] == len(new_blocks)   # only blobs not stored yet
            done.append((info, vol.copy()))
        # every backup restores on its own, whatever came before or after it
        for info, expected in done:
            same_content(expected, restore(repo, info.backup_id, encrypted=encrypted))
        assert verify(repo, deep=True).ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(step, min_size=1, max_size=6), encrypted=st.booleans())
def test_history_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                           history: list[dict[str, object]], encrypted: bool) -> None:
    small_everything(monkeypatch)
    run_history(DirectoryTarget(tmp_path_factory.mktemp("h") / "repo", create=True), history, encrypted)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(step, min_size=1, max_size=5), encrypted=st.booleans())
def test_history_s3(moto: MotoServer, monkeypatch: pytest.MonkeyPatch,
                    history: list[dict[str, object]], encrypted: bool) -> None:
    small_everything(monkeypatch)
    run_history(s3_target(moto, new_bucket(moto)), history, encrypted)


# --- disaster recovery -----------------------------------------------------------------------

RESTORE_ELSEWHERE = textwrap.dedent("""
    import hashlib, json, sys
    from galleonfs.backup import Repository, RepositoryKey, open_backup, open_target
    spec = json.loads(sys.argv[1])
    target = open_target(spec["url"], endpoint=spec.get("endpoint"), region=spec.get("region"),
                         credentials_env=spec.get("credentials_env"))
    with Repository.open(target, RepositoryKey.from_passphrase(spec["passphrase"])) as repo:
        out = {}
        for info in repo.list_backups():
            h = hashlib.sha256()
            with open_backup(repo, info.backup_id) as r:
                blobs = {}
                for records, got in r.walk():
                    blobs.update({k.hex(): d for k, (_kind, d) in got.items()})
                    for rec in records:
                        h.update(rec.key + rec.value)
                        for ref in rec.refs:
                            h.update(blobs[ref.hex()])
            out[info.backup_id] = [info.volume_name, h.hexdigest()]
        print(json.dumps(out))
""")


def expected_digest(vol: Vol) -> str:
    import hashlib

    h = hashlib.sha256()
    for key in sorted(vol.records):
        value, refs = vol.records[key]
        h.update(key + value)
        for bid in refs:
            h.update(vol.blocks[bid])
    return h.hexdigest()


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_fresh_process_lists_and_restores_from_target_and_key_alone(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "dir":
        target: Target = DirectoryTarget(tmp_path / "repo", create=True)
    else:
        server: MotoServer = request.getfixturevalue("moto")
        target = s3_target(server, new_bucket(server))
    key = RepositoryKey.from_passphrase("correct horse battery staple")
    rng = random.Random(3)
    expected = {}
    with Repository.init(target, key) as repo:
        for name in ("db", "web"):
            vol = Vol(name=name, vol_id=f"id-{name}")
            for i in range(30):
                vol.set(b"%d" % i, name.encode(), [mixed_block(rng, 8192)])
            first = backup(repo, vol)
            expected[first.backup_id] = [name, expected_digest(vol)]
            v1 = vol.copy()
            vol.set(b"new", b"x", [mixed_block(rng, 8192)])
            second = backup(repo, vol, parent=(first, v1))
            expected[second.backup_id] = [name, expected_digest(vol)]
    spec = {**target.describe(), "passphrase": "correct horse battery staple"}
    out = subprocess.run([sys.executable, "-c", RESTORE_ELSEWHERE, json.dumps(spec)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected


def test_block_ids_are_the_callers(dir_repo: Repository) -> None:
    """The repository stores and finds blobs under the volume's own keyed ids."""
    vol = Vol()
    vol.set(b"a", b"", [b"hello" * 100])
    info = backup(dir_repo, vol)
    bid = block_id(b"hello" * 100)
    assert dir_repo.has_blob(bid)
    assert dir_repo.read_blob(bid) == b"hello" * 100
    assert info.refs == 1


def test_keys_can_be_added_and_removed(dir_repo: Repository) -> None:
    vol = Vol()
    vol.set(b"a", b"", [b"data" * 100])
    info = backup(dir_repo, vol)
    passphrase = RepositoryKey.from_passphrase("new passphrase")
    dir_repo.add_key(passphrase)
    with pytest.raises(InvalidArgument, match=r"opens the backup repository at .* already"):
        dir_repo.add_key(passphrase)
    with Repository.open(dir_repo.target, passphrase) as other:
        same_content(vol, restore(other, info.backup_id))
        other.remove_key(REPO_KEY)
        with pytest.raises(InvalidArgument, match="is the last one"):
            other.remove_key(passphrase)
    with pytest.raises(RepositoryKeyRejected, match="the key does not open"):
        Repository.open(dir_repo.target, REPO_KEY)
    with Repository.open(dir_repo.target, passphrase) as again:
        same_content(vol, restore(again, info.backup_id))
