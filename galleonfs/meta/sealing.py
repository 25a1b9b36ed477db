"""Metadata sealing: how an encrypted volume keeps names and contents out of its LMDB file.

``MetaStore`` calls this at its boundary, so everything above it (the VFS, snapshots,
fsck) sees plain keys and payloads while the file holds only:

* **tokens instead of names.** A key that carries a name (a directory entry, an xattr, a
  link record, a snapshot) is stored as its fixed prefix (the inode numbers) plus a 16-byte
  keyed token of the name (``VolumeCrypto.token``). Lookups by name still work: the same
  name gives the same token. A token is fixed-length, so history keys (``key | died``)
  still sort by key;
* **sealed values.** The value of every record in ``SEALED`` is AES-256-GCM sealed with the
  volume's current metadata key; for a tokenized key the plaintext starts with the real name
  (``u16 length | name``), which is how a scan gives back the original keys. The associated
  data binds the database, the stored key and, for a versioned record, its born generation:
  a value moved to another key, or made to look born at another generation, fails to open.

Extents (inode and block numbers to keyed block ids), the block index, segment counters and
the super record stay plain: they carry sizes and shapes, not names or contents (DESIGN §3
lets sizes and tree shape show; docs/design.md says so).

What it must not do: hold a key of its own (``VolumeCrypto`` does), see a transaction, or
import ``crypto`` (it is handed the cipher, typed by the ``Cipher`` protocol below).
"""

from __future__ import annotations

import struct
from typing import Protocol

from ..errors import Corrupt
from .schema import Db


class Cipher(Protocol):
    """What sealing needs of a volume's keys (``crypto.codec.VolumeCrypto`` is one)."""

    def token(self, scope: bytes, name: bytes) -> bytes: ...
    def seal_value(self, aad: bytes, plaintext: bytes) -> bytes: ...
    def open_value(self, aad: bytes, sealed: bytes, what: str) -> bytes: ...


# Databases whose keys end in a name, by the length of the fixed part before it.
NAMED: dict[int, int] = {Db.DIRENTS: 8, Db.XATTRS: 8, Db.LINKS: 16, Db.SNAPSHOTS: 0}
# Databases whose values are sealed: the named ones, inodes (symlink targets), dirindex (names).
SEALED = frozenset({*NAMED, Db.INODES, Db.DIRINDEX})
TOKEN = 16
# Recently used tokens and opened values, so that the hot path (the same inode read on
# every request, the same name looked up again) does not pay BLAKE3 or AES-GCM each time:
# ~4 us and ~5 us here, against a FUSE request floor of ~76 us. Dropped wholesale when full.
CACHE_ENTRIES = 8192

_LEN = struct.Struct("<H")


class MetaSealing:
    def __init__(self, crypto: Cipher) -> None:
        self.crypto = crypto
        self._tokens: dict[tuple[int, bytes], bytes] = {}
        self._opened: dict[tuple[int, bytes], tuple[bytes, bytes, tuple[bytes, bytes]]] = {}

    def stored_key(self, db: int, key: bytes) -> bytes:
        fixed = NAMED.get(db)
        if fixed is None:
            return key
        skey = self._tokens.get((db, key))
        if skey is None:
            if len(self._tokens) >= CACHE_ENTRIES:
                self._tokens.clear()
            skey = self._tokens[db, key] = key[:fixed] + self.crypto.token(bytes((db,)), key[fixed:])
        return skey

    def seal(self, db: int, skey: bytes, key: bytes, payload: bytes, born: bytes = b"") -> bytes:
        fixed = NAMED.get(db)
        plain = payload if fixed is None else _LEN.pack(len(key) - fixed) + key[fixed:] + payload
        sealed = self.crypto.seal_value(bytes((db,)) + born + skey, plain)
        self._remember(db, skey, sealed, born, (key, payload))
        return sealed

    def open(self, db: int, skey: bytes, sealed: bytes, born: bytes = b"") -> tuple[bytes, bytes]:
        """``(original key, payload)`` of a stored record."""
        sealed = bytes(sealed)
        hit = self._opened.get((db, skey))
        if hit is not None and hit[0] == sealed and hit[1] == born:
            return hit[2]                        # the very bytes opened (or sealed) before
        what = f"metadata record in {Db(db).name.lower()}"
        plain = self.crypto.open_value(bytes((db,)) + born + skey, sealed, what)
        fixed = NAMED.get(db)
        if fixed is None:
            result = (skey, plain)
        else:
            (size,) = _LEN.unpack_from(plain)
            name = plain[2:2 + size]
            if len(name) != size:
                raise Corrupt(f"{what}: sealed name is cut short")
            result = (skey[:fixed] + name, plain[2 + size:])
        self._remember(db, skey, sealed, born, result)
        return result

    def _remember(self, db: int, skey: bytes, sealed: bytes, born: bytes, result: tuple[bytes, bytes]) -> None:
        if len(self._opened) >= CACHE_ENTRIES:
            self._opened.clear()
        self._opened[db, skey] = (sealed, born, result)
