"""Journal records: encode/decode round trip and the torn-tail rule of read_records."""

from __future__ import annotations

import os
from pathlib import Path

from galleonfs.engine import journal
from galleonfs.engine.journal import FrameRef
from galleonfs.storage import Storage


def write_records(path: str, count: int) -> list[bytes]:
    bodies = []
    with open(path, "wb") as f:
        for lsn in range(1, count + 1):
            body = journal.encode_body([FrameRef(1, lsn * 100, 64, lsn)],
                                       [(1, b"key%d" % lsn, b"value"), (2, b"gone", None)])
            bodies.append(body)
            f.write(journal.encode_record(lsn, body))
    return bodies


def read_all(path: str, first: int = 1) -> list[journal.Record]:
    f = Storage().open_file(path, writable=False)
    try:
        return [r for _, _, r in journal.read_records(f, first)]
    finally:
        f.close()


def test_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "j.wal")
    write_records(path, 3)
    records = read_all(path)
    assert [r.lsn for r in records] == [1, 2, 3]
    assert records[1].frames == [FrameRef(1, 200, 64, 2)]
    assert records[1].changes == [(1, b"key2", b"value"), (2, b"gone", None)]


def test_reading_stops_at_a_torn_tail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "j.wal")
    write_records(path, 3)
    size = os.path.getsize(path)
    os.truncate(path, size - 3)
    assert [r.lsn for r in read_all(path)] == [1, 2]


def test_reading_stops_at_a_bad_checksum(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "j.wal")
    write_records(path, 3)
    data = bytearray(Path(path).read_bytes())
    record_len = len(data) // 3
    data[record_len + 30] ^= 1                      # inside record 2's body
    Path(path).write_bytes(bytes(data))
    assert [r.lsn for r in read_all(path)] == [1]


def test_reading_stops_at_an_lsn_gap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "j.wal")
    with open(path, "wb") as f:
        f.write(journal.encode_record(1, journal.encode_body([], [])))
        f.write(journal.encode_record(3, journal.encode_body([], [])))
    assert [r.lsn for r in read_all(path)] == [1]


def test_file_names_sort_by_lsn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for lsn in (0x10, 0x2, 0x100):
        (tmp_path / journal.file_name(lsn)).write_bytes(b"")
    (tmp_path / "junk.wal").write_bytes(b"")
    assert [lsn for lsn, _ in journal.list_files(Storage(), str(tmp_path))] == [0x2, 0x10, 0x100]


# --- format v2 -------------------------------------------------------------------------------------
def read_with(path: str, first: int = 1, **kw) -> tuple[list[journal.Record], journal.Stop]:  # type: ignore[no-untyped-def]
    stop = journal.Stop()
    f = Storage().open_file(path, writable=False)
    try:
        return [r for _, _, r in journal.read_records(f, first, stop=stop, **kw)], stop
    finally:
        f.close()


def test_v2_header_is_64_bytes_and_carries_who_wrote_it(tmp_path: Path) -> None:
    body = journal.encode_body([], [(1, b"k", b"v")])
    stamp = journal.Stamp(tag=0xABCDEF, epoch=3, generation=7, time_ns=1234)
    record = journal.encode_record(5, body, stamp)
    assert len(record) == journal.HEADER_SIZE + len(body) == 64 + len(body)
    assert record[:4] == b"GJR2"
    path = tmp_path / "j.wal"
    path.write_bytes(record)
    (r,), stop = read_with(str(path), 5, tag=0xABCDEF, epoch_max=3)
    assert (r.lsn, r.epoch, r.generation, r.time_ns, r.tag, r.version) == (5, 3, 7, 1234, 0xABCDEF, 2)
    assert r.changes == [(1, b"k", b"v")] and r.inline is None
    assert stop.reason is None


def test_inline_frames_round_trip_byte_exact(tmp_path: Path) -> None:
    frame_a, frame_b = os.urandom(100), os.urandom(4160)
    refs = [FrameRef(2, 0, len(frame_a), 11), FrameRef(2, 100, len(frame_b), 22)]
    body = journal.encode_body(refs, [(3, b"x", None)], frame_a + frame_b)
    path = tmp_path / "j.wal"
    path.write_bytes(journal.encode_record(1, body, inline=True))
    (r,), _ = read_with(str(path))
    assert r.frames == refs and r.changes == [(3, b"x", None)]
    assert list(r.inline_frames()) == [(refs[0], frame_a), (refs[1], frame_b)]


