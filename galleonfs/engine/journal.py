"""The write-ahead journal: CRC32C-framed records in LSN order (DESIGN §3).

One record carries one FUSE request's metadata changes, as physical puts and deletes on
the metadata databases, plus references to the block frames it made live. Files are
``journal/<first lsn as 16 hex digits>.wal``; a file rolls at a size limit and at every
checkpoint, so whole files fall below the checkpoint and can be deleted.

Record layout, little-endian::

    offset  size  field
    ------  ----  ---------------------------------------------------------------
         0     4  magic            b"GJR1"
         4     4  body length      n
         8     8  lsn              previous record's lsn + 1
        16     4  crc32c           over bytes 8..15 and the n body bytes
        20     4  reserved         0
        24     n  body

    body:
         0     4  frame count      f
         4  20*f  frames           seg u32 | offset u64 | frame length u32 | frame crc u32
         .     .  changes          until the end of the body, each:
                                     db u8 | op u8 (0 delete, 1 put) | key length u16 | key
                                     | (put only) value length u32 | value

Replay (``read_records``) stops at the first record that is short, has a bad magic, a bad
CRC or a gap in the LSNs: that is the torn tail of a crash. In an encrypted volume the body
is sealed (``VolumeCrypto.seal_record``: epoch | nonce | AES-GCM, bound to the LSN) and
the CRC covers the sealed bytes. The caller also checks each
referenced frame before applying a record, because frames and journal are synced apart.

Space: the current file is preallocated ahead of its end (``ensure_headroom``, fallocate
with ``FALLOC_FL_KEEP_SIZE``: the size, and so replay, sees only what was written). The
engine asks for headroom before an operation changes anything, so the record that ends the
operation is written into blocks the file system already gave us and cannot fail with
ENOSPC half-way through an operation (``engine/space.py``).

What this module must not do: apply records (the engine does), or buffer writes.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .. import limits
from ..crypto.codec import VolumeCrypto
from ..errors import Corrupt
from ..ids import Lsn
from ..meta.store import Change
from ..storage import File, Storage
from . import crashpoints
from .frames import crc32c

MAGIC = b"GJR1"
_HEAD = struct.Struct("<4sIQII")
_FRAME_REF = struct.Struct("<IQII")
_U32 = struct.Struct("<I")
_CHANGE = struct.Struct("<BBH")
HEADER_SIZE = _HEAD.size
SUFFIX = ".wal"


@dataclass(slots=True, frozen=True)
class FrameRef:
    seg: int
    offset: int
    length: int
    crc: int


@dataclass(slots=True)
class Record:
    lsn: int
    frames: list[FrameRef]
    changes: list[Change]


def encode_body(frames: list[FrameRef], changes: list[Change]) -> bytes:
    parts = [_U32.pack(len(frames))]
    parts.extend(_FRAME_REF.pack(f.seg, f.offset, f.length, f.crc) for f in frames)
    for db, key, value in changes:
        if value is None:
            parts.append(_CHANGE.pack(db, 0, len(key)))
            parts.append(key)
        else:
            parts.append(_CHANGE.pack(db, 1, len(key)))
            parts.append(key)
            parts.append(_U32.pack(len(value)))
            parts.append(value)
    return b"".join(parts)


def encode_record(lsn: int, body: bytes) -> bytes:
    crc = crc32c(body, crc32c(struct.pack("<Q", lsn)))
    return _HEAD.pack(MAGIC, len(body), lsn, crc, 0) + body


def decode_body(body: bytes, where: str) -> tuple[list[FrameRef], list[Change]]:
    try:
        (count,) = _U32.unpack_from(body, 0)
        if count > limits.journal_record_frames_max:
            raise Corrupt(f"{where}: record claims {count} frames")
        pos = 4
        frames = []
        for _ in range(count):
            frames.append(FrameRef(*_FRAME_REF.unpack_from(body, pos)))
            pos += _FRAME_REF.size
        changes: list[Change] = []
        end = len(body)
        while pos < end:
            db, op, klen = _CHANGE.unpack_from(body, pos)
            pos += _CHANGE.size
            key = body[pos:pos + klen]
            pos += klen
            if op == 0:
                changes.append((db, key, None))
                continue
            (vlen,) = _U32.unpack_from(body, pos)
            pos += 4
            value = body[pos:pos + vlen]
            pos += vlen
            if op != 1 or len(key) != klen or len(value) != vlen:
                raise Corrupt(f"{where}: malformed change in record")
            changes.append((db, key, value))
        return frames, changes
    except struct.error as exc:
        raise Corrupt(f"{where}: malformed record body ({exc})") from exc


def file_name(first_lsn: int) -> str:
    return f"{first_lsn:016x}{SUFFIX}"


def list_files(storage: Storage, journal_dir: str) -> list[tuple[int, str]]:
    """Return ``(first lsn, path)`` of every journal file, in LSN order."""
    files = []
    for name in storage.listdir(journal_dir):
        if name.endswith(SUFFIX) and len(name) == 16 + len(SUFFIX):
            try:
                files.append((int(name[:16], 16), os.path.join(journal_dir, name)))
            except ValueError:
                continue
    files.sort()
    return files


def read_records(f: File, expect_lsn: int, crypto: VolumeCrypto | None = None) -> Iterator[tuple[int, int, Record]]:
    """Yield ``(offset, end offset, record)`` from ``f`` while records are whole and in sequence.

    Stops silently at the torn tail: the last end offset yielded is where valid data ends.
    An encrypted volume's record that does not authenticate counts as torn.
    """
    offset = 0
    while offset + HEADER_SIZE <= f.size:
        head = f.pread(offset, HEADER_SIZE)
        magic, length, lsn, crc, _ = _HEAD.unpack(head)
        if magic != MAGIC or lsn != expect_lsn or length > limits.journal_record_bytes_max:
            return
        body = f.pread(offset + HEADER_SIZE, length)
        if len(body) != length or crc32c(body, crc32c(head[8:16])) != crc:
            return
        if crypto is not None:
            opened = crypto.open_record(lsn, body)
            if opened is None:
                return
            body = opened
        try:
            frames, changes = decode_body(body, f"{f.path}@{offset}")
        except Corrupt:
            return
        end = offset + HEADER_SIZE + length
        yield offset, end, Record(lsn, frames, changes)
        offset = end
        expect_lsn += 1


class JournalWriter:
    """Appends records to the current journal file; knows which files still need a sync."""

    def __init__(self, storage: Storage, journal_dir: str, next_lsn: int, *,
                 crypto: VolumeCrypto | None = None) -> None:
        self._storage = storage
        self._crypto = crypto
        self._dir = journal_dir
        self.next_lsn = next_lsn
        self.bytes_since_checkpoint = 0
        self.bytes_appended = 0              # since open: galleonfs_journal_bytes_total
        self._file: File | None = None
        self._unsynced: list[File] = []      # files with appends not yet covered by a sync
        self._retired: list[File] = []       # rolled files, closed once synced
        self._allocated_end = 0              # the current file has blocks up to here
        self._preallocate = True             # False once the file system said it cannot

    @property
    def appended_lsn(self) -> Lsn:
        return Lsn(self.next_lsn - 1)

    def headroom(self) -> int:
        """Bytes that can still be appended to the current file into allocated blocks
        (unbounded where the file system cannot preallocate: nothing to be done there)."""
        if not self._preallocate:
            return limits.journal_file_size_max_bytes
        if self._file is None:
            return 0
        return self._allocated_end - self._file.size

    def ensure_headroom(self, need: int, chunk: int = limits.journal_prealloc_bytes) -> None:
        """Make the next ``need`` bytes of records land in allocated blocks: start a new file
        if the current one would pass its size limit, then allocate ``chunk`` (at least
        ``need``) ahead of its end. Raises ``OSError`` (ENOSPC) when the disk has no room;
        nothing changed then but, maybe, a new empty file (replay ignores those)."""
        f = self._file
        if f is None or f.size + need > limits.journal_file_size_max_bytes:
            f = self._roll(self.next_lsn)
        if not self._preallocate or self._allocated_end - f.size >= need:
            return
        length = max(need, chunk)
        if f.preallocate(length):
            self._allocated_end = f.size + length
        else:
            self._preallocate = False

    def append(self, frames: list[FrameRef], changes: list[Change]) -> Lsn:
        """Append one record; return its LSN. A plain write, no sync (DESIGN §3)."""
        lsn = Lsn(self.next_lsn)
        body = encode_body(frames, changes)
        if self._crypto is not None:
            body = self._crypto.seal_record(lsn, body)
        record = encode_record(lsn, body)
        f = self._file
        if f is None or f.size + len(record) > limits.journal_file_size_max_bytes:
            f = self._roll(lsn)
        if self._preallocate and f.size + len(record) > self._allocated_end:
            # Bigger than the headroom the operation was admitted with (a rare huge record,
            # or one of the few writes that are not admitted: atime, purges at release):
            # allocate more if the disk still has it; if not, the write below may still fit.
            with contextlib.suppress(OSError):
                self.ensure_headroom(len(record))
        size = f.size
        try:
            f.append([record])
        except OSError:
            # Leave no torn record behind: the next append would follow it, and replay stops
            # at the first bad record. The caller undoes the operation's changes.
            f.undo_append(size)
            self._allocated_end = min(self._allocated_end, size)
            raise
        if not self._unsynced or self._unsynced[-1] is not f:
            self._unsynced.append(f)
        self.next_lsn = lsn + 1
        self.bytes_since_checkpoint += len(record)
        self.bytes_appended += len(record)
        crashpoints.hit("journal.after_append_before_sync")
        return lsn

    def _roll(self, first_lsn: int) -> File:
        path = os.path.join(self._dir, file_name(first_lsn))
        if self._file is not None and self._file.size == 0 and self._file.path == path:
            return self._file             # made ahead by ensure_headroom; nothing in it yet
        f = self._storage.open_file(path, create=True)
        try:
            self._storage.sync_dir(self._dir)
        except OSError:
            f.close()
            self._storage.unlink(path)
            raise
        if self._file is not None:
            self._retired.append(self._file)
        self._file = f
        self._allocated_end = 0
        return f

    def roll_after_checkpoint(self) -> None:
        """Start a new file at the next record, so every older file is wholly checkpointed.

        Called right after a commit, so the current file has nothing unsynced.
        """
        assert not self._unsynced
        self.close_retired(self._retired)
        if self._file is not None:
            self._file.close()
            self._file = None
        self._allocated_end = 0
        self.bytes_since_checkpoint = 0

    def take_unsynced(self) -> list[File]:
        files, self._unsynced = self._unsynced, []
        return files

    def close_retired(self, synced: list[File]) -> None:
        """Close rolled files that a finished sync covered and nothing appended to since."""
        still = []
        for f in self._retired:
            if (f in synced or f.size == 0) and f not in self._unsynced:
                f.close()
            else:
                still.append(f)
        self._retired = still

    def delete_files_before(self, lsn: int) -> int:
        """Delete journal files whose records are all below ``lsn``; return how many."""
        files = list_files(self._storage, self._dir)
        current = self._file.path if self._file is not None else None
        removed = 0
        for i, (_first, path) in enumerate(files):
            next_first = files[i + 1][0] if i + 1 < len(files) else self.next_lsn
            if path == current or next_first > lsn:
                continue
            self._storage.unlink(path)
            removed += 1
        if removed:
            self._storage.sync_dir(self._dir)
        return removed

    def close(self) -> None:
        for f in [*self._retired, *([self._file] if self._file else [])]:
            f.close()
        self._retired = []
        self._file = None
