"""Engine tier: journal, replay, torn tails, GC, dedup and opening rules, without a kernel.

Everything goes through the real engine and the real VFS on a temporary volume directory;
damage (a torn journal tail, a missing frame) is made with plain file operations on the
closed volume, the way a crash or a bad disk leaves it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from galleonfs import limits
from galleonfs.engine import crashpoints, frames, journal, segments
from galleonfs.engine.engine import JOURNAL_DIR, Engine
from galleonfs.engine.fsck import check_engine, fsck
from galleonfs.errors import Busy, Corrupt, FormatError, NeedsCheck, NotFound, ReadOnly
from galleonfs.meta import schema
from galleonfs.meta.schema import Db
from galleonfs.meta.store import MetaStore
from galleonfs.storage import Storage
from galleonfs.testing.faulty import FaultyStorage
from galleonfs.vfs.vfs import ROOT_CTX, SetAttr, Vfs

BS = 4096


# --- helpers -------------------------------------------------------------------------------------
def make_volume(tmp_path: Path, block_size: int = BS, name: str = "vol") -> str:
    vol = str(tmp_path / name)
    Engine.create(vol, size=256 << 20, block_size=block_size)
    return vol


def write_file(vfs: Vfs, name: str, data: bytes, offset: int = 0) -> int:
    """Create (or open) ``name`` in the root, write, close, and let the "kernel" forget it."""
    ino = _open(vfs, name)
    if data:
        vfs.write(ino, offset, data)
    vfs.release(ino)
    vfs.forget([(ino, 1)])
    return ino


def _open(vfs: Vfs, name: str) -> int:
    found = vfs.meta.get(Db.DIRENTS, schema.dirent_key(1, name.encode()))
    if found is None:
        return vfs.create(1, name.encode(), 0o644, ROOT_CTX).ino
    ino = vfs.lookup(1, name.encode()).ino
    vfs.open(ino, True)
    return ino


def tree(vfs: Vfs, ino: int = 1, prefix: str = "") -> dict[str, bytes | None]:
    """Every name below ``ino``: a file's content, None for a directory."""
    out: dict[str, bytes | None] = {}
    for entry in vfs.readdir(ino, 0):
        if entry.name in (b".", b".."):
            continue
        path = prefix + entry.name.decode()
        if stat.S_ISDIR(entry.inode.mode):
            out[path] = None
            out.update(tree(vfs, entry.inode.ino, path + "/"))
        else:
            out[path] = vfs.read(entry.inode.ino, 0, entry.inode.size)
    return out


def dump_meta(engine: Engine) -> dict[int, dict[bytes, bytes]]:
    """Every metadata record, for comparing two states (the applied LSN aside)."""
    out = {}
    for db in Db:
        out[db] = {bytes(k): bytes(v) for k, v in engine.meta.scan(db)}
    del out[Db.SUPER][b"applied_lsn"]
    return out


def assert_clean(vol: str) -> None:
    report = fsck(vol)
    assert report.clean, report.render()


def populate(vfs: Vfs) -> dict[str, bytes | None]:
    """A little of everything: multi-block, partial-block, overwritten, renamed, deleted."""
    rnd = os.urandom
    write_file(vfs, "big", rnd(5 * BS + 123))
    write_file(vfs, "small", b"hello")
    write_file(vfs, "over", rnd(3 * BS))
    write_file(vfs, "over", b"X" * 100, offset=BS - 50)         # straddles a block edge
    vfs.forget([(vfs.mkdir(1, b"dir", 0o755, ROOT_CTX).ino, 1)])
    write_file(vfs, "gone", rnd(2 * BS))
    vfs.unlink(1, b"gone")
    write_file(vfs, "moved", rnd(BS + 1))
    dir_ino = vfs.lookup(1, b"dir").ino
    vfs.forget([(dir_ino, 1)])
    vfs.rename(1, b"moved", dir_ino, b"moved", 0)
    ino = write_file(vfs, "cut", rnd(4 * BS))
    vfs.setattr(ino, SetAttr(size=BS + 7))
    return tree(vfs)


