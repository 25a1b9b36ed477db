"""``AuditLog``: the append-only file of audit records, ``<data-dir>/audit.log``.

Appends come from gRPC pool threads (the interceptor), so a lock orders them; each one is
one ``write`` of a whole line with ``O_APPEND``, then ``fdatasync`` before the call's answer
leaves (about 0.1-0.3 ms here, DESIGN §2; only state-changing calls pay it). Reading never
takes the trio thread either: the file is the only state.

At open the chain head is recovered from the last line. A last line cut short by a crash is
not dropped: it stays in the file, a newline closes it, the next record chains from the last
whole one, a WARNING says so, and ``verify`` reports that line from then on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import IOFailure
from . import chain
from .chain import Head, Verdict

log = logging.getLogger(__name__)

FILE_NAME = "audit.log"
# A record is at most this long: request strings are cut to audit_string_bytes_max, and
# the largest request today (a storage class) is well under 4 KiB.
record_bytes_max = 64 * 1024
audit_string_bytes_max = 1024
# List answers at most this many records (the newest ones): ~400 bytes each keeps the
# answer far below the 16 MiB gRPC message limit.
list_records_max = 10_000


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise IOFailure(f"cannot open the audit log {path}: {exc.strerror}") from None
        self.head = self._recover()

    @classmethod
    def open(cls, data_dir: str) -> AuditLog:
        return cls(os.path.join(data_dir, FILE_NAME))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _recover(self) -> Head:
        """The last whole record's head; close a torn last line with a newline (kept)."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return chain.GENESIS_HEAD
        tail = os.pread(self._fd, min(size, 2 * record_bytes_max), max(0, size - 2 * record_bytes_max))
        lines = tail.split(b"\n")
        if lines[-1] != b"":
            record = chain.parse(lines[-1])
            if record is None or chain.record_hash(record) != record["hash"]:
                log.warning("the audit log %s ends with an incomplete record (a crash during an "
                            "append?); it is kept, and `galleonctl audit verify` reports it",
                            self.path)
            os.write(self._fd, b"\n")
            os.fdatasync(self._fd)
        for line in reversed(lines):
            record = chain.parse(line)
            if record is not None and chain.record_hash(record) == record["hash"]:
                return Head(record["seq"], record["hash"])
        log.warning("no whole record at the end of the audit log %s; new records chain from "
                    "the genesis, and `galleonctl audit verify` reports the break", self.path)
        return chain.GENESIS_HEAD

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Seal ``fields`` into the next record, write it and make it durable."""
        with self._lock:
            if self._fd < 0:      # a call still running when the daemon stopped
                raise IOFailure(f"the audit log {self.path} is closed (the daemon is stopping)")
            record, line = chain.seal(fields, self.head)
            assert len(line) <= record_bytes_max, f"audit record of {len(line)} bytes"
            try:
                written = os.write(self._fd, line)
                os.fdatasync(self._fd)
            except OSError as exc:
                raise IOFailure(f"cannot append to the audit log {self.path}: {exc.strerror}") from None
            if written != len(line):
                raise IOFailure(f"short write to the audit log {self.path} ({written} of {len(line)} bytes)")
            self.head = Head(record["seq"], record["hash"])
            return record

    def _read(self) -> tuple[bytes, Head]:
        with self._lock:
            head = self.head
            size = os.fstat(self._fd).st_size
            data = os.pread(self._fd, size, 0)
        return data, head

    def records(self, *, since_ns: int = 0, volume: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) of every readable record that matches, oldest first."""
        data, _ = self._read()
        for number, line in enumerate(data.splitlines(), start=1):
            record = chain.parse(line)
            if record is None:
                continue
            if record.get("time_ns", 0) < since_ns or (volume and record.get("volume") != volume):
                continue
            yield number, record

    def verify(self) -> Verdict:
        """Check the file, and that it ends at the record this process wrote last."""
        data, head = self._read()
        return chain.verify(data, head if head != chain.GENESIS_HEAD else None)
