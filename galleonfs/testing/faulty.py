"""``FaultyStorage``: the engine's storage interface with a power switch.

It writes to real files (so the engine reads back what it wrote) and remembers what a
real disk would still hold after a power cut:

* file contents: what was appended before the file's last ``sync``; appends since are
  lost, or partly kept when ``power_cut`` is given a random generator (a prefix of them,
  with a torn tail and some pages inside it zeros);
* directory entries: a file created (or unlinked) since its directory's last sync may
  vanish (or reappear) after the cut, as POSIX allows;
* the LMDB store: its state at the last commit reported through ``meta_committed``.

``power_cut()`` rewrites the files on disk to that state. The engine must be dropped first
(``engine.close(checkpoint=False)``) so that nothing writes afterwards.

Named crash points (``engine.crashpoints``) pick the instant; this class models what
survives it. ``FailingStorage`` makes appends or syncs fail with a chosen errno (a disk that
fills up, or fails, at one exact write).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..storage import File, Storage

_PAGE_BYTES = 4096          # the unit the page cache writes back in
_PAGE_LOST_P = 0.1          # chance that an unsynced page inside the surviving size is lost


@dataclass
class _Durable:
    length: int = 0            # bytes that survive (an append-only file's synced prefix)
    entry_durable: bool = True  # the directory entry survives
    # Ranges inside ``length`` written since the last sync (the journal writes its records
    # into zeros it wrote and synced ahead): lost at a power cut, back to zeros.
    overwritten: list[tuple[int, int]] = field(default_factory=list)


class _TrackedFile(File):
    def __init__(self, path: str, fd: int, owner: FaultyStorage) -> None:
        super().__init__(path, fd)
        self._owner = owner

    def sync(self) -> None:
        super().sync()
        # fdatasync covers every byte of the file, also those appended through another
        # descriptor: a reader opened earlier has a stale ``size``.
        self._owner._synced(self.path, os.fstat(self.fd).st_size)

    def truncate(self, size: int) -> None:
        super().truncate(size)
        state = self._owner._state(self.path)
        state.length = min(state.length, size)

    def write_at(self, offset: int, data: bytes) -> None:
        state = self._owner._state(self.path)
        if offset < state.length:
            state.overwritten.append((offset, min(offset + len(data), state.length)))
        super().write_at(offset, data)


class FaultyStorage(Storage):
    def __init__(self) -> None:
        self._files: dict[str, _Durable] = {}
        self._unlinked: dict[str, bytes] = {}       # durable content of unlinks not yet dir-synced
        self._meta_images: dict[str, bytes] = {}
        self.syncs = 0

    # --- bookkeeping -------------------------------------------------------------------------------
    def _state(self, path: str) -> _Durable:
        state = self._files.get(path)
        if state is None:
            # A file that existed before we started watching: all of it is durable.
            size = os.path.getsize(path) if os.path.exists(path) else 0
            state = self._files[path] = _Durable(size, True)
        return state

    def _synced(self, path: str, size: int) -> None:
        self.syncs += 1
        state = self._state(path)
        state.length = size
        state.overwritten.clear()

    # --- the interface -----------------------------------------------------------------------------
    def open_file(self, path: str, *, create: bool = False, writable: bool = True) -> File:
        f = super().open_file(path, create=create, writable=writable)
        tracked = _TrackedFile(path, f.fd, self)
        if create:
            self._files[path] = _Durable(0, False)
        else:
            self._state(path)
        return tracked

    def unlink(self, path: str) -> None:
        state = self._state(path)
        if state.entry_durable:
            with open(path, "rb") as f:
                self._unlinked[path] = f.read(state.length)
        super().unlink(path)
        del self._files[path]

    def sync_dir(self, path: str) -> None:
        super().sync_dir(path)
        self.syncs += 1
        for p, state in self._files.items():
            if os.path.dirname(p) == path:
                state.entry_durable = True
        for p in [p for p in self._unlinked if os.path.dirname(p) == path]:
            del self._unlinked[p]

    def write_file_durably(self, path: str, data: bytes) -> None:
        super().write_file_durably(path, data)
        self._files[path] = _Durable(len(data), True)

    def meta_committed(self, volume_dir: str) -> None:
        self.snapshot_meta(volume_dir)

    def snapshot_meta(self, volume_dir: str) -> None:
        """Record the LMDB store as durable (also call once before the engine opens)."""
        with open(os.path.join(volume_dir, "meta.lmdb", "data.mdb"), "rb") as f:
            self._meta_images[volume_dir] = f.read()

    # --- the switch --------------------------------------------------------------------------------
    def power_cut(self, rng: random.Random | None = None) -> list[str]:
        """Put the disk into the state it would have after losing power now.

        With ``rng``, unsynced appends survive in part: a random prefix of them, its last
        bytes possibly garbage (a torn write), and some of its pages zeros (the new file
        size reached the disk, those pages did not: writeback has no order). Unsynced
        directory entries survive at random. The same ``rng`` seed gives the same disk.
        Returns a description of what was lost, for test messages.
        """
        lost = []
        for path, state in list(self._files.items()):
            if not os.path.exists(path):
                continue
            keep_entry = state.entry_durable or (rng is not None and rng.random() < 0.5)
            if not keep_entry:
                os.unlink(path)
                lost.append(f"{path}: whole file (entry not synced)")
                continue
            what = self._cut_file(path, state.length, rng)
            what = ", ".join(w for w in (self._undo_overwrites(path, state, rng), what) if w)
            if what:
                lost.append(f"{path}: {what}")
        for path, data in self._unlinked.items():
            with open(path, "wb") as f:
                f.write(data)
            lost.append(f"{path}: unlink undone")
        for volume_dir, image in self._meta_images.items():
            meta = os.path.join(volume_dir, "meta.lmdb")
            with open(os.path.join(meta, "data.mdb"), "wb") as f:
                f.write(image)
            lock = os.path.join(meta, "lock.mdb")
            if os.path.exists(lock):
                os.unlink(lock)
        self._files.clear()
        self._unlinked.clear()
        return lost


    @staticmethod
    def _undo_overwrites(path: str, state: _Durable, rng: random.Random | None) -> str:
        """Unsynced writes into the synced part of a file (always into zeros written ahead):
        lost, or with ``rng`` kept in part (a prefix, whole pages)."""
        damage = []
        with open(path, "r+b") as f:
            for start, end in state.overwritten:
                end = min(end, state.length)
                if start >= end:
                    continue
                keep = start
                if rng is not None:
                    keep = min(end, start + rng.randrange(0, end - start + 1) // _PAGE_BYTES * _PAGE_BYTES)
                if keep < end:
                    f.seek(keep)
                    f.write(bytes(end - keep))
                    damage.append(f"{end - keep} bytes written at {start} lost")
        return ", ".join(damage)

    @staticmethod
    def _cut_file(path: str, durable: int, rng: random.Random | None) -> str:
        """Reduce one file to what survives; return what was lost ("" for nothing)."""
        size = os.path.getsize(path)
        if size <= durable:
            return ""
        keep = durable
        if rng is not None:
            # A random prefix of what was written, measured up to the last byte that is not
            # a zero: the journal keeps zeros written ahead of its records, and a prefix drawn
            # over those too would nearly always keep every record.
            with open(path, "rb") as f:
                f.seek(durable)
                data_end = durable + len(f.read().rstrip(b"\0"))
            keep = durable + rng.randrange(0, data_end - durable + 1)
            if keep == data_end and rng.random() < 0.5:
                keep = size
        damage = []
        with open(path, "r+b") as f:
            if keep < size:
                f.truncate(keep)
                damage.append(f"{size - keep} of {size} bytes")
            if rng is not None and keep > durable:
                first_page = -(-durable // _PAGE_BYTES)
                for page in range(first_page, -(-keep // _PAGE_BYTES)):
                    if rng.random() < _PAGE_LOST_P:
                        start = page * _PAGE_BYTES
                        f.seek(start)
                        f.write(bytes(min(_PAGE_BYTES, keep - start)))
                        damage.append(f"page at {start} zeroed")
                if rng.random() < 0.5:
                    torn = min(keep - durable, rng.randrange(1, 64))
                    f.seek(keep - torn)
                    f.write(rng.randbytes(torn))
                    damage.append(f"last {torn} bytes garbage")
        return ", ".join(damage)


def copy_volume(src: str, dst: str) -> None:
    """Copy a volume directory (for tests that branch one state into several crashes)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))


