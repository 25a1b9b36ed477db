"""``AuditLog``: the append-only files of audit records, ``<data-dir>/audit.log`` (+ rotated).

Appends come from gRPC pool threads (the interceptor), so a lock orders them; each one is
one ``write`` of a whole line with ``O_APPEND``, then ``fdatasync`` (about 0.1-0.3 ms here,
DESIGN §2; only state-changing calls pay it, twice: see below). Reading never takes the
trio thread either: the files are the only state.

Two records per call (``rpc/audit.py``): an *intent* (``"phase": "intent"``: who asks for
what), made durable before the call runs, and an *outcome* (``"phase": "outcome"``, with
``"call"``: the intent's ``seq``, and the answer's code and message) after it. So a call
whose intent cannot be written is refused before it takes effect, and a call whose outcome
is missing shows as unfinished. Records written before this format (no ``phase``) are whole
calls by themselves. ``calls`` pairs them back into one entry per call.

Every field is bounded (``bound.py``), so a record always fits in
``limits.audit_record_bytes_max`` bytes: no call is ever left unrecorded because of its size.
A failed or short write is cut back off the file (``ftruncate`` to where it began), so a
full disk leaves no torn line behind; the call is refused (``AuditUnavailable``). Before it
comes to that, a reserve (``limits.audit_reserve_bytes``, allocated past the end of the file
with ``fallocate(FALLOC_FL_KEEP_SIZE)`` and refilled when half used) lets an operator on a
full disk still unmount and delete volumes, each call recorded.

Rotation: when a record would take ``audit.log`` past ``rotate_bytes``, the file is renamed
``audit.log.N`` (N one above the highest existing: a single atomic rename, never a shift of
the others) and a new ``audit.log`` continues the chain; ``verify`` and ``calls`` read the
rotated files oldest first. Keep them all for ``verify`` (archive copies, never remove).

Replacement: the log is read at its path, not through the descriptor the daemon writes to.
If the file at the path is no longer the one the daemon opened (moved, replaced, removed),
``verify`` says so and appends are refused (a record written to a file nobody can see
would be lost at the next start); restarting galleond continues in the file at the path.

At open the chain head is recovered from the last line. A last line cut short by a crash is
not dropped: it stays in the file, a newline closes it, the next record chains from the last
whole one, a WARNING says so, and ``verify`` reports that line from then on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

from .. import limits
from ..errors import AuditUnavailable
from ..storage import fallocate, fsync_dir
from . import bound, chain
from .chain import Head, Verdict

log = logging.getLogger(__name__)

FILE_NAME = "audit.log"
# A record is at most this long: every field is cut to its budget (bound.py).
record_bytes_max = limits.audit_record_bytes_max
audit_string_bytes_max = 1024
# List answers at most this many calls (the newest ones): ~400 bytes each keeps the
# answer far below the 16 MiB gRPC message limit.
list_records_max = 10_000
# The chain fields ``seal`` adds (seq, prev, hash) and the newline: what ``fit`` leaves room for.
_CHAIN_OVERHEAD = 200
UNFINISHED = "UNFINISHED"


class AuditLog:
    def __init__(self, path: str, *, rotate_bytes: int = limits.audit_file_bytes_default) -> None:
        self.path = path
        self.rotate_bytes = max(rotate_bytes, limits.audit_file_bytes_min)
        self._lock = threading.Lock()
        self._fd = -1
        self._open()
        self.head = self._recover()

    @classmethod
    def open(cls, data_dir: str, *, rotate_bytes: int = limits.audit_file_bytes_default) -> AuditLog:
        return cls(os.path.join(data_dir, FILE_NAME), rotate_bytes=rotate_bytes)

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditUnavailable(action="open", path=self.path, reason=exc.strerror) from None
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        self._size = st.st_size
        self._reserved_to = st.st_size
        self._reserve()

    def _reserve(self) -> None:
        """Keep ``audit_reserve_bytes`` allocated past the end (best effort: a full disk or a
        file system without fallocate just has less, or none)."""
        if self._reserved_to - self._size >= limits.audit_reserve_bytes // 2:
            return
        if _reserve(self._fd, self._size, limits.audit_reserve_bytes):
            self._reserved_to = self._size + limits.audit_reserve_bytes

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _recover(self) -> Head:
        """The last whole record's head; close a torn last line with a newline (kept). An
        empty ``audit.log`` right after a rotation chains from the newest rotated file."""
        for path in reversed(self.files()):
            head = self._recover_file(path)
            if head is not None:
                return head
        return chain.GENESIS_HEAD

    def _recover_file(self, path: str) -> Head | None:
        current = path == self.path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            f.seek(max(0, size - 2 * record_bytes_max))
            tail = f.read()
        lines = tail.split(b"\n")
        if lines[-1] != b"" and current:
            record = chain.parse(lines[-1])
            if record is None or chain.record_hash(record) != record["hash"]:
                log.warning("the audit log %s ends with an incomplete record (a crash during an "
                            "append?); it is kept, and `galleonctl audit verify` reports it",
                            self.path)
            os.write(self._fd, b"\n")
            os.fdatasync(self._fd)
            self._size += 1
        for line in reversed(lines):
            record = chain.parse(line)
            if record is not None and chain.record_hash(record) == record["hash"]:
                return Head(record["seq"], record["hash"])
        log.warning("no whole record at the end of the audit log %s; new records chain from "
                    "the genesis, and `galleonctl audit verify` reports the break", path)
        return chain.GENESIS_HEAD

    # --- files ---------------------------------------------------------------------------------
    def files(self) -> list[str]:
        """The log's files, oldest first: ``audit.log.1``, ``audit.log.2`` ..., ``audit.log``."""
        directory, base = os.path.split(self.path)
        pattern = re.compile(re.escape(base) + r"\.([0-9]+)\Z")
        numbered = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory or "."):
                match = pattern.match(name)
                if match:
                    numbered.append((int(match.group(1)), os.path.join(directory, name)))
        return [p for _, p in sorted(numbered)] + [self.path]

    def _replaced(self) -> str:
        """Why the file at the path is not the one this process writes to, or ""."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"the audit log {self.path} was removed while galleond was writing to it"
        if (st.st_dev, st.st_ino) != self._identity:
            return (f"the file at {self.path} is not the audit log galleond writes to (it was replaced "
                    f"or moved: inode {st.st_ino}, galleond's is {self._identity[1]})")
        return ""

    def _rotate(self) -> None:
        """``audit.log`` -> ``audit.log.N``; a new ``audit.log`` continues the chain."""
        numbered = self.files()[:-1]
        last = int(numbered[-1].rsplit(".", 1)[1]) if numbered else 0
        target = f"{self.path}.{last + 1}"
        try:
            os.ftruncate(self._fd, self._size)     # the old file gives its reserve back
            os.fsync(self._fd)
            os.rename(self.path, target)
            os.close(self._fd)
            self._fd = -1
            self._open()
            fsync_dir(os.path.dirname(self.path) or ".")
        except OSError as exc:
            raise AuditUnavailable(action="rotate", path=self.path, reason=exc.strerror) from None
        log.info("audit log rotated: %s is now %s", self.path, target)

    # --- appending -----------------------------------------------------------------------------
    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Seal ``fields`` (bounded to fit) into the next record, write it and make it durable.
        Raises ``AuditUnavailable`` (nothing written) when it cannot."""
        fields = bound.fit(bound.bound_fields(fields), _CHAIN_OVERHEAD)
        with self._lock:
            if self._fd < 0:      # a call still running when the daemon stopped
                raise AuditUnavailable(f"the audit log {self.path} is closed (the daemon is stopping)")
            replaced = self._replaced()
            if replaced:
                raise AuditUnavailable(f"{replaced}; put it back, or restart galleond to continue the "
                                       f"chain in the file now at that path")
            record, line = chain.seal(fields, self.head)
            assert len(line) <= record_bytes_max, f"audit record of {len(line)} bytes"
            if self._size and self._size + len(line) > self.rotate_bytes:
                self._rotate()
            self._write(line)
            self.head = Head(record["seq"], record["hash"])
            return record

    def _write(self, line: bytes) -> None:
        start = self._size
        try:
            done = 0
            while done < len(line):       # a short write is followed by one that says why
                done += os.write(self._fd, line[done:])
            os.fdatasync(self._fd)
        except OSError as exc:
            # No torn line may stay behind: the next record would follow garbage.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            self._reserved_to = start              # a truncate frees what lay past the end
            raise AuditUnavailable(action="append to", path=self.path,
                                   reason=exc.strerror or exc) from None
        self._size = start + len(line)
        self._reserve()

    # --- reading -------------------------------------------------------------------------------
    def _read_all(self) -> tuple[list[tuple[str, bytes]], Head, str]:
        """Every file's bytes, read at its path, with the head this process wrote last and
        why the file at the path is not ours ("" when it is)."""
        with self._lock:
            head = self.head
            replaced = self._replaced() if self._fd >= 0 else ""
            files = self.files()
        out = []
        for path in files:
            try:
                with open(path, "rb") as f:
                    out.append((path, f.read()))
            except FileNotFoundError:
                if path != self.path:
                    continue               # rotated away by an operator: verify reports the gap
                out.append((path, b""))
        return out, head, replaced

    def records(self, *, since_ns: int = 0, volume: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number in its file, record) of every readable record that matches, oldest first."""
        files, _, _ = self._read_all()
        for _, data in files:
            for number, line in enumerate(data.splitlines(), start=1):
                record = chain.parse(line)
                if record is None:
                    continue
                if record.get("time_ns", 0) < since_ns or (volume and record.get("volume") != volume):
                    continue
                yield number, record

    def calls(self, *, since_ns: int = 0, volume: str = "") -> list[tuple[int, dict[str, Any]]]:
        """One entry per call, oldest first: (line of its intent, the intent record with the
        outcome's ``code`` and ``message``; ``UNFINISHED`` when no outcome was written)."""
        entries: list[tuple[int, dict[str, Any]]] = []
        by_seq: dict[int, dict[str, Any]] = {}
        for number, record in self.records():
            phase = record.get("phase")
            if phase == "outcome":
                entry = by_seq.pop(record.get("call", -1), None)
                if entry is not None:
                    entry.update(code=record.get("code", ""), message=record.get("message", ""))
                    entry["volume"] = entry.get("volume") or record.get("volume", "")
                continue
            entry = dict(record)
            if phase == "intent":
                entry.update(code=UNFINISHED, message="no outcome recorded (the call is still running, "
                                                      "or the daemon stopped during it)")
                by_seq[record["seq"]] = entry
            entries.append((number, entry))
        return [(n, e) for n, e in entries
                if e.get("time_ns", 0) >= since_ns and (not volume or e.get("volume") == volume)]

    def verify(self) -> Verdict:
        """Check the files at their paths, oldest first, and that the log ends at the record
        this process wrote last."""
        files, head, replaced = self._read_all()
        if replaced:
            return Verdict(0, 0, replaced, self.path)
        verdict = chain.verify_files(files, head if head != chain.GENESIS_HEAD else None)
        if verdict.intact:
            return Verdict(verdict.records, file=self.path)
        return verdict


def _reserve(fd: int, offset: int, length: int) -> bool:
    """Blocks past the end that later appends use without asking the file system for space;
    False if the file system cannot or has no room (the log then simply has no reserve)."""
    try:
        return fallocate(fd, offset, length, keep_size=True)
    except OSError:
        return False
