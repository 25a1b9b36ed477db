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
