"""Journal format v2 in a real volume: old volumes open, foreign and fenced records are refused.

What a user relies on: a volume written by the GalleonFS before format v2 opens and keeps
every byte, then is written in the new format; a journal file copied from another volume
is never applied (the open fails with a sentence that says what to do, and nothing is cut);
a record of a fenced-off epoch is not applied.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from galleonfs.crypto import volume_key
from galleonfs.crypto.codec import VolumeCrypto
from galleonfs.crypto.keys import KeyManager, KeySpec
from galleonfs.engine import journal
from galleonfs.engine.engine import JOURNAL_DIR, Engine
from galleonfs.engine.fsck import check_engine
from galleonfs.errors import Corrupt, NotFound
from galleonfs.meta import schema
from galleonfs.meta.schema import Db
from galleonfs.meta.store import MetaStore
from galleonfs.storage import Storage
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 4096


def make_volume(tmp_path: Path, name: str, keys: KeyManager | None = None) -> str:
    vol = str(tmp_path / name)
    Engine.create(vol, size=256 << 20, block_size=BS, keys=keys)
    return vol


def write_file(vfs: Vfs, name: str, data: bytes) -> None:
    ino = vfs.create(1, name.encode(), 0o644, ROOT_CTX).ino
    vfs.write(ino, 0, data)
    vfs.release(ino)
    vfs.forget([(ino, 1)])


def read_file(vfs: Vfs, name: str) -> bytes:
    ino = vfs.lookup(1, name.encode()).ino
    return vfs.read(ino, 0, 1 << 20)


def crash_after_writes(vol: str, files: dict[str, bytes], keys: KeyManager | None = None) -> None:
    """Write ``files``, commit, and stop without a checkpoint: the journal holds them all."""
    engine = Engine.open(vol, keys=keys)
    vfs = Vfs(engine, atime=False)
    for name, data in files.items():
        write_file(vfs, name, data)
    engine.commit()
    engine.close(checkpoint=False)


def journal_files(vol: str) -> list[str]:
    return [path for _, path in journal.list_files(Storage(), os.path.join(vol, JOURNAL_DIR))]


def spans_of(path: str) -> list[tuple[int, int, journal.Record]]:
    f = Storage().open_file(path, writable=False)
    try:
        first = int(os.path.basename(path)[:16], 16)
        return list(journal.read_records(f, first))
    finally:
        f.close()


def records_of(path: str, crypto: VolumeCrypto | None = None) -> list[journal.Record]:
    f = Storage().open_file(path, writable=False)
    try:
        first = int(os.path.basename(path)[:16], 16)
        return [r for _, _, r in journal.read_records(f, first, crypto)]
    finally:
        f.close()


def set_format_version(vol: str, version: int) -> None:
    meta = MetaStore(vol)
    meta.put(Db.SUPER, b"format_version", schema.encode_super_int(version))
    meta.take_changes()
    meta.close(commit=True)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_volume_of_format_3_with_a_v1_journal_opens_and_is_upgraded(tmp_path: Path, encrypted: bool) -> None:
    keys = KeySpec(key_file=str(tmp_path / "kek")).manager() if encrypted else None
    vol = make_volume(tmp_path, "old", keys)
    files = {f"f{i}": os.urandom(BS * (i + 1) + i) for i in range(5)}
    crash_after_writes(vol, files, keys)
    crypto = volume_key.load(vol, keys).crypto() if keys is not None else None
    # Rewrite the journal as the GalleonFS before v2 wrote it, and the format version too.
    (path,) = journal_files(vol)
    records = records_of(path, crypto)
    assert records and all(r.version == 2 for r in records)
    old = b""
    for r in records:
        body = journal.encode_body(r.frames, r.changes)     # v1 had no inline frames
        old += journal.encode_record_v1(r.lsn, crypto.seal_record(r.lsn, body) if crypto else body)
    Path(path).write_bytes(old)
    set_format_version(vol, 3)

    engine = Engine.open(vol, keys=keys)
    try:
        assert engine.replay.records == len(records) and engine.replay.torn_tail is None
        vfs = Vfs(engine, atime=False)
        assert {name: read_file(vfs, name) for name in files} == files
        assert engine.sb.format_version == schema.FORMAT_VERSION
        write_file(vfs, "new", b"written in v2")
        engine.commit()
    finally:
        engine.close(checkpoint=False)
    # The upgrade was journaled (v2 records only from now on) and survives a crash.
    new_records = [r for p in journal_files(vol) for r in records_of(p, crypto)]
    assert new_records and all(r.version == 2 for r in new_records)
    engine = Engine.open(vol, keys=keys)
    try:
        vfs = Vfs(engine, atime=False)
        assert read_file(vfs, "new") == b"written in v2"
        assert {name: read_file(vfs, name) for name in files} == files
        assert engine.sb.format_version == schema.FORMAT_VERSION
        assert check_engine(engine).clean
    finally:
        engine.close()


def test_a_journal_file_of_another_volume_is_never_applied(tmp_path: Path) -> None:
    a, b = make_volume(tmp_path, "a"), make_volume(tmp_path, "b")
    crash_after_writes(a, {"same": b"volume a's bytes"})
    crash_after_writes(b, {"same": b"volume b's bytes"})
    (path_a,), (path_b,) = journal_files(a), journal_files(b)
    assert os.path.basename(path_a) == os.path.basename(path_b)    # same LSNs: only the tag differs
    foreign = Path(path_a).read_bytes()
    Path(path_b).write_bytes(foreign)
    with pytest.raises(Corrupt) as info:
        Engine.open(b)
    message = str(info.value)
    assert "another volume" in message and "move it out of" in message
    assert Path(path_b).read_bytes() == foreign                     # nothing cut, nothing applied
    # Moved away, the volume opens (without what only that file held).
    os.rename(path_b, str(tmp_path / "moved.wal"))
    engine = Engine.open(b)
    try:
        with pytest.raises(NotFound):
            Vfs(engine, atime=False).lookup(1, b"same")
    finally:
        engine.close()


def test_a_record_of_a_fenced_off_epoch_is_not_applied(tmp_path: Path) -> None:
    vol = make_volume(tmp_path, "vol")
    crash_after_writes(vol, {"kept": b"epoch 0"})
    (path,) = journal_files(vol)
    spans = spans_of(path)
    records = [r for _, _, r in spans]
    tag = records[-1].tag
    # A whole, checksummed record from epoch 1 (a primary this node never was): not replayed.
    stale = journal.encode_record(records[-1].lsn + 1, journal.encode_body([], [(Db.SUPER, b"name", b"hijacked")]),
                                  journal.Stamp(tag=tag, epoch=1))
    with open(path, "r+b") as f:                 # right after the last record (zeros follow it)
        f.seek(spans[-1][1])
        f.write(stale)
    engine = Engine.open(vol)
    try:
        assert "epoch 1" in (engine.replay.torn_tail or "")
        assert engine.meta.get(Db.SUPER, b"name") != b"hijacked"
        assert read_file(Vfs(engine, atime=False), "kept") == b"epoch 0"
    finally:
        engine.close()