# --- journal records -----------------------------------------------------------------------------
def test_journal_records_round_trip_what_the_engine_wrote(tmp_path: Path) -> None:
    """Each VFS operation is one record; read back, it names exactly the changes and frames."""
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    first = engine.appended_lsn + 1
    data = os.urandom(2 * BS + 10)
    ino = vfs.create(1, b"f", 0o644, ROOT_CTX).ino
    create_lsn = engine.appended_lsn
    vfs.write(ino, 0, data)
    write_lsn = engine.appended_lsn
    vfs.release(ino)
    assert (create_lsn, write_lsn) == (first, first + 1)
    engine.commit()
    records = []
    for first_lsn, path in journal.list_files(engine.storage, engine.journal_dir):
        f = engine.storage.open_file(path, writable=False)
        try:
            records += [r for _, _, r in journal.read_records(f, first_lsn)]
        finally:
            f.close()
    assert [r.lsn for r in records] == [create_lsn, write_lsn]
    create, write = records
    assert create.frames == []
    assert (Db.DIRENTS, schema.dirent_key(1, b"f")) in {(db, k) for db, k, _ in create.changes}
    # The write record names three new frames, each whole in the segment with the CRC it has.
    assert len(write.frames) == 3
    for ref in write.frames:
        frame = engine.segments.pread(ref.seg, ref.offset, ref.length)
        header, _ = frames.verify(frame, "test")
        assert header.crc == ref.crc
    # Every change the record carries is what the metadata store holds now (versioned
    # records carry their birth generation in front, which ``get`` strips).
    for db, key, value in write.changes:
        assert value is not None
        stored = value[8:] if db in schema.VERSIONED else value
        assert engine.meta.get(Db(db), key) == stored
    engine.close()


# --- replay --------------------------------------------------------------------------------------
def test_replay_after_unclean_close_restores_everything(tmp_path: Path) -> None:
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine)
    expected = populate(vfs)
    engine.commit()
    used = engine.used_bytes
    engine.close(checkpoint=False)

    engine = Engine.open(vol)
    assert engine.replay.records > 0
    assert engine.replay.torn_tail is None
    assert tree(Vfs(engine)) == expected
    assert engine.used_bytes == used
    report = check_engine(engine)
    assert report.clean, report.render()
    # Replay ended in a checkpoint: the journal is gone and a second open replays nothing.
    engine.close(checkpoint=False)
    engine = Engine.open(vol)
    assert engine.replay.records == 0
    assert tree(Vfs(engine)) == expected
    engine.close()
    assert_clean(vol)


def test_replay_is_idempotent(tmp_path: Path) -> None:
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    expected = populate(Vfs(engine))
    engine.close(checkpoint=False)

    # Read-only opens replay into a transaction they throw away: twice gives the same state.
    states = []
    for _ in range(2):
        engine = Engine.open(vol, read_only=True)
        assert engine.replay.records > 0
        assert tree(Vfs(engine, atime=False)) == expected
        states.append(dump_meta(engine))
        # Applying every record a second time on top of the replayed state changes nothing.
        for first_lsn, path in journal.list_files(engine.storage, engine.journal_dir):
            f = engine.storage.open_file(path, writable=False)
            try:
                for _, _, record in journal.read_records(f, first_lsn):
                    engine.meta.apply(record.changes)
            finally:
                f.close()
        assert dump_meta(engine) == states[-1]
        engine.close()
    assert states[0] == states[1]

    # A read-write open replays the same records once more and keeps them.
    engine = Engine.open(vol)
    assert dump_meta(engine) == states[0]
    engine.close()
    engine = Engine.open(vol)
    assert engine.replay.records == 0
    assert dump_meta(engine) == states[0]
    engine.close()
    assert_clean(vol)


def _journal_files(vol: str) -> list[str]:
    return [p for _, p in journal.list_files(Storage(), os.path.join(vol, JOURNAL_DIR))]


def _record_spans(path: str, first_lsn: int) -> list[tuple[int, int]]:
    f = Storage().open_file(path, writable=False)
    try:
        return [(start, end) for start, end, _ in journal.read_records(f, first_lsn)]
    finally:
        f.close()


