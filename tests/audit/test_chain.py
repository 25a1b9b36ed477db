"""The audit log's hash chain, on a real file: every way of tampering is named at its line.

``AuditLog`` is used as the daemon uses it (append, reopen, verify); the tampering is done
on the file's bytes, as an intruder would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from galleonfs.audit import chain
from galleonfs.audit.log import AuditLog
from galleonfs.cli.since import parse_since
from galleonfs.errors import InvalidArgument
from galleonfs.limits import audit_record_bytes_max
from galleonfs.rpc.audit import audited, redact

RECORDS = 5


def write_log(path: Path, count: int = RECORDS) -> AuditLog:
    audit = AuditLog(str(path))
    for i in range(count):
        audit.append({"time_ns": 1_000 + i, "method": "galleonfs.v1.VolumeService/Create",
                      "volume": f"vol{i}", "request": {"name": f"vol{i}"}, "code": "OK",
                      "message": "", "peer": {"transport": "unix", "uid": 0, "gid": 0}})
    return audit


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_untouched_log_is_intact_and_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = write_log(path)
    assert audit.verify().sentence() == "audit log intact: 5 records"
    head = audit.head
    audit.close()
    again = AuditLog(str(path))
    assert again.head == head
    record = again.append({"method": "m", "time_ns": 2_000})
    assert (record["seq"], record["prev"]) == (6, head.hash)
    assert again.verify().sentence() == "audit log intact: 6 records"
    first = json.loads(lines_of(path)[0])
    assert first["prev"] == chain.GENESIS
    assert [n for n, _ in again.records(since_ns=1_003)] == [4, 5, 6]
    assert [r["volume"] for _, r in again.records(volume="vol2")] == ["vol2"]


def edit(lines: list[bytes]) -> list[bytes]:
    lines[2] = lines[2].replace(b'"vol2"', b'"evil"')
    return lines


def edit_and_rehash(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[2])
    record["volume"] = "evil"
    record["hash"] = chain.record_hash(record)
    lines[2] = chain.canonical(record) + b"\n"
    return lines


def delete(lines: list[bytes]) -> list[bytes]:
    del lines[2]
    return lines


def reorder(lines: list[bytes]) -> list[bytes]:
    lines[1], lines[2] = lines[2], lines[1]
    return lines


def insert_forged(lines: list[bytes]) -> list[bytes]:
    after = json.loads(lines[1])
    _, line = chain.seal({"method": "forged"}, chain.Head(after["seq"], after["hash"]))
    lines.insert(2, line)
    return lines


def append_copy(lines: list[bytes]) -> list[bytes]:
    return [*lines, lines[-1]]


def append_garbage(lines: list[bytes]) -> list[bytes]:
    return [*lines, b'{"method": "galleonfs.v1.VolumeService/Delete", "volume": "vol0"}\n']


def truncate_last(lines: list[bytes]) -> list[bytes]:
    lines[-1] = lines[-1][:40]
    return lines


CASES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], int, str]] = {
    "edited": (edit, 3, "its contents do not match its hash (the line was edited)"),
    "edited, hash fixed": (edit_and_rehash, 4, "it does not chain from record 3 (the line was forged, "
                                               "or a line before it was edited)"),
    "deleted": (delete, 3, "it is record 4 but record 3 should come next (a line was removed "
                           "before it, or lines were reordered)"),
    "reordered": (reorder, 2, "it is record 3 but record 2 should come next (a line was removed "
                              "before it, or lines were reordered)"),
    "inserted": (insert_forged, 4, "it is record 3 but record 4 should come next (lines were "
                                   "reordered or a line was inserted)"),
    "copy appended": (append_copy, 6, "it is record 5 but record 6 should come next (lines were "
                                      "reordered or a line was inserted)"),
    "garbage appended": (append_garbage, 6, "it is not an audit record (torn by a crash, or edited)"),
    "last line cut": (truncate_last, 5, "the last line is incomplete (torn by a crash during an "
                                        "append, or cut short)"),
}


@pytest.mark.parametrize("case", CASES)
def test_tampering_is_reported_at_its_first_bad_line(tmp_path: Path, case: str) -> None:
    tamper, bad_line, problem = CASES[case]
    path = tmp_path / "audit.log"
    write_log(path).close()
    path.write_bytes(b"".join(tamper(lines_of(path))))
    verdict = chain.verify(path.read_bytes())
    assert not verdict.intact
    assert verdict.sentence() == f"audit log broken at line {bad_line}: {problem}"
    assert verdict.records == bad_line - 1


def test_the_writer_catches_what_a_chain_alone_cannot(tmp_path: Path) -> None:
    """A removed last line, or a correctly forged one appended, leave a valid chain; the
    running writer knows its head and says so."""
    path = tmp_path / "audit.log"
    audit = write_log(path)
    original = path.read_bytes()
    path.write_bytes(b"".join(lines_of(path)[:-1]))
    assert chain.verify(path.read_bytes()).intact
    assert audit.verify().sentence() == (
        "audit log broken at line 5: the log ends at record 4 but the daemon wrote up to "
        "record 5 (lines were removed from the end)")
    _, forged = chain.seal({"method": "forged"}, audit.head)
    path.write_bytes(original + forged)
    assert chain.verify(path.read_bytes()).intact
    assert audit.verify().sentence() == (
        "audit log broken at line 6: the log goes on to record 6 but the daemon wrote only up "
        "to record 5 (lines were appended by someone else)")


@pytest.mark.allow_warnings
def test_a_torn_last_line_is_kept_and_reported_after_reopening(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.log"
    write_log(path).close()
    path.write_bytes(b"".join(truncate_last(lines_of(path))))
    audit = AuditLog(str(path))
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"the audit log {path} ends with an incomplete record (a crash during an append?); it "
        f"is kept, and `galleonctl audit verify` reports it"]
    assert audit.head.seq == 4
    record = audit.append({"method": "after the crash"})
    assert record["seq"] == 5
    lines = lines_of(path)
    assert len(lines) == 6 and lines[4].endswith(b"\n") and json.loads(lines[5])["seq"] == 5
    assert audit.verify().sentence() == (
        "audit log broken at line 5: it is not an audit record (torn by a crash, or edited)")


def test_a_last_line_missing_only_its_newline_is_kept_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_log(path).close()
    path.write_bytes(path.read_bytes()[:-1])
    audit = AuditLog(str(path))
    assert audit.head.seq == 5
    audit.append({"method": "next"})
    assert audit.verify().sentence() == "audit log intact: 6 records"


def test_reads_are_not_audited_and_secrets_are_not_logged() -> None:
    assert audited("/galleonfs.v1.VolumeService/Create")
    assert audited("/galleonfs.v1.SnapshotService/Restore")
    assert not audited("/galleonfs.v1.VolumeService/GetStats")
    assert not audited("/galleonfs.v1.SnapshotService/Diff")
    assert not audited("/galleonfs.v1.AuditService/Verify")
    assert not audited("/grpc.health.v1.Health/Check")
    assert redact({"name": "k", "passphrase": "hunter2", "wrap": {"data_key": "x", "n": [1]},
                   "text": "é" * 600}) == {
        "name": "k", "passphrase": "<redacted>", "wrap": {"data_key": "<redacted>", "n": [1]},
        "text": "é" * 512 + "…"}


def test_since_takes_durations_and_times() -> None:
    now = 10_000 * 10**9
    assert parse_since("90s", now_ns=now) == now - 90 * 10**9
    assert parse_since("2h", now_ns=now) == now - 7200 * 10**9
    assert parse_since("1970-01-01T00:01:00Z", now_ns=now) == 60 * 10**9
    assert parse_since("1970-01-01T01:00:00+01:00", now_ns=now) == 0
    assert parse_since("1970-01-01 00:00:01.5", now_ns=now) == 1_500_000_000
    with pytest.raises(InvalidArgument, match="invalid --since 'yesterday': give a duration"):
        parse_since("yesterday")


def test_every_field_is_cut_to_fit_and_says_how_much_was_left_out(tmp_path: Path) -> None:
    """A record never exceeds the limit, whatever the request: 5,000 labels, a 1 MiB string,
    fields nobody budgeted for. Nothing is skipped; each cut says what it left out."""
    audit = AuditLog(str(tmp_path / "audit.log"))
    labels = {f"key-{i:05d}": "v" * 63 for i in range(5000)}
    record = audit.append({"method": "m", "request": {"labels": labels, "blob": "x" * (1 << 20)},
                           "message": "é" * 10_000, "extra": ["y" * 5000] * 100, "other": "z" * 70_000})
    line = lines_of(tmp_path / "audit.log")[0]
    assert len(line) <= audit_record_bytes_max
    kept = record["request"]["labels"]
    marker = kept.pop("…")
    assert len(kept) + int(marker.removeprefix("+").removesuffix(" entries")) == 5000
    assert all(labels[k] == v for k, v in kept.items()) and len(kept) > 100
    blob = record["request"]["blob"]
    cut = int(blob.rsplit("…[+", 1)[1].removesuffix(" bytes]"))
    head = blob.rsplit("…[+", 1)[0]
    assert head == "x" * len(head) and len(head) + cut == 1 << 20
    assert record["message"].startswith("é" * 100) and "…[+" in record["message"]
    assert record["extra"][-1].startswith("…[+") and record["extra"][-1].endswith(" items]")
    assert record["other"].startswith("z" * 1000) and record["other"].endswith(" bytes]")
    assert audit.verify().sentence() == "audit log intact: 1 records"
    huge = {f"field{i}": "w" * 2000 for i in range(60)}             # 120 KiB of unbudgeted fields
    audit.append(huge)
    assert all(len(line) <= audit_record_bytes_max for line in lines_of(tmp_path / "audit.log"))
    last = json.loads(lines_of(tmp_path / "audit.log")[1])
    replaced = [v for v in last.values() if isinstance(v, dict) and "sha256" in v]
    assert replaced and all(v["…"] == "not recorded: 2002 bytes" for v in replaced)
    assert audit.verify().intact
