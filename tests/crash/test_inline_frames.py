"""Power cuts around inline frames (journal format v2, docs/design.md "Engine").

A small write's frames travel inside its journal record, so the commit an ``fsync`` waits
for syncs the journal only; the segment copy is synced later. These tests cut the power
(``FaultyStorage``: what was not synced is gone) or damage the files by hand at the places
that design adds, and check what a user relies on: every byte an fsync covered reads back
exactly, a torn record is not applied, the volume is fsck-clean, and a read-only open sees
the data without writing anything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from galleonfs import limits
from galleonfs.crypto.keys import KeySpec
from galleonfs.engine import crashpoints, journal, segments
from galleonfs.engine.engine import DATA_DIR, JOURNAL_DIR, Engine
from galleonfs.engine.fsck import check_engine
from galleonfs.errors import NotFound
from galleonfs.storage import Storage
from galleonfs.testing.faulty import FaultyStorage
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 4096


def new_volume(tmp_path: Path, block_size: int = BS) -> tuple[str, FaultyStorage]:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=block_size)
    storage = FaultyStorage()
    storage.snapshot_meta(vol)
    return vol, storage


def write_file(vfs: Vfs, name: str, data: bytes, offset: int = 0) -> None:
    try:
        ino = vfs.lookup(1, name.encode()).ino
        vfs.open(ino, True)
    except NotFound:
        ino = vfs.create(1, name.encode(), 0o644, ROOT_CTX).ino
    vfs.write(ino, offset, data)
    vfs.release(ino)
    vfs.forget([(ino, 1)])


def read_file(vfs: Vfs, name: str) -> bytes:
    return vfs.read(vfs.lookup(1, name.encode()).ino, 0, 1 << 22)


def fsync_commit(engine: Engine) -> tuple[int, int]:
    """What the mount worker's ``Committer`` does for an fsync; returns (data files, journal
    files) it synced."""
    batch = engine.begin_commit()
    batch.run()
    engine.end_commit(batch)
    return len(batch.data_files), len(batch.journal_files)


def segment_paths(vol: str) -> list[Path]:
    return sorted(Path(vol, DATA_DIR).glob("*" + segments.SUFFIX))


def test_an_fsync_after_a_small_write_syncs_the_journal_only(tmp_path: Path) -> None:
    vol, storage = new_volume(tmp_path)
    engine = Engine.open(vol, storage=storage)
    try:
        vfs = Vfs(engine, atime=False)
        write_file(vfs, "log", os.urandom(BS))          # the first creates the segment file
        engine.commit()
        syncs = storage.syncs
        write_file(vfs, "log", os.urandom(BS), offset=BS)
        assert fsync_commit(engine) == (0, 1)
        assert storage.syncs == syncs + 1                 # one fdatasync for one append+fsync
        # Once the window of inline bytes is full, a record no longer carries its frames,
        # and the next commit syncs the segment too (what recovery must write back stays bounded).
        synced_data = 0
        for i in range(limits.journal_inline_window_bytes // BS + 2):
            write_file(vfs, "log", os.urandom(BS), offset=(i + 2) * BS)
            data_files, _ = fsync_commit(engine)
            synced_data += data_files
        assert synced_data == 1
    finally:
        engine.close()


@pytest.mark.parametrize(("block_size", "encrypted"), [(BS, False), (64 * 1024, False), (BS, True)],
                         ids=["4k", "64k", "4k_encrypted"])
def test_a_power_cut_after_fsync_restores_inline_frames_byte_exact(tmp_path: Path, block_size: int,
                                                                   encrypted: bool) -> None:
    keys = KeySpec(key_file=str(tmp_path / "kek")).manager() if encrypted else None
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=block_size, keys=keys)
    storage = FaultyStorage()
    storage.snapshot_meta(vol)
    engine = Engine.open(vol, storage=storage, keys=keys)
    vfs = Vfs(engine, atime=False)
    files = {"a": os.urandom(100), "b": os.urandom(block_size + 1), "c": os.urandom(2 * block_size)}
    for name, data in files.items():
        write_file(vfs, name, data)
        fsync_commit(engine)
    write_file(vfs, "a", b"overwritten", offset=50)     # a partial-block write, then its fsync
    fsync_commit(engine)
    files["a"] = files["a"][:50] + b"overwritten" + files["a"][61:]
    seg_sizes = {p: p.stat().st_size for p in segment_paths(vol)}
    engine.close(checkpoint=False)
    storage.power_cut()                                  # every unsynced byte is gone
    # The design's point: the segments lost what the fsyncs wrote to them.
    assert any(p.stat().st_size < size for p, size in seg_sizes.items())

    engine = Engine.open(vol, storage=storage, keys=keys)
    try:
        assert engine.replay.frames_restored > 0
        assert engine.replay.torn_tail is None
        vfs = Vfs(engine, atime=False)
        assert {name: read_file(vfs, name) for name in files} == files
        report = check_engine(engine)
        assert report.clean, report.render()
    finally:
        engine.close(checkpoint=False)
    # The recovery synced what it wrote back and checkpointed: a second cut loses nothing.
    storage.power_cut()
    engine = Engine.open(vol, storage=storage, keys=keys)
    try:
        assert engine.replay.frames_restored == 0
        assert {name: read_file(Vfs(engine, atime=False), name) for name in files} == files
    finally:
        engine.close()


def _inline_record_spans(vol: str) -> tuple[str, list[tuple[int, int, journal.Record]]]:
    (path,) = [p for _, p in journal.list_files(Storage(), os.path.join(vol, JOURNAL_DIR))]
    f = Storage().open_file(path, writable=False)
    try:
        first = int(os.path.basename(path)[:16], 16)
        return path, list(journal.read_records(f, first))
    finally:
        f.close()


def test_a_record_torn_inside_its_inline_frames_is_not_applied(tmp_path: Path) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    kept, torn = os.urandom(3 * BS), os.urandom(2 * BS)
    write_file(vfs, "kept", kept)
    fsync_commit(engine)
    write_file(vfs, "torn", torn)
    engine.close(checkpoint=False)
    path, spans = _inline_record_spans(vol)
    start, end, last = spans[-1]
    assert last.inline is not None and len(last.inline) > 2 * BS
    # The power cut took the segments' copies and the end of the last record, in the
    # middle of its inline frames.
    for seg in segment_paths(vol):
        os.truncate(seg, 0)
    os.truncate(path, start + journal.HEADER_SIZE + (end - start - journal.HEADER_SIZE) // 2)

    engine = Engine.open(vol)
    try:
        assert engine.replay.torn_tail is not None and "checksum" in engine.replay.torn_tail
        vfs = Vfs(engine, atime=False)
        assert read_file(vfs, "kept") == kept
        assert read_file(vfs, "torn") == b""             # created by an earlier record, not written
        report = check_engine(engine)
        assert report.clean, report.render()
        write_file(vfs, "after", b"written after the cut")
    finally:
        engine.close()
    engine = Engine.open(vol)
    try:
        assert read_file(Vfs(engine, atime=False), "after") == b"written after the cut"
    finally:
        engine.close()


def test_zeros_ahead_of_the_write_point_end_the_journal_cleanly(tmp_path: Path) -> None:
    """Space the file system zeroed past the last record (a preallocated or lost page)."""
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=BS)
    engine = Engine.open(vol)
    data = os.urandom(5 * BS)
    write_file(Vfs(engine, atime=False), "f", data)
    fsync_commit(engine)
    engine.close(checkpoint=False)
    path, spans = _inline_record_spans(vol)
    with open(path, "ab") as f:
        f.write(bytes(256 * 1024))
    engine = Engine.open(vol)
    try:
        assert engine.replay.records == len(spans)
        assert engine.replay.torn_tail is None          # zeros after the last record: its end
        assert read_file(Vfs(engine, atime=False), "f") == data
    finally:
        engine.close()


def test_a_read_only_open_after_a_power_cut_serves_inline_frames_and_writes_nothing(tmp_path: Path) -> None:
    vol, storage = new_volume(tmp_path)
    engine = Engine.open(vol, storage=storage)
    data = os.urandom(7 * BS + 3)
    write_file(Vfs(engine, atime=False), "f", data)
    fsync_commit(engine)
    engine.close(checkpoint=False)
    storage.power_cut()

    def fingerprint() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in Path(vol).rglob("*") if p.is_file() and p.name not in ("LOCK", "lock.mdb")}

    before = fingerprint()
    engine = Engine.open(vol, read_only=True)
    try:
        assert engine.replay.frames_restored > 0
        assert read_file(Vfs(engine, atime=False), "f") == data
    finally:
        engine.close()
    assert fingerprint() == before
    engine = Engine.open(vol)                           # read-write: written back for good
    try:
        assert read_file(Vfs(engine, atime=False), "f") == data
        assert check_engine(engine).clean
    finally:
        engine.close()


def test_a_record_written_into_synced_zeros_is_lost_cleanly_without_its_commit(tmp_path: Path) -> None:
    """The journal writes records into zeros that an earlier commit made durable: a power
    cut before the next commit takes the record (zeros again), and nothing before it."""
    vol, storage = new_volume(tmp_path)
    engine = Engine.open(vol, storage=storage)
    vfs = Vfs(engine, atime=False)
    committed = os.urandom(2 * BS)
    write_file(vfs, "committed", committed)
    fsync_commit(engine)                                 # its record and the zeros after it
    journal_size = sum(p.stat().st_size for p in Path(vol, JOURNAL_DIR).iterdir())
    write_file(vfs, "uncommitted", os.urandom(BS))
    assert sum(p.stat().st_size for p in Path(vol, JOURNAL_DIR).iterdir()) == journal_size
    engine.close(checkpoint=False)
    lost = storage.power_cut()
    assert any("written at" in what for what in lost), lost
    engine = Engine.open(vol, storage=storage)
    try:
        vfs = Vfs(engine, atime=False)
        assert read_file(vfs, "committed") == committed
        with pytest.raises(NotFound):
            vfs.lookup(1, b"uncommitted")
        assert engine.replay.torn_tail is None
        assert check_engine(engine).clean
    finally:
        engine.close()


def test_zeros_left_in_rolled_journal_files_do_not_stop_replay(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "journal_file_size_max_bytes", 64 * 1024)
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = {f"f{i}": os.urandom(BS + i) for i in range(40)}
    for name, data in files.items():
        write_file(vfs, name, data)
        fsync_commit(engine)
    engine.close(checkpoint=False)
    wal = sorted(Path(vol, JOURNAL_DIR).iterdir())
    assert len(wal) > 2
    assert all(p.read_bytes().endswith(bytes(1024)) for p in wal[:-1])    # rolled with zeros ahead
    engine = Engine.open(vol)
    try:
        assert engine.replay.torn_tail is None
        vfs = Vfs(engine, atime=False)
        assert {name: read_file(vfs, name) for name in files} == files
    finally:
        engine.close()


@pytest.mark.parametrize("cut", [1, 20, journal.HEADER_SIZE - 1])
def test_a_torn_record_header_ends_replay_before_it(tmp_path: Path, cut: int) -> None:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    kept = os.urandom(BS + 7)
    write_file(vfs, "kept", kept)
    write_file(vfs, "torn", os.urandom(BS))
    engine.close(checkpoint=False)
    path, spans = _inline_record_spans(vol)
    start, _end, _record = spans[-1]
    with open(path, "r+b") as f:                       # the header's first bytes, then zeros
        f.seek(start + cut)
        f.write(bytes(spans[-1][1] - start - cut))
    engine = Engine.open(vol)
    try:
        assert engine.replay.records == len(spans) - 1
        assert engine.replay.torn_tail is not None
        vfs = Vfs(engine, atime=False)
        assert read_file(vfs, "kept") == kept
        assert read_file(vfs, "torn") == b""
        assert check_engine(engine).clean
    finally:
        engine.close()


def test_power_cut_while_recovery_restores_inline_frames(tmp_path: Path) -> None:
    """The restored frames are not synced yet when the power goes again: the next recovery
    restores them again (replay is idempotent), byte-exact."""
    vol, storage = new_volume(tmp_path)
    engine = Engine.open(vol, storage=storage)
    vfs = Vfs(engine, atime=False)
    files = {f"f{i}": os.urandom(BS * (i + 1) - i) for i in range(4)}
    for name, data in files.items():
        write_file(vfs, name, data)
        fsync_commit(engine)
    engine.close(checkpoint=False)
    storage.power_cut()
    crashpoints.arm("recovery.after_restoring_inline_frames")
    with pytest.raises(crashpoints.SimulatedCrash):
        Engine.open(vol, storage=storage)
    crashpoints.disarm_all()
    storage.power_cut()
    engine = Engine.open(vol, storage=storage)
    try:
        assert engine.replay.frames_restored > 0
        vfs = Vfs(engine, atime=False)
        assert {name: read_file(vfs, name) for name in files} == files
        assert check_engine(engine).clean
    finally:
        engine.close()