@pytest.mark.parametrize("damage", ["truncated", "bad_crc", "garbage_appended"])
def test_torn_journal_tail_is_cut_off(tmp_path: Path, damage: str) -> None:
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    before = populate(vfs)
    write_file(vfs, "last", b"the last record")     # create + write: the write is the tail
    engine.commit()
    engine.close(checkpoint=False)

    (path,) = _journal_files(vol)
    first_lsn = int(os.path.basename(path)[:16], 16)
    spans = _record_spans(path, first_lsn)
    start, end = spans[-1]
    if damage == "truncated":
        os.truncate(path, start + (end - start) // 2)
    elif damage == "bad_crc":
        with open(path, "r+b") as f:
            f.seek(end - 3)
            byte = f.read(1)
            f.seek(end - 3)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        with open(path, "ab") as f:                 # a half-written record after a good one
            f.write(journal.MAGIC + os.urandom(40))

    engine = Engine.open(vol)
    report = engine.replay
    assert report.torn_tail is not None
    after = tree(Vfs(engine, atime=False))
    if damage == "garbage_appended":
        assert after == {**before, "last": b"the last record"}
        assert report.records == len(spans)
    else:
        # Every record before the damaged one is there: "last" exists, its write is gone.
        assert after == {**before, "last": b""}
        assert report.records == len(spans) - 1
    # Writing goes on after the cut, and the cut is durable.
    write_file(Vfs(engine, atime=False), "next", b"after the cut")
    engine.close()
    engine = Engine.open(vol)
    assert engine.replay.torn_tail is None
    assert tree(Vfs(engine, atime=False))["next"] == b"after the cut"
    engine.close()
    assert_clean(vol)


def test_empty_journal_file_at_the_tail_does_not_block_writing(tmp_path: Path) -> None:
    """A crash right after a journal file was created leaves it empty; the next write must work.

    Regression: recovery left the empty file in place, and the next append tried to
    create it again (O_EXCL) and failed with FileExistsError.
    """
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    write_file(Vfs(engine), "a", b"a")
    next_lsn = engine.appended_lsn + 1
    engine.close()
    Path(vol, JOURNAL_DIR, journal.file_name(next_lsn)).touch()

    engine = Engine.open(vol)
    vfs = Vfs(engine)
    write_file(vfs, "b", b"b")
    engine.commit()
    engine.close(checkpoint=False)
    engine = Engine.open(vol)
    assert tree(Vfs(engine)) == {"a": b"a", "b": b"b"}
    engine.close()
    assert_clean(vol)


@pytest.mark.parametrize("inline", [False, True], ids=["segment_frames", "inline_frames"])
@pytest.mark.parametrize("damage", ["missing_segment", "torn_frame", "flipped_frame"])
def test_replay_stops_at_a_record_whose_frame_is_bad(tmp_path: Path, damage: str, inline: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames and journal are synced apart: a record may outlive the frame it names. A record
    that carries its frames (inline) puts them back instead, byte-exact."""
    if not inline:
        monkeypatch.setattr(limits, "journal_inline_record_bytes_max", 0)
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    write_file(vfs, "kept", b"k" * (2 * BS))
    engine.checkpoint()                         # "kept" lives in segment 1, checkpointed
    engine.close(checkpoint=False)
    engine = Engine.open(vol)                   # a reopened volume starts a new segment
    vfs = Vfs(engine, atime=False)
    write_file(vfs, "early", b"e" * 100)
    write_file(vfs, "lost", b"")
    lost_bytes = os.urandom(3 * BS)
    write_file(vfs, "lost", lost_bytes)         # the last frames in the segment
    write_file(vfs, "later", b"")               # a record without frames after them
    lost_seg = engine.segments.current
    assert lost_seg is not None
    engine.commit()
    engine.close(checkpoint=False)

    seg_path = Path(vol, "data", segments.file_name(lost_seg))
    size = seg_path.stat().st_size
    if damage == "missing_segment":
        # The whole segment is gone: replay stops at the write to "early", the first
        # record with a frame in it; the record that created "early" had none.
        seg_path.unlink()
        expected = {"kept": b"k" * (2 * BS), "early": b""}
    elif damage == "torn_frame":
        os.truncate(seg_path, size - 100)
        expected = {"kept": b"k" * (2 * BS), "early": b"e" * 100, "lost": b""}
    else:
        with open(seg_path, "r+b") as f:
            f.seek(size - 5)
            f.write(b"\xff")
        expected = {"kept": b"k" * (2 * BS), "early": b"e" * 100, "lost": b""}

    if inline and damage != "missing_segment":
        expected = {**expected, "lost": lost_bytes, "later": b""}
    engine = Engine.open(vol)
    assert (engine.replay.torn_tail is None) == (inline and damage != "missing_segment")
    assert (engine.replay.frames_restored > 0) == (inline and damage != "missing_segment")
    assert tree(Vfs(engine, atime=False)) == expected
    report = check_engine(engine)
    assert report.clean, report.render()
    write_file(Vfs(engine, atime=False), "new", b"n" * (BS + 1))
    engine.close()
    assert_clean(vol)


# --- garbage collection --------------------------------------------------------------------------
def test_gc_compacts_segments_and_frees_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "segment_size_max_bytes", 256 * 1024)
    vol = make_volume(tmp_path, block_size=16 * 1024)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    contents = {f"f{i:02d}": os.urandom(100 * 1024 + i) for i in range(40)}
    for name, data in contents.items():
        write_file(vfs, name, data)
    engine.checkpoint()
    segs_before = set(segments.list_segments(engine.storage, engine.data_dir))
    assert len(segs_before) >= 10
    kept = {name: data for i, (name, data) in enumerate(contents.items()) if i % 8 == 0}
    for name in contents:
        if name not in kept:
            vfs.unlink(1, name.encode())
    engine.checkpoint()
    usage_before = engine.disk_usage()
    used = engine.used_bytes

    report = engine.gc()
    assert report.skipped == []
    assert report.segments_compacted + report.segments_deleted >= len(segs_before) - 2
    assert report.bytes_reclaimed > 0
    segs_after = set(segments.list_segments(engine.storage, engine.data_dir))
    assert set(engine.segment_stats()) == segs_after
    gone = segs_before - segs_after
    assert len(gone) >= len(segs_before) - 2, (segs_before, segs_after)
    assert engine.used_bytes == used
    assert engine.disk_usage() < usage_before - 2 * 1024 * 1024
    engine.close()
    assert_clean(vol)                             # every frame verified where it is now
    engine = Engine.open(vol)                     # no block cache: read from the new frames
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


def test_gc_of_a_reopened_volume_moves_the_last_segment_too(tmp_path: Path) -> None:
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    for i in range(20):
        write_file(vfs, f"f{i}", os.urandom(8 * BS + i))
    for i in range(1, 20):
        vfs.unlink(1, f"f{i}".encode())
    kept = tree(vfs)
    engine.close()
    engine = Engine.open(vol)
    report = engine.gc()
    assert report.segments_compacted == 1
    assert not Path(vol, "data", segments.file_name(1)).exists()
    engine.close()
    assert_clean(vol)
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


def test_crash_in_the_checkpoint_after_gc_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay meets a write into a segment and then the GC record that emptied it.

    Regression: recovery deleted the emptied segment before the checkpoint that makes
    the move durable, then failed to sync it (FileNotFoundError); the next open stopped
    replay at the first record with a frame in the deleted segment, losing the rest.
    """
    monkeypatch.setattr(limits, "segment_size_max_bytes", 3 * (BS + 64))
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    write_file(vfs, "doomed", os.urandom(2 * BS))          # segment 1, after the checkpoint
    write_file(vfs, "kept", os.urandom(3 * BS))            # fills segment 1, then segment 2
    vfs.unlink(1, b"doomed")
    kept = tree(vfs)
    engine.commit()
    crashpoints.arm("checkpoint.before_meta_commit")
    with pytest.raises(crashpoints.SimulatedCrash):
        engine.gc()
    engine.close(checkpoint=False)
    assert Path(vol, "data", segments.file_name(1)).exists()

    engine = Engine.open(vol)
    assert engine.replay.torn_tail is None
    assert 1 not in engine.segment_stats()
    assert not Path(vol, "data", segments.file_name(1)).exists()
    engine.close()
    assert_clean(vol)
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


# --- dedup ---------------------------------------------------------------------------------------
def test_same_content_is_stored_once(tmp_path: Path) -> None:
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    data = os.urandom(4 * BS)
    write_file(vfs, "one", data)
    used = engine.used_bytes
    seg_bytes = sum(w for w, _ in engine.segment_stats().values())
    write_file(vfs, "two", data)
    write_file(vfs, "three", data[:2 * BS] + data[:2 * BS])       # blocks repeat inside, too
    assert used == 4 * BS
    assert engine.used_bytes == used
    assert sum(w for w, _ in engine.segment_stats().values()) == seg_bytes
    assert engine.counters["blocks_deduped"] == 4 + 4
    # Deleting one copy keeps the block for the others.
    vfs.unlink(1, b"one")
    assert engine.used_bytes == used
    vfs.unlink(1, b"two")
    assert engine.used_bytes == 2 * BS
    engine.close()
    assert_clean(vol)
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == {"three": data[:2 * BS] * 2}
    engine.close()


# --- failsafe ------------------------------------------------------------------------------------
@pytest.mark.allow_warnings
def test_failsafe_close_still_commits_what_was_journaled(tmp_path: Path) -> None:
    """A bad block makes the volume read-only, but what it accepted before must stay durable.

    Regression: close skipped the commit in failsafe, so a power cut after the unmount
    lost operations older than the commit interval.
    """
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    victim = write_file(vfs, "victim", os.urandom(2 * BS))
    bid = engine.meta.get(Db.EXTENTS, schema.extent_key(victim, 1))
    assert bid is not None
    loc = engine.block_info(bid)
    assert loc is not None
    engine.close()
    with open(Path(vol, "data", segments.file_name(loc.seg)), "r+b") as f:
        f.seek(loc.offset + 64 + 10)
        f.write(b"\x00\xff")

    storage = FaultyStorage()
    storage.snapshot_meta(vol)
    engine = Engine.open(vol, storage=storage)
    vfs = Vfs(engine, atime=False)
    write_file(vfs, "accepted", b"written before the damage was found")
    assert vfs.read(victim, 0, BS) != b""                   # the good block still reads
    with pytest.raises(Corrupt):
        vfs.read(victim, 0, 2 * BS)
    assert engine.failsafe is not None and engine.counters["corrupt_blocks"] == 1
    with pytest.raises(ReadOnly):
        write_file(vfs, "refused", b"x")
    assert not engine.in_op()
    engine.close()
    storage.power_cut()                                      # nothing unsynced survives

    with pytest.raises(NeedsCheck, match="galleonfs fsck --repair"):
        Engine.open(vol)
    engine = Engine.open(vol, read_only=True)
    vfs = Vfs(engine, atime=False)
    ino = vfs.lookup(1, b"accepted").ino
    assert vfs.read(ino, 0, 100) == b"written before the damage was found"
    with pytest.raises(NotFound):
        vfs.lookup(1, b"refused")
    engine.close()


# --- opening -------------------------------------------------------------------------------------
def test_format_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    vol = make_volume(tmp_path)
    meta = MetaStore(vol)
    meta.put(Db.SUPER, b"format_version", schema.encode_super_int(schema.FORMAT_VERSION + 1))
    meta.take_changes()
    meta.close(commit=True)
    with pytest.raises(FormatError) as info:
        Engine.open(vol)
    message = str(info.value)
    assert f"format version {schema.FORMAT_VERSION + 1}" in message
    assert f"reads versions {schema.FORMAT_VERSION_OLDEST} to {schema.FORMAT_VERSION} only" in message
    assert vol in message
    # The failed open released everything: the store can be fixed and the volume opened.
    meta = MetaStore(vol)
    meta.put(Db.SUPER, b"format_version", schema.encode_super_int(schema.FORMAT_VERSION))
    meta.take_changes()
    meta.close(commit=True)
    engine = Engine.open(vol)
    engine.close()


def test_opening_a_locked_volume_is_busy(tmp_path: Path) -> None:
    vol = make_volume(tmp_path)
    engine = Engine.open(vol)
    try:
        with pytest.raises(Busy) as info:
            Engine.open(vol)
        assert f"in use by process {os.getpid()}" in str(info.value)
        with pytest.raises(Busy):
            fsck(vol)
    finally:
        engine.close()
    Engine.open(vol).close()                    # the lock went with the engine


def test_a_directory_that_is_not_a_volume(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("not a volume")
    with pytest.raises(NotFound) as info:
        Engine.open(str(tmp_path / "junk"))
    assert "is not a GalleonFS volume" in str(info.value)
    assert "galleonfs mkfs" in str(info.value)
    assert not (tmp_path / "junk" / "LOCK").exists()
    with pytest.raises(NotFound, match="galleonfs mkfs"):
        Engine.open(str(tmp_path / "missing"))