def test_a_torn_v2_header_ends_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.wal"
    one = journal.encode_record(1, journal.encode_body([], [(1, b"a", b"1")]))
    two = journal.encode_record(2, journal.encode_body([], [(1, b"b", b"2")]))
    for cut in (1, 20, 63):
        path.write_bytes(one + two[:cut])
        records, stop = read_with(str(path))
        assert [r.lsn for r in records] == [1]
        assert stop.reason is not None and "no record header" in stop.reason
    # A header whole but its fields damaged (here the generation) fails the CRC.
    damaged = bytearray(two)
    damaged[24] ^= 1
    path.write_bytes(one + bytes(damaged))
    records, stop = read_with(str(path))
    assert [r.lsn for r in records] == [1] and "checksum" in (stop.reason or "")


def test_a_zeroed_region_after_the_records_is_the_end(tmp_path: Path) -> None:
    path = tmp_path / "j.wal"
    one = journal.encode_record(1, journal.encode_body([], [(1, b"a", b"1")]))
    path.write_bytes(one + bytes(8192))
    records, stop = read_with(str(path))
    assert [r.lsn for r in records] == [1]
    assert "no record header" in (stop.reason or "")


def test_another_volumes_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.wal"
    mine, theirs = journal.volume_tag("vol-a"), journal.volume_tag("vol-b")
    assert mine != theirs
    body = journal.encode_body([], [(1, b"k", b"v")])
    path.write_bytes(journal.encode_record(1, body, journal.Stamp(tag=mine))
                     + journal.encode_record(2, body, journal.Stamp(tag=theirs)))
    records, stop = read_with(str(path), tag=mine)
    assert [r.lsn for r in records] == [1]
    assert stop.foreign and "another volume" in (stop.reason or "")


def test_a_record_of_a_lower_or_unknown_epoch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.wal"
    body = journal.encode_body([], [])
    recs = [journal.encode_record(lsn, body, journal.Stamp(epoch=e)) for lsn, e in ((1, 1), (2, 2), (3, 1))]
    path.write_bytes(b"".join(recs))
    records, stop = read_with(str(path), epoch_max=2)
    assert [r.lsn for r in records] == [1, 2]                  # epoch 1 after epoch 2: fenced off
    assert "epoch 1" in (stop.reason or "") and not stop.foreign
    records, stop = read_with(str(path), epoch_max=1)           # epoch 2 is newer than the volume's
    assert [r.lsn for r in records] == [1]
    assert "epoch 2" in (stop.reason or "")


def _crypto():  # type: ignore[no-untyped-def]
    from galleonfs.crypto.codec import VolumeCrypto
    return VolumeCrypto(b"f" * 16, {1: b"k" * 32}, 1, names_key=b"n" * 32)


def test_a_sealed_body_is_bound_to_its_header(tmp_path: Path) -> None:
    crypto = _crypto()
    body = journal.encode_body([], [(1, b"secret key", b"secret value")])
    record = bytearray(journal.encode_record(1, body, journal.Stamp(generation=4), crypto=crypto))
    assert b"secret" not in record
    path = tmp_path / "j.wal"
    path.write_bytes(bytes(record))
    (r,), _ = read_with(str(path), crypto=crypto)
    assert r.changes == [(1, b"secret key", b"secret value")]
    # Change the generation and make the CRC match again: the AEAD still refuses it.
    record[24] ^= 1
    crc = journal.crc32c(bytes(record[64:]), journal.crc32c(bytes(record[:60])))
    record[60:64] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(record))
    records, stop = read_with(str(path), crypto=crypto)
    assert records == [] and "authentication" in (stop.reason or "")
    # A plain record in an encrypted volume is not accepted either.
    path.write_bytes(journal.encode_record(1, body))
    records, stop = read_with(str(path), crypto=crypto)
    assert records == [] and "not sealed" in (stop.reason or "")


def test_v1_records_are_still_read_but_not_after_v2_ones(tmp_path: Path) -> None:
    path = tmp_path / "j.wal"
    body = journal.encode_body([FrameRef(1, 0, 64, 9)], [(1, b"old", b"record")])
    path.write_bytes(journal.encode_record_v1(1, body) + journal.encode_record_v1(2, body)
                     + journal.encode_record(3, body) + journal.encode_record_v1(4, body))
    records, stop = read_with(str(path))
    assert [(r.lsn, r.version) for r in records] == [(1, 1), (2, 1), (3, 2)]
    assert records[0].changes == [(1, b"old", b"record")] and records[0].frames == [FrameRef(1, 0, 64, 9)]
    assert "no record header" in (stop.reason or "")


def test_sealed_v1_records_are_still_read(tmp_path: Path) -> None:
    crypto = _crypto()
    body = journal.encode_body([], [(1, b"old", b"sealed")])
    path = tmp_path / "j.wal"
    path.write_bytes(journal.encode_record_v1(7, crypto.seal_record(7, body)))
    (r,), _ = read_with(str(path), 7, crypto=crypto)
    assert r.changes == [(1, b"old", b"sealed")] and r.version == 1
