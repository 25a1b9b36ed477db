"""Data segments: append-only files of block frames, ``data/<n as 8 hex digits>.seg``.

A segment is only ever appended to, by one writer, and only until it reaches its size
limit or the volume is reopened (a reopened volume starts a new segment, so a torn tail
left by a crash is never written after). Frames are found through the block index, never
by scanning, except by GC and fsck.

What it must not do: decide what is live (the block index in the engine does), or keep
a user-space write buffer.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from .. import limits
from ..errors import Corrupt
from ..storage import File, Storage
from . import crashpoints, frames

SUFFIX = ".seg"
_READ_FDS_MAX = 64      # open segment files kept for reading; 64 fds is nothing, 16k is


def file_name(seg: int) -> str:
    return f"{seg:08x}{SUFFIX}"


def list_segments(storage: Storage, data_dir: str) -> list[int]:
    segs = []
    for name in storage.listdir(data_dir):
        if name.endswith(SUFFIX) and len(name) == 8 + len(SUFFIX):
            try:
                segs.append(int(name[:8], 16))
            except ValueError:
                continue
    return sorted(segs)


class Segments:
    """The data directory: one segment being appended to, any segment readable."""

    def __init__(self, storage: Storage, data_dir: str, next_seg: int) -> None:
        self._storage = storage
        self._dir = data_dir
        self.next_seg = next_seg
        self.current: int | None = None
        self._file: File | None = None
        self._unsynced: list[File] = []
        self.unsynced_bytes = 0          # appended since the last ``take_unsynced``
        self.takes = 0                   # ``take_unsynced`` calls: a flush started before one is void
        self._retired: list[File] = []
        self._readers: OrderedDict[int, File] = OrderedDict()
        # Frames a read-only recovery found only in the journal (inline frames whose segment
        # copy a crash took): served from here, since a read-only open writes nothing.
        self._overlay: dict[int, list[tuple[int, bytes]]] = {}

    def path(self, seg: int) -> str:
        return os.path.join(self._dir, file_name(seg))

    # --- writing -------------------------------------------------------------------------------
    def append(self, bufs: Sequence[bytes | bytearray | memoryview], total: int) -> tuple[int, int]:
        """Append frames (``total`` bytes in ``bufs``); return ``(segment, offset)``."""
        f = self._file
        if f is None or (f.size > 0 and f.size + total > limits.segment_size_max_bytes):
            f = self._roll()
        assert self.current is not None
        size = f.size
        try:
            offset = f.append(bufs)
        except OSError:
            f.undo_append(size)     # a full disk: leave no partial frames behind
            raise
        if not self._unsynced or self._unsynced[-1] is not f:
            self._unsynced.append(f)
        self.unsynced_bytes += total
        crashpoints.hit("segment.after_append")
        return self.current, offset

    def roll(self) -> None:
        """Start a new segment file, so that frames written from now on never share one
        with older frames (a rekey: the old file must become collectable as a whole)."""
        if self._file is not None and self._file.size > 0:
            self._roll()

    def _roll(self) -> File:
        seg = self.next_seg
        # Taken even if the file cannot be made: a later segment must not reuse the name of
        # one that might exist half-made.
        self.next_seg += 1
        f = self._storage.open_file(self.path(seg), create=True)
        try:
            self._storage.sync_dir(self._dir)
        except OSError:
            f.close()
            raise
        if self._file is not None:
            self._retired.append(self._file)
        self._file = f
        self.current = seg
        return f

    def take_unsynced(self) -> list[File]:
        files, self._unsynced = self._unsynced, []
        self.unsynced_bytes = 0
        self.takes += 1
        return files

    def peek_unsynced(self) -> list[tuple[File, int]]:
        """The files a background flush syncs, with their sizes now; they stay unsynced
        for every commit until ``flushed`` says the sync finished."""
        return [(f, f.size) for f in self._unsynced]

    def flushed(self, files: list[tuple[File, int]], nbytes: int) -> None:
        """A flush of ``files`` (``peek_unsynced``) finished and no commit took them since:
        what was appended before it is durable; files appended to since stay unsynced."""
        done = {id(f) for f, size in files if f.size == size}
        self._unsynced = [f for f in self._unsynced if id(f) not in done]
        self.unsynced_bytes -= nbytes

    def repair(self, seg: int, offset: int, frame: bytes, *, in_memory: bool) -> None:
        """Put a frame the journal carried back at its place in ``seg`` (recovery: a power cut
        took the segment's copy). ``in_memory``: only for this process's reads (read-only)."""
        if in_memory:
            self._overlay.setdefault(seg, []).append((offset, frame))
            return
        f = self._storage.open_file(self.path(seg))
        try:
            os.pwrite(f.fd, frame, offset)
        finally:
            f.close()

    def close_retired(self, synced: list[File]) -> None:
        """Close rolled files that a finished sync covered and nothing appended to since.

        A file appended to while its sync ran is back in ``_unsynced``: the next commit must
        still sync it, so it stays open.
        """
        still = []
        for f in self._retired:
            if f in synced and f not in self._unsynced:
                f.close()
            else:
                still.append(f)
        self._retired = still

    # --- reading -------------------------------------------------------------------------------
    def _reader(self, seg: int) -> File:
        if seg == self.current and self._file is not None:
            return self._file
        f = self._readers.get(seg)
        if f is not None:
            self._readers.move_to_end(seg)
            return f
        try:
            f = self._storage.open_file(self.path(seg), writable=False)
        except FileNotFoundError as exc:
            raise Corrupt(f"data segment {file_name(seg)} is missing") from exc
        self._readers[seg] = f
        if len(self._readers) > _READ_FDS_MAX:
            _, old = self._readers.popitem(last=False)
            old.close()
        return f

    def pread(self, seg: int, offset: int, length: int) -> bytes:
        data = self._reader(seg).pread(offset, length)
        if self._overlay and seg in self._overlay:
            data = self._patched(seg, offset, length, data)
        if len(data) != length:
            raise Corrupt(
                f"data segment {file_name(seg)} ends before the frame at {offset} "
                f"({len(data)} of {length} bytes)"
            )
        return data

    def _patched(self, seg: int, offset: int, length: int, data: bytes) -> bytes:
        buf = bytearray(data.ljust(length, b"\0"))
        end = offset + length
        for start, frame in self._overlay[seg]:
            lo, hi = max(start, offset), min(start + len(frame), end)
            if lo < hi:
                buf[lo - offset:hi - offset] = frame[lo - start:hi - start]
        return bytes(buf)

    def file_size(self, seg: int) -> int:
        return self._reader(seg).size if seg == self.current else os.fstat(self._reader(seg).fd).st_size

    def scan(self, seg: int) -> Iterator[tuple[int, frames.FrameHeader, bytes]]:
        """Yield ``(offset, header, whole frame)`` of each frame; raises Corrupt at a bad one."""
        size = self.file_size(seg)
        offset = 0
        where = file_name(seg)
        while offset < size:
            head = self.pread(seg, offset, min(frames.HEADER_SIZE, size - offset))
            header = frames.parse_header(head, f"{where}@{offset}")
            frame = self.pread(seg, offset, header.frame_len)
            frames.verify(frame, f"{where}@{offset}")
            yield offset, header, frame
            offset += header.frame_len

    def forget(self, seg: int) -> None:
        """Close every descriptor of ``seg`` before its file is deleted: a reader, and the
        writer if the segment was rolled and still waits for a sync. Its frames are dead, so
        the sync no longer matters; an open descriptor would keep the deleted file's blocks
        from the disk until unmount (a segment rolled with nothing left to sync is never in
        a commit again, so ``close_retired`` would not close it)."""
        f = self._readers.pop(seg, None)
        if f is not None:
            f.close()
        path = self.path(seg)
        for f in [f for f in self._retired if f.path == path]:
            self._retired.remove(f)
            if f in self._unsynced:
                self._unsynced.remove(f)
            f.close()

    def close(self) -> None:
        for f in [*self._readers.values(), *self._retired, *([self._file] if self._file else [])]:
            f.close()
        self._readers.clear()
        self._retired = []
        self._file = None
