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

What it must not do: hold a key of its own (``VolumeCrypto`` does), or see a transaction.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..errors import Corrupt
from .schema import Db

if TYPE_CHECKING:
    from ..crypto.codec import VolumeCrypto

# Databases whose keys end in a name, by the length of the fixed part before it.
NAMED: dict[int, int] = {Db.DIRENTS: 8, Db.XATTRS: 8, Db.LINKS: 16, Db.SNAPSHOTS: 0}
# Databases whose values are sealed: the named ones, inodes (symlink targets), dirindex (names).
SEALED = frozenset({*NAMED, Db.INODES, Db.DIRINDEX})
TOKEN = 16

_LEN = struct.Struct("<H")


class MetaSealing:
    def __init__(self, crypto: VolumeCrypto) -> None:
        self.crypto = crypto

    def stored_key(self, db: int, key: bytes) -> bytes:
        fixed = NAMED.get(db)
        if fixed is None:
            return key
        return key[:fixed] + self.crypto.token(bytes((db,)), key[fixed:])

    def seal(self, db: int, skey: bytes, key: bytes, payload: bytes, born: bytes = b"") -> bytes:
        fixed = NAMED.get(db)
        if fixed is not None:
            name = key[fixed:]
            payload = _LEN.pack(len(name)) + name + payload
        return self.crypto.seal_value(bytes((db,)) + born + skey, payload)

    def open(self, db: int, skey: bytes, sealed: bytes, born: bytes = b"") -> tuple[bytes, bytes]:
        """``(original key, payload)`` of a stored record."""
        what = f"metadata record in {Db(db).name.lower()}"
        plain = self.crypto.open_value(bytes((db,)) + born + skey, bytes(sealed), what)
        fixed = NAMED.get(db)
        if fixed is None:
            return skey, plain
        (size,) = _LEN.unpack_from(plain)
        name = plain[2:2 + size]
        if len(name) != size:
            raise Corrupt(f"{what}: sealed name is cut short")
        return skey[:fixed] + name, plain[2 + size:]
