"""The write-ahead journal: checksummed records in LSN order (DESIGN §3, docs/design.md).

One record carries one FUSE request's metadata changes, as physical puts and deletes on
the metadata databases, plus references to the block frames it made live and, for a small
write, those frames' bytes themselves (*inline frames*: then one journal write and one
``fdatasync`` make the request durable; the segment copy is synced at the next checkpoint,
and recovery rewrites it from the record if the power cut took it). Files are
``journal/<first lsn as 16 hex digits>.wal``; a file rolls at a size limit and at every
checkpoint, so whole files fall below the checkpoint and can be deleted.

Record layout, format v2 (every record written now), little-endian::

    offset  size  field
    ------  ----  ---------------------------------------------------------------
         0     4  magic            b"GJR2"
         4     2  flags            bit 0 body sealed (AES-GCM), bit 1 inline frames; others 0
         6     2  reserved         0
         8     8  lsn              previous record's lsn + 1
        16     8  epoch            the volume's epoch when written (fencing; 0 on one node)
        24     8  generation       the volume's generation when written
        32     8  time             nanoseconds since the Unix epoch, when written
        40     8  volume tag       ``volume_tag(volume id)``: a record of volume A is never
                                   applied to volume B
        48     4  body length      n
        52     8  reserved         0
        60     4  crc32c           over bytes 0..59 and the n body bytes
        64     n  body

    body (sealed as a whole when bit 0 is set: key epoch u8 | nonce 12 | AES-GCM with the
    header's bytes 0..59 as associated data, so no header field can be changed or a body
    moved under another header unnoticed):
         0     4  frame count      f
         4  20*f  frames           seg u32 | offset u64 | frame length u32 | frame crc u32
         .     .  inline frames    (bit 1 only) the f frames' bytes, in order, sum of lengths
         .     .  changes          until the end of the body, each:
                                     db u8 | op u8 (0 delete, 1 put) | key length u16 | key
                                     | (put only) value length u32 | value

Format v1 records (magic b"GJR1", a 24-byte header: magic | body length u32 | lsn u64 |
crc32c u32 | reserved u32; a sealed body bound to the LSN only; no inline frames) are still
read, so a volume written by an older GalleonFS opens and replays; nothing writes them, and
a v1 record after a v2 one is not accepted.

Replay (``read_records``) stops at the first record that is short, has a bad magic, a bad
CRC, a gap in the LSNs, another volume's tag, or an epoch lower than the record before it or
higher than the volume's: that is the torn tail of a crash (or, for tag and epoch, a record
that is not this volume's to apply; ``Stop`` says which). An encrypted record that does not
authenticate counts as torn. The caller also checks each referenced frame that is not
inline before applying a record, because those frames and the journal are synced apart.

Space: the current file is preallocated ahead of its end (``ensure_headroom``, fallocate
with ``FALLOC_FL_KEEP_SIZE``). The engine asks for headroom before an operation changes
anything, so the record that ends the operation is written into blocks the file system
already gave us and cannot fail with ENOSPC half-way through an operation
(``engine/space.py``). Inside that, the writer keeps zeros written ahead of its next record
(``_zero_ahead``, ``limits.journal_zero_ahead_bytes``): a record overwrites blocks the file
already has, so the fdatasync of a commit writes data only, not the file's size and extents
too. Replay ends at zeros like at any tail, and goes on past the zeros a rolled file keeps
(the next file must then begin at the next LSN).

What this module must not do: apply records (the engine does), or buffer writes.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import blake3

from .. import limits
from ..crypto.codec import RECORD_SEAL_OVERHEAD, VolumeCrypto
from ..errors import Corrupt
from ..ids import Lsn
from ..meta.store import Change
from ..storage import File, Storage
from . import crashpoints
from .frames import crc32c

MAGIC = b"GJR2"
MAGIC_V1 = b"GJR1"
FLAG_SEALED = 0x01
FLAG_INLINE = 0x02
_HEAD = struct.Struct("<4sHHQQQQQI8x")      # bytes 0..59 of a v2 header
_CRC = struct.Struct("<I")
HEADER_SIZE = 64
assert _HEAD.size + _CRC.size == HEADER_SIZE
_HEAD_V1 = struct.Struct("<4sIQII")
HEADER_SIZE_V1 = _HEAD_V1.size
_FRAME_REF = struct.Struct("<IQII")
_U32 = struct.Struct("<I")
_CHANGE = struct.Struct("<BBH")
SUFFIX = ".wal"


def volume_tag(volume_id: str) -> int:
    """The 64-bit tag every record of a volume carries (a keyless hash of its id)."""
    return int.from_bytes(blake3.blake3(b"galleonfs journal tag\0" + volume_id.encode()).digest(8), "little")


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
    inline: bytes | None = None      # the frames' bytes, in order, when the record carries them
    epoch: int = 0
    generation: int = 0
    time_ns: int = 0
    tag: int = 0
    version: int = 2

    def inline_frames(self) -> Iterator[tuple[FrameRef, bytes]]:
        """``(ref, frame bytes)`` of each inline frame."""
        assert self.inline is not None
        pos = 0
        for ref in self.frames:
            yield ref, self.inline[pos:pos + ref.length]
            pos += ref.length


@dataclass(slots=True)
class Stop:
    """Why ``read_records`` stopped (``reason`` None: at the end of the file)."""

    reason: str | None = None
    foreign: bool = False            # a whole record of another volume (its tag)


@dataclass(slots=True, frozen=True)
class Stamp:
    """What a v2 header says besides the LSN: who wrote the record, and when."""

    tag: int = 0
    epoch: int = 0
    generation: int = 0
    time_ns: int = field(default_factory=time.time_ns)


def encode_body(frames: list[FrameRef], changes: list[Change], inline: bytes | None = None) -> bytes:
    parts = [_U32.pack(len(frames))]
    parts.extend(_FRAME_REF.pack(f.seg, f.offset, f.length, f.crc) for f in frames)
    if inline is not None:
        assert len(inline) == sum(f.length for f in frames)
        parts.append(inline)
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


def encode_record(lsn: int, body: bytes, stamp: Stamp | None = None, *, inline: bool = False,
                  crypto: VolumeCrypto | None = None) -> bytes:
    """A whole v2 record (header and body, sealed when ``crypto`` is given)."""
    stamp = stamp or Stamp()
    flags = (FLAG_INLINE if inline else 0) | (FLAG_SEALED if crypto is not None else 0)
    length = len(body) + (RECORD_SEAL_OVERHEAD if crypto is not None else 0)
    head = _HEAD.pack(MAGIC, flags, 0, lsn, stamp.epoch, stamp.generation, stamp.time_ns,
                      stamp.tag, length)
    if crypto is not None:
        body = crypto.seal_record(lsn, body, head)
        assert len(body) == length
    return head + _CRC.pack(crc32c(body, crc32c(head))) + body


def encode_record_v1(lsn: int, body: bytes) -> bytes:
    """A v1 record, as GalleonFS wrote them before format v2 (tests of old volumes)."""
    crc = crc32c(body, crc32c(struct.pack("<Q", lsn)))
    return _HEAD_V1.pack(MAGIC_V1, len(body), lsn, crc, 0) + body


def decode_body(body: bytes, where: str, *, inline: bool = False
                ) -> tuple[list[FrameRef], list[Change], bytes | None]:
    try:
        (count,) = _U32.unpack_from(body, 0)
        if count > limits.journal_record_frames_max:
            raise Corrupt(f"{where}: record claims {count} frames")
        pos = 4
        frames = []
        for _ in range(count):
            frames.append(FrameRef(*_FRAME_REF.unpack_from(body, pos)))
            pos += _FRAME_REF.size
        inline_bytes = None
        if inline:
            n = sum(f.length for f in frames)
            inline_bytes = body[pos:pos + n]
            if len(inline_bytes) != n:
                raise Corrupt(f"{where}: record ends inside its inline frames")
            pos += n
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
        return frames, changes, inline_bytes
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


def read_records(f: File, expect_lsn: int, crypto: VolumeCrypto | None = None, *,
                 tag: int | None = None, epoch_max: int = 0,
                 stop: Stop | None = None) -> Iterator[tuple[int, int, Record]]:
    """Yield ``(offset, end offset, record)`` from ``f`` while records are whole and in sequence.

    Stops at the torn tail: the last end offset yielded is where valid data ends, and
    ``stop`` (if given) says why. ``tag`` (None: not checked) is the volume's tag and
    ``epoch_max`` its epoch: a record with another tag, a higher epoch, or a lower epoch
    than the record before it is not applied. An encrypted volume's record that does not
    authenticate counts as torn.
    """
    stop = stop if stop is not None else Stop()
    offset, epoch, seen_v2 = 0, 0, False
    where = os.path.basename(f.path)
    while True:
        head = f.pread(offset, HEADER_SIZE) if offset < f.size else b""
        if not head:
            stop.reason = None
            return
        magic = head[:4]
        if magic == MAGIC and len(head) == HEADER_SIZE:
            magic, flags, _, lsn, rec_epoch, generation, time_ns, rec_tag, length = _HEAD.unpack_from(head)
            (crc,) = _CRC.unpack_from(head, _HEAD.size)
            start, version = HEADER_SIZE, 2
        elif magic == MAGIC_V1 and len(head) >= HEADER_SIZE_V1 and not seen_v2:
            magic, length, lsn, crc, _ = _HEAD_V1.unpack_from(head)
            flags = FLAG_SEALED if crypto is not None else 0
            rec_epoch = generation = time_ns = 0
            rec_tag = tag or 0
            start, version = HEADER_SIZE_V1, 1
        else:
            stop.reason = f"{where}@{offset}: no record header (a torn or never written tail)"
            return
        if lsn != expect_lsn or length > limits.journal_record_bytes_max:
            stop.reason = f"{where}@{offset}: record {lsn} where {expect_lsn} was expected"
            return
        body = f.pread(offset + start, length)
        covered = head[:_HEAD.size] if version == 2 else head[8:16]
        if len(body) != length or crc32c(body, crc32c(covered)) != crc:
            stop.reason = f"{where}@{offset}: record {lsn} is incomplete or fails its checksum"
            return
        if tag is not None and rec_tag != tag:
            stop.reason = f"{where}@{offset}: record {lsn} belongs to another volume (tag {rec_tag:016x})"
            stop.foreign = True
            return
        if rec_epoch < epoch or rec_epoch > epoch_max:
            stop.reason = (f"{where}@{offset}: record {lsn} has epoch {rec_epoch}, outside "
                           f"{epoch}..{epoch_max} (written by a fenced-off primary)")
            return
        if flags & FLAG_SEALED:
            if crypto is None:
                stop.reason = f"{where}@{offset}: record {lsn} is sealed, but the volume has no key"
                return
            opened = crypto.open_record(lsn, body, head[:_HEAD.size] if version == 2 else None)
            if opened is None:
                stop.reason = f"{where}@{offset}: record {lsn} fails authentication"
                return
            body = opened
        elif crypto is not None:
            stop.reason = f"{where}@{offset}: record {lsn} is not sealed in an encrypted volume"
            return
        try:
            frames, changes, inline = decode_body(body, f"{where}@{offset}", inline=bool(flags & FLAG_INLINE))
        except Corrupt as exc:
            stop.reason = str(exc)
            return
        end = offset + start + length
        yield offset, end, Record(lsn, frames, changes, inline, rec_epoch, generation, time_ns,
                                  rec_tag, version)
        offset = end
        expect_lsn += 1
        epoch = rec_epoch
        seen_v2 = seen_v2 or version == 2


class JournalWriter:
    """Appends records to the current journal file; knows which files still need a sync."""

    def __init__(self, storage: Storage, journal_dir: str, next_lsn: int, *,
                 crypto: VolumeCrypto | None = None, tag: int = 0, epoch: int = 0) -> None:
        self._storage = storage
        self._crypto = crypto
        self.tag = tag
        self.epoch = epoch
        self._dir = journal_dir
        self.next_lsn = next_lsn
        self.bytes_since_checkpoint = 0
        self.bytes_appended = 0              # since open: galleonfs_journal_bytes_total
        self.inline_unsynced = 0             # inline frame bytes whose segment copy is not synced
        self._file: File | None = None
        self._unsynced: list[File] = []      # files with appends not yet covered by a sync
        self._retired: list[File] = []       # rolled files, closed once synced
        self._allocated_end = 0              # the current file has blocks up to here
        self._preallocate = True             # False once the file system said it cannot
        self._pos = 0                        # where the next record goes in the current file

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
        return self._allocated_end - self._pos

    def ensure_headroom(self, need: int, chunk: int = limits.journal_prealloc_bytes) -> None:
        """Make the next ``need`` bytes of records land in allocated blocks: start a new file
        if the current one would pass its size limit, then allocate ``chunk`` (at least
        ``need``) ahead of its end. Raises ``OSError`` (ENOSPC) when the disk has no room;
        nothing changed then but, maybe, a new empty file (replay ignores those)."""
        f = self._file
        if f is None or self._pos + need > limits.journal_file_size_max_bytes:
            f = self._roll(self.next_lsn)
        if not self._preallocate or self._allocated_end - self._pos >= need:
            return
        length = max(need, chunk)
        if f.preallocate(length):
            self._allocated_end = f.size + length
        else:
            self._preallocate = False

    def append(self, frames: list[FrameRef], changes: list[Change], *, generation: int = 0,
               inline: bytes | None = None) -> Lsn:
        """Append one record (``inline``: the frames' bytes, carried in it); return its LSN.
        A plain write, no sync (DESIGN §3)."""
        lsn = Lsn(self.next_lsn)
        body = encode_body(frames, changes, inline)
        record = encode_record(lsn, body, Stamp(self.tag, self.epoch, generation, time.time_ns()),
                               inline=inline is not None, crypto=self._crypto)
        f = self._file
        if f is None or self._pos + len(record) > limits.journal_file_size_max_bytes:
            f = self._roll(lsn)
        if self._preallocate and self._pos + len(record) > self._allocated_end:
            # Bigger than the headroom the operation was admitted with (a rare huge record,
            # or one of the few writes that are not admitted: atime, purges at release):
            # allocate more if the disk still has it; if not, the write below may still fit.
            with contextlib.suppress(OSError):
                self.ensure_headroom(len(record))
        pos, size = self._pos, f.size
        try:
            f.write_at(pos, record)
        except OSError:
            # Leave no torn record behind: the next append would follow it, and replay stops
            # at the first bad record. The caller undoes the operation's changes.
            if pos >= size:
                f.undo_append(size)
                self._allocated_end = min(self._allocated_end, size)
            else:
                with contextlib.suppress(OSError):
                    f.write_at(pos, bytes(min(len(record), size - pos)))
            raise
        self._pos = pos + len(record)
        if not self._unsynced or self._unsynced[-1] is not f:
            self._unsynced.append(f)
        self._zero_ahead(f)
        self.next_lsn = lsn + 1
        if inline is not None:
            self.inline_unsynced += len(inline)
        self.bytes_since_checkpoint += len(record)
        self.bytes_appended += len(record)
        crashpoints.hit("journal.after_append_before_sync")
        return lsn

    def _zero_ahead(self, f: File) -> None:
        """Keep zeros written ahead of the next record (``limits.journal_zero_ahead_bytes``):
        a record then overwrites blocks that are already the file's, so the ``fdatasync`` of
        a commit writes data only, not the file's new size and extents too. The zeros reach
        the disk with the next commit's sync; replay ends at them as at any other tail. Best
        effort: a file system that refuses them only loses the speed-up."""
        chunk = limits.journal_zero_ahead_bytes
        if f.size - self._pos >= chunk // 2 or chunk <= 0:
            return
        length = chunk if not self._preallocate else min(chunk, self._allocated_end - f.size)
        if length <= 0:
            return
        size = f.size
        try:
            f.append([bytes(length)])
        except OSError:
            f.undo_append(size)

    def _roll(self, first_lsn: int) -> File:
        path = os.path.join(self._dir, file_name(first_lsn))
        if self._file is not None and self._pos == 0 and self._file.path == path:
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
        self._pos = 0
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
        self._pos = 0
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
