"""Records of the audit log and the hash chain that makes edits evident. No I/O here.

One record is one line: a JSON object with sorted keys and no spaces, then ``\\n``. A call
is two records (``log.py``): its intent, written before it runs, and its outcome::

    {"hash":"9f…","method":"galleonfs.v1.VolumeService/Create","peer":{…},"phase":"intent",
     "prev":"5d…","request":{…},"seq":1,"time":"2026-11-30T20:41:07.123456Z",
     "time_ns":1796071267123456000,"volume":"data"}
    {"call":1,"code":"OK","hash":"c2…","message":"","method":"galleonfs.v1.VolumeService/Create",
     "phase":"outcome","prev":"9f…","seq":2,"time":"…","time_ns":…,"volume":"data"}

(Logs written before the intent/outcome format hold one record per call, with no ``phase``.)

``hash`` is the SHA-256 (hex) of the record's canonical JSON *without* ``hash``; ``prev`` is
the previous record's ``hash``, and the first record's ``prev`` is ``GENESIS``; ``seq``
counts from 1. So editing a line breaks its own hash; editing it *and* fixing its hash
breaks the next line's ``prev``; removing, inserting or reordering lines breaks ``seq`` and
``prev``. What a chain alone cannot show is a line removed from, or a well-forged line added
at, the end: ``verify`` therefore also takes the head the writer remembers (``Head``).

Nothing here is secret: whoever can write the file and knows this format can rewrite the
whole chain. The chain makes tampering evident to a reader who holds an older head (the
running daemon, or an operator who noted one), not impossible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Fixed start of every chain: the SHA-256 of a constant, so no file can claim another genesis.
GENESIS = hashlib.sha256(b"galleonfs audit log v1").hexdigest()


@dataclass(frozen=True)
class Head:
    """The last record written: what the next record chains from."""

    seq: int
    hash: str


GENESIS_HEAD = Head(0, GENESIS)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a whole log. ``bad_line`` is 1-based, in ``file`` (the file of
    the first bad line, when the log spans rotated files); 0 when intact, or when the problem
    is not a line (the file at the path was replaced)."""

    records: int
    bad_line: int = 0
    problem: str = ""
    file: str = ""

    @property
    def intact(self) -> bool:
        return not self.problem

    def sentence(self) -> str:
        if self.intact:
            return f"audit log intact: {self.records} records"
        if not self.bad_line:
            return f"audit log broken: {self.problem}"
        return f"audit log broken at line {self.bad_line}: {self.problem}"


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def seal(fields: dict[str, Any], head: Head) -> tuple[dict[str, Any], bytes]:
    """Chain ``fields`` after ``head``: the full record and its line (with ``\\n``)."""
    assert "hash" not in fields and "prev" not in fields and "seq" not in fields
    record = dict(fields, seq=head.seq + 1, prev=head.hash)
    record["hash"] = record_hash(record)
    return record, canonical(record) + b"\n"


def parse(line: bytes) -> dict[str, Any] | None:
    """A line's record if it is a well-formed, self-consistent one; else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    if not isinstance(record.get("prev"), str) or not isinstance(record.get("hash"), str):
        return None
    return record


def verify(data: bytes, head: Head | None = None) -> Verdict:
    """Check every line of a log's bytes; stop at the first bad one and say why.

    ``head``, when given, is the last record the writer knows it wrote: the file must end
    exactly there (catches a removed last line and a forged line appended at the end).
    """
    return verify_files([("", data)], head)


def verify_files(files: Iterable[tuple[str, bytes]], head: Head | None = None) -> Verdict:
    """``verify`` over a log rotated into several files, oldest first: the chain runs on
    from the last record of one file to the first of the next. Line numbers are per file."""
    prev = GENESIS_HEAD
    name, first_seq = "", 1
    for name, data in files:
        first_seq = prev.seq + 1
        lines = data.split(b"\n")
        torn_tail = lines[-1] != b""      # a complete file ends with a newline
        if not torn_tail:
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if torn_tail and number == len(lines):
                return Verdict(prev.seq, number, "the last line is incomplete (torn by a crash "
                                                 "during an append, or cut short)", name)
            record = parse(line)
            if record is None:
                return Verdict(prev.seq, number, "it is not an audit record (torn by a crash, "
                                                 "or edited)", name)
            if record_hash(record) != record["hash"]:
                return Verdict(prev.seq, number, "its contents do not match its hash (the line "
                                                 "was edited)", name)
            problem = _link_problem(record, prev)
            if problem:
                return Verdict(prev.seq, number, problem, name)
            prev = Head(record["seq"], record["hash"])
    if head is not None and prev != head:
        # Up to here, in the last file, line n holds record first_seq + n - 1: the first bad
        # line is the first record the two disagree on (a missing one is the line after the
        # file's end).
        bad = min(prev.seq, head.seq) + (0 if prev.seq == head.seq else 1) - (first_seq - 1)
        return Verdict(prev.seq, bad, _head_problem(prev, head), name)
    return Verdict(prev.seq)


def _link_problem(record: dict[str, Any], prev: Head) -> str:
    seq, expected = record["seq"], prev.seq + 1
    if seq > expected:
        return (f"it is record {seq} but record {expected} should come next (a line was "
                f"removed before it, or lines were reordered)")
    if seq < expected:
        return (f"it is record {seq} but record {expected} should come next (lines were "
                f"reordered or a line was inserted)")
    if record["prev"] != prev.hash:
        where = "the genesis" if prev.seq == 0 else f"record {prev.seq}"
        return f"it does not chain from {where} (the line was forged, or a line before it was edited)"
    return ""


def _head_problem(found: Head, head: Head) -> str:
    if found.seq < head.seq:
        return (f"the log ends at record {found.seq} but the daemon wrote up to record "
                f"{head.seq} (lines were removed from the end)")
    if found.seq > head.seq:
        return (f"the log goes on to record {found.seq} but the daemon wrote only up to "
                f"record {head.seq} (lines were appended by someone else)")
    return f"record {found.seq} is not the one the daemon wrote (the end was rewritten)"
