"""``MetaStore``: one volume's LMDB environment, behind one long-lived write transaction.

Role: the engine applies every metadata change here and reads it back at once (reads go
through the same write transaction, so they see uncommitted changes). Each change is also
recorded, so the engine can write it to the journal as a physical (database, key, value)
record: replaying a record is a sequence of puts and deletes, which makes replay
idempotent. The transaction is committed, with a full sync, only at a checkpoint.

What it must not do: know about files, directories or blocks (that is the VFS and the
engine), or be used from any thread but the one that opened it (LMDB write transactions
belong to their thread).

Versioned databases (see ``schema``) store ``born generation (u64 LE) | payload``: ``put``
adds the prefix, ``get`` strips it, ``get_born`` returns it.

On an encrypted volume (``set_sealing``) names inside keys become tokens and values are
sealed (``sealing``); the public methods take and return the original keys and payloads,
while the history and generation indexes, the journal's change records and ``apply`` work
on stored keys and values. ``original_key`` maps a stored key from an index back.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from typing import TypeAlias

import lmdb

from .. import limits
from ..errors import FormatError, IOFailure, NoSpace
from . import schema
from .schema import VERSIONED, Db
from .sealing import NAMED, SEALED, MetaSealing

DELETED = 1
PRESERVED = 2

Change: TypeAlias = tuple[int, bytes, bytes | None]   # (db, key, stored value or None = delete)

_BORN = struct.Struct("<Q")
_META_DIR = "meta.lmdb"


class MetaStore:
    def __init__(self, volume_dir: str, *, map_size: int = limits.meta_map_size_bytes) -> None:
        path = os.path.join(volume_dir, _META_DIR)
        try:
            self._env = lmdb.open(
                path, subdir=True, create=True, max_dbs=len(Db) + 4, map_size=map_size,
                sync=True, metasync=True, writemap=False, mode=0o700,   # data.mdb 0600
                # readahead off: metadata access is random; LMDB's own advice for large DBs.
                readahead=False, max_readers=16,
            )
        except lmdb.Error as exc:
            raise FormatError(f"cannot open the metadata store at {path}: {exc}") from exc
        try:
            self._dbs = [self._env.open_db(db.name.lower().encode()) for db in Db]
        except lmdb.Error as exc:       # damaged pages (MDB_CORRUPTED): a sentence, not a traceback
            self._env.close()
            raise FormatError(f"the metadata store at {path} is damaged: {exc}") from exc
        self._versioned = [db in VERSIONED for db in Db]
        self._sealing: MetaSealing | None = None
        self._sealed = [False] * len(Db)
        self._txn = self._env.begin(write=True)
        self._reopen = (path, map_size)      # for restart(), after LMDB refused to go on
        self._changes: list[Change] = []
        self._born = _BORN.pack(0)
        self.generation = 0
        # The newest snapshot's generation (0: no snapshots, so nothing is ever versioned and
        # no index is kept). The engine sets it from the snapshots database.
        self.snap_gen_max = 0

    def set_sealing(self, sealing: MetaSealing | None) -> None:
        """Seal from now on (an encrypted volume, right after its keys are unwrapped)."""
        self._sealing = sealing
        self._sealed = [sealing is not None and db in SEALED for db in Db]

    def _skey(self, db: int, key: bytes) -> bytes:
        return self._sealing.stored_key(db, key) if self._sealed[db] and self._sealing else key

    def _open(self, db: int, skey: bytes, stored: bytes) -> tuple[bytes, bytes]:
        """``(key, payload)`` of a stored record (born prefix stripped)."""
        strip = 8 if self._versioned[db] else 0
        if not self._sealed[db]:
            return skey, bytes(stored[strip:])
        assert self._sealing is not None
        return self._sealing.open(db, skey, stored[strip:], bytes(stored[:strip]))

    def original_key(self, db: Db, skey: bytes) -> bytes | None:
        """The key whose stored form is ``skey`` (from a history or generation index), read
        from its live or any kept version; None if neither exists."""
        if not self._sealed[db] or db not in NAMED:
            return skey
        stored = self._txn.get(skey, db=self._dbs[db])
        if stored is None:
            head = schema.history_key(db, skey, 0)[:-8]
            with self._txn.cursor(db=self._dbs[Db.HISTORY]) as cursor:
                if not cursor.set_range(head) or not bytes(cursor.key()).startswith(head):
                    return None
                stored = cursor.value()
        return self._open(db, skey, stored)[0]

    def stale_sealed(self, epoch: int) -> Iterator[tuple[int, bytes]]:
        """``(db, stored key)`` of every sealed value, live or kept in history, that was
        sealed under another key epoch than ``epoch`` (what a rekey must rewrite)."""
        for db in sorted(SEALED):
            at = 8 if self._versioned[db] else 0
            for key, value in self._scan_stored(Db(db), b"", None):
                if value[at] != epoch:
                    yield db, key
        for hkey, value in self._scan_stored(Db.HISTORY, b"", None):
            if hkey[0] in SEALED and value[8] != epoch:
                yield Db.HISTORY, hkey

    def reseal(self, db: int, skey: bytes) -> None:
        """Seal one stored value again under the current key; its born generation and
        place stay (it is the same version). Journaled like any write."""
        assert self._sealing is not None
        stored = self._txn.get(skey, db=self._dbs[db])
        if stored is None:
            return
        where, key = (skey[0], skey[1:-8]) if db == Db.HISTORY else (db, skey)
        born = bytes(stored[:8]) if db == Db.HISTORY or self._versioned[where] else b""
        original, payload = self._sealing.open(where, key, stored[len(born):], born)
        self._write(db, skey, born + self._sealing.seal(where, key, original, payload, born))

    # --- generation ----------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    @generation.setter
    def generation(self, value: int) -> None:
        self._generation = value
        self._born = _BORN.pack(value)

    # --- reads ---------------------------------------------------------------------------------
    def get(self, db: Db, key: bytes) -> bytes | None:
        if self._sealed[db]:
            skey = self._skey(db, key)
            stored = self._txn.get(skey, db=self._dbs[db])
            return None if stored is None else self._open(db, skey, stored)[1]
        value: bytes | None = self._txn.get(key, db=self._dbs[db])
        if value is not None and self._versioned[db]:
            return value[8:]
        return value

    def get_versioned(self, db: Db, key: bytes) -> tuple[int, bytes] | None:
        """``(born generation, payload)`` of a versioned record."""
        assert self._versioned[db]
        skey = self._skey(db, key)
        stored = self._txn.get(skey, db=self._dbs[db])
        if stored is None:
            return None
        return schema.born_of(stored), self._open(db, skey, stored)[1]

    def get_born(self, db: Db, key: bytes) -> int | None:
        assert self._versioned[db]
        value = self._txn.get(self._skey(db, key), db=self._dbs[db])
        return None if value is None else int(_BORN.unpack_from(value)[0])

    def has_prefix(self, db: Db, prefix: bytes) -> bool:
        assert not self._sealed[db] or len(prefix) <= NAMED.get(db, 8), "a prefix inside a token"
        with self._txn.cursor(db=self._dbs[db]) as cursor:
            return bool(cursor.set_range(prefix)) and bytes(cursor.key()).startswith(prefix)

    def scan(self, db: Db, prefix: bytes = b"", start: bytes | None = None,
             limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, payload)`` for keys with ``prefix``, from ``start`` on, in order.

        Do not put or delete in ``db`` while the iterator is live; collect keys first. On a
        sealed database with names in its keys, records come in token order, and neither
        ``prefix`` nor ``start`` may reach into the name.
        """
        strip = 8 if self._versioned[db] else 0
        sealed = self._sealed[db]
        if sealed and db in NAMED:
            assert start is None and len(prefix) <= NAMED[db], "a scan bound inside a token"
        for count, (key, value) in enumerate(self._scan_stored(db, prefix, start), 1):
            yield self._open(db, key, value) if sealed else (key, value[strip:])
            if limit is not None and count >= limit:
                return

    def count(self, db: Db) -> int:
        return int(self._txn.stat(self._dbs[db])["entries"])

    # --- writes (recorded for the journal) -----------------------------------------------------
    def put(self, db: Db, key: bytes, payload: bytes) -> bool:
        """Store a record. For a versioned one, return True if the old version was moved to
        history (a snapshot still needs it: its references stay with it)."""
        if self._sealed[db]:
            assert self._sealing is not None
            skey = self._sealing.stored_key(db, key)
            born = self._born if self._versioned[db] else b""
            payload = self._sealing.seal(db, skey, key, payload, born)
            key = skey
        if not self._versioned[db]:
            self._write(db, key, payload)
            return False
        preserved = self._retire(db, key) if self.snap_gen_max else False
        self._write(db, key, self._born + payload)
        if self.snap_gen_max:
            self._write(Db.BORN, schema.gen_index_key(self._generation, db, key), b"")
        return preserved

    def delete(self, db: Db, key: bytes) -> int:
        """Remove a record: 0 if there was none, ``DELETED``, or ``PRESERVED`` if the old
        version was moved to history (truthy either way)."""
        key = self._skey(db, key)
        preserved = self._retire(db, key) if self.snap_gen_max and self._versioned[db] else False
        found: bool = self._txn.delete(key, db=self._dbs[db])
        if not found:
            return 0
        self._changes.append((db, key, None))
        return PRESERVED if preserved else DELETED

    def _retire(self, db: Db, key: bytes) -> bool:
        """The live version of ``key`` is about to change: keep it if a snapshot needs it."""
        old = self._txn.get(key, db=self._dbs[db])
        if old is None:
            return False
        born = schema.born_of(old)
        if born <= self.snap_gen_max:
            died = self._generation
            self._write(Db.HISTORY, schema.history_key(db, key, died), bytes(old))
            self._write(Db.DIED, schema.gen_index_key(died, db, key), b"")
            return True                   # its born index entry now describes the history version
        self._drop(Db.BORN, schema.gen_index_key(born, db, key))
        return False

    def _drop(self, db: Db, key: bytes) -> None:
        if self._txn.delete(key, db=self._dbs[db]):
            self._changes.append((db, key, None))

    # --- reads at a generation (snapshots) -----------------------------------------------------
    def get_at(self, db: Db, key: bytes, gen: int) -> bytes | None:
        """The payload of ``key`` as it was at generation ``gen``, or None."""
        assert self._versioned[db]
        key = self._skey(db, key)
        live = self._txn.get(key, db=self._dbs[db])
        if live is not None and schema.born_of(live) <= gen:
            return self._open(db, key, live)[1]
        if not self.has_history:
            return None
        start = schema.history_key(db, key, gen + 1)
        with self._txn.cursor(db=self._dbs[Db.HISTORY]) as cursor:
            if not cursor.set_range(start):
                return None
            hkey, value = cursor.item()
            if bytes(hkey[:-8]) != start[:-8] or schema.born_of(value) > gen:
                return None                # the oldest later version was born after gen
            return self._open(db, key, value)[1]

    def scan_at(self, db: Db, prefix: bytes, gen: int, start: bytes | None = None,
                limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Like ``scan``, as the database was at generation ``gen``: live records born by
        then, merged in key order with the history versions alive then."""
        assert self._versioned[db]
        if self._sealed[db] and db in NAMED:
            assert start is None and len(prefix) <= NAMED[db], "a scan bound inside a token"
        live = ((k, v) for k, v in self._scan_stored(db, prefix, start) if schema.born_of(v) <= gen)
        old = self._history_at(db, prefix, gen, start)
        count = 0
        a, b = next(live, None), next(old, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                item, a = a, next(live, None)
            else:
                item, b = b, next(old, None)
            assert item is not None
            yield self._open(db, item[0], item[1])
            count += 1
            if limit is not None and count >= limit:
                return

    def _scan_stored(self, db: Db, prefix: bytes, start: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        with self._txn.cursor(db=self._dbs[db]) as cursor:
            if not cursor.set_range(start if start is not None else prefix):
                return
            for key, value in cursor:
                if not key.startswith(prefix):
                    return
                yield bytes(key), bytes(value)

    def _history_at(self, db: Db, prefix: bytes, gen: int, start: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """History versions under ``prefix`` alive at ``gen`` (born <= gen < died), by key."""
        if not self.has_history:
            return
        head = bytes((db,))
        with self._txn.cursor(db=self._dbs[Db.HISTORY]) as cursor:
            if not cursor.set_range(head + (start if start is not None else prefix)):
                return
            current: bytes | None = None
            for hkey, value in cursor:
                if not hkey.startswith(head + prefix):
                    return
                key, died = bytes(hkey[1:-8]), schema.decode_history_key(bytes(hkey))[2]
                if key == current or died <= gen:
                    continue               # an older version, or one dead by then
                current = key              # the first version dying after gen: alive at gen?
                if schema.born_of(value) <= gen:
                    yield key, bytes(value)

    @property
    def has_history(self) -> bool:
        return self.count(Db.HISTORY) > 0

    def _write(self, db: int, key: bytes, value: bytes) -> None:
        try:
            self._txn.put(key, value, db=self._dbs[db])
        except lmdb.MapFullError as exc:
            raise NoSpace("the metadata store is full (LMDB map size reached)") from exc
        self._changes.append((db, key, value))

    def put_unjournaled(self, db: Db, key: bytes, payload: bytes) -> None:
        """Write without recording: only for what a checkpoint itself stores (applied LSN)."""
        assert not self._versioned[db]
        self._txn.put(key, payload, db=self._dbs[db])

    def take_changes(self) -> list[Change]:
        """Hand the changes recorded since the last call to the journal writer."""
        changes, self._changes = self._changes, []
        return changes

    def has_changes(self) -> bool:
        return bool(self._changes)

    def apply(self, changes: list[Change]) -> None:
        """Replay journaled changes (recovery). Not recorded again."""
        for db, key, value in changes:
            if not 0 <= db < len(self._dbs):
                raise FormatError(f"journal record names unknown metadata database {db}")
            if value is None:
                self._txn.delete(key, db=self._dbs[db])
            else:
                self._txn.put(key, value, db=self._dbs[db])

    # --- durability ----------------------------------------------------------------------------
    def commit(self) -> None:
        """Commit the write transaction with a full sync and open the next one.

        This is the checkpoint's durability point; the caller has made every data frame the
        metadata references durable first.
        """
        assert not self._changes, "changes not yet journaled would be committed"
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            # LMDB aborted the transaction: every change since the last commit is gone from
            # here (the caller has them in its journal) and the caller calls ``restart``. A
            # full disk reads "Input/output error" (LMDB reports a short write as EIO), so
            # the free space tells which it was.
            path = self._reopen[0]
            if self._disk_full():
                raise NoSpace(f"the metadata store {path} could not commit: its disk is full") from exc
            raise IOFailure(f"the metadata store {path} could not commit: {exc}") from exc
        self._txn = self._env.begin(write=True)

    def _disk_full(self) -> bool:
        try:
            st = os.statvfs(self._reopen[0])
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < limits.volume_reserve_bytes

    def restart(self) -> None:
        """Drop the current transaction (or what a failed commit left of it) and begin a new
        one at the last commit. Reopens the environment if LMDB refuses new transactions
        (after a failed write of its meta page it does, until reopened)."""
        self._changes = []
        with contextlib.suppress(lmdb.Error):
            self._txn.abort()
        try:
            self._txn = self._env.begin(write=True)
            return
        except lmdb.Error:
            pass
        self._env.close()
        path, map_size = self._reopen
        # __init__'s settings; create=False: the files are there.
        self._env = lmdb.open(path, subdir=True, create=False, max_dbs=len(Db) + 4, map_size=map_size,
                              sync=True, metasync=True, writemap=False, readahead=False, max_readers=16)
        self._dbs = [self._env.open_db(db.name.lower().encode()) for db in Db]
        self._txn = self._env.begin(write=True)

    def abort(self) -> None:
        """Drop everything since the last commit (read-only opens, crashes in tests)."""
        self._changes = []
        self._txn.abort()
        self._txn = self._env.begin(write=True)

    def close(self, *, commit: bool = False) -> None:
        if commit:
            self.commit()
        self._txn.abort()
        self._env.close()

    def disk_bytes(self) -> int:
        info = self._env.info()
        stat = self._env.stat()
        return int(info["last_pgno"] + 1) * int(stat["psize"])