class _FailingFile(File):
    def __init__(self, path: str, fd: int, owner: FailingStorage) -> None:
        super().__init__(path, fd)
        self._owner = owner

    def append(self, bufs: Sequence[bytes | bytearray | memoryview]) -> int:
        err = self._owner.fail_append.get(os.path.basename(os.path.dirname(self.path)))
        if err is not None:
            # Like a real full disk: part of the bytes land, then the write fails.
            os.pwrite(self.fd, bytes(bufs[0])[:100], self.size)
            raise OSError(err, os.strerror(err))
        return super().append(bufs)

    def write_at(self, offset: int, data: bytes) -> None:
        err = self._owner.fail_append.get(os.path.basename(os.path.dirname(self.path)))
        if err is not None:
            os.pwrite(self.fd, bytes(data[:100]), offset)
            if offset + min(100, len(data)) > self.size:
                self.size = offset + min(100, len(data))
            raise OSError(err, os.strerror(err))
        super().write_at(offset, data)

    def sync(self) -> None:
        err = self._owner.fail_sync
        if err is not None:
            raise OSError(err, os.strerror(err))
        super().sync()


class FailingStorage(Storage):
    """The real storage, with errors a test arms by directory: ``fail_append["journal"] =
    errno.ENOSPC`` makes every append (or write) to a journal file write a little and then fail with
    that errno (``"data"`` for segments); ``fail_sync`` makes every fdatasync fail."""

    def __init__(self) -> None:
        self.fail_append: dict[str, int] = {}
        self.fail_sync: int | None = None

    def open_file(self, path: str, *, create: bool = False, writable: bool = True) -> File:
        f = super().open_file(path, create=create, writable=writable)
        return _FailingFile(path, f.fd, self)
