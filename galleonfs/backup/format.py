"""The backup repository's bytes: every object it writes, drawn byte by byte, and their codecs.

A repository lives under one target (a directory or an S3 prefix) as named objects::

    config                       key slots and the repository id (readable without the key)
    packs/<aa>/<pack id hex>     blobs, packed; <aa> is the first byte of the id (fan-out)
    index/<random hex>           where each blob is: pack, offset, lengths (sealed)
    backups/<backup id>          one manifest per backup (sealed)
    locks/<random hex>           who works on the repository now (sealed)

All integers are little-endian. "Sealed" means AES-256-GCM under a key derived from the
repository's master key; the associated data (AAD) always includes the object's name, so an
object cannot be renamed or swapped unnoticed.

Keys
----
The master key is 32 random bytes made at ``init``. It exists on the target only wrapped, in
key slots of ``config``, by a key-encryption key (KEK): either 32 bytes given by the caller
(kind 1, a key file or a key manager) or scrypt of a passphrase (kind 2). HKDF-SHA256 of the
master key gives the working keys, each with its own label::

    object key   info "galleonfs-backup objects v1"         seals index, manifest, lock objects
    id key       info "galleonfs-backup ids v1"             keyed BLAKE3 of metadata chunks,
                                                            and where chunks are cut
    config key   info "galleonfs-backup config v1"          authenticates ``config``
    pack key     info "galleonfs-backup pack v1" | pack id  seals one pack's blobs and index

A key per pack makes the blob nonce a counter (its offset in the pack), so no nonce is ever
stored or drawn at random for blobs, and 2^32 blobs under one key is not a concern.

config
------
::

    offset  size  field
         0     4  magic "GBRC"
         4     1  format version 1
         5     1  key slot count k (1..8)
         6     2  reserved 0
         8    16  repository id (random)
        24     8  created, unix seconds
        32  92*k  key slots:
                    +0   1  kind (1 key, 2 passphrase)
                    +1   1  scrypt log2(n)   (0 for kind 1)
                    +2   1  scrypt r         (0 for kind 1)
                    +3   1  scrypt p         (0 for kind 1)
                    +4   4  reserved 0
                    +8   8  KEK id: SHA-256(KEK)[:8], tells "wrong key" from "damaged"
                    +16 16  scrypt salt      (0 for kind 1)
                    +32 12  nonce
                    +44 48  AES-GCM(KEK, master key), AAD "galleonfs-backup key slot" | repo id
    32+92k    12  nonce
    44+92k    16  AES-GCM tag under the config key over nothing, AAD = bytes 0..44+92k

Sealed object (index, lock)
---------------------------
::

         0     4  magic ("GBIX" index, "GBLK" lock)
         4     1  format version 1
         5     3  reserved 0
         8     4  n, the length of the sealed payload (a shorter object is "truncated")
        12    12  nonce (random)
        24     n  AES-GCM(object key, zstd(payload)) including the 16-byte tag;
                  AAD = bytes 0..12 | object name (UTF-8)

Pack
----
::

         0     4  magic "GBPK"
         4     1  format version 1
         5     3  reserved 0
         8    16  pack id (random; also the object's name)
        24     .  blobs, back to back, each at the offset its index entry gives:
                    kind 1 (metadata) and 2 (data): AES-GCM(pack key, payload) with its tag;
                      nonce "blob" | offset u64; AAD "GBPK blob" | pack id | blob id |
                      kind u8 | flags u8 | raw length u32; payload = zstd(raw) when flags
                      bit 0 is set (only when that is smaller), else raw
                    kind 3 (already sealed): the caller's bytes as given (an encrypted
                      volume's frame stays the volume's ciphertext end to end); their
                      BLAKE3 is in the entry, which the pack index authenticates
       end-16-s    s  pack index: AES-GCM(pack key, entries) with its tag; nonce "indx" |
                      its offset u64; AAD "GBPK index" | pack id | entry count u32
       end-16     4  s, the pack index's length
       end-12     4  entry count
       end-8      4  reserved 0
       end-4      4  magic "GBPE"

Index entry (48 bytes, +32 for kind 3), the same in a pack's tail and in index objects::

         0    32  blob id
        32     1  kind (1 metadata, 2 data, 3 already sealed)
        33     1  flags (bit 0: zstd)
        34     2  reserved 0
        36     4  offset in the pack
        40     4  stored length (for kinds 1, 2 including the 16-byte tag)
        44     4  raw length (what the blob reads back as)
        48    32  BLAKE3 of the stored bytes (kind 3 only)

Index object payload (sealed, "GBIX")::

         0     4  pack count
         4     .  per pack: pack id (16) | pack object size u64 | entry count u32 | entries

Table chunk (the plaintext of a metadata blob, kind 1; its id is keyed BLAKE3 under the id
key, so equal chunks in two backups are stored once)::

         0     1  format version 1
         1     4  record count
         5     .  records in strictly increasing key order:
                    +0  2  key length | +2 4 value length | +6 2 reference count
                    +8  .  key | value | references (32 bytes each: blob ids)

Manifest (``backups/<backup id>``)::

         0     4  magic "GBMF"
         4     1  format version 1
         5     3  reserved 0
         8     4  h, the sealed header's length
        12     4  b, the sealed body's length
        16     h  sealed header: nonce (12) | AES-GCM(object key, JSON) with tag;
                  AAD = bytes 0..16 | name | "\\0header"
      16+h     b  sealed body: nonce (12) | AES-GCM(object key, zstd(chunk list)) with tag;
                  AAD = bytes 0..16 | name | "\\0body"

The header is JSON (a dict): format, backup, volume {name, id}, generation, time (ISO 8601
UTC), time_ns, parent (a backup id or null), meta (caller's string pairs), stats (counters),
table {chunks, records, refs}. Listing reads only the first 16 KiB of each manifest. The
chunk list (plaintext)::

         0     4  chunk count
         4     .  per chunk: first key length u16 | first key | blob id (32) |
                  record count u32 | raw bytes u32 | reference count u32

What this module must not do: any I/O, or hold a plaintext key anywhere but in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import InvalidArgument
from . import limits
from .errors import ObjectCorrupt, ObjectTruncated, RepositoryKeyRejected, UnsupportedRepository

VERSION = 1
KIND_META = 1
KIND_DATA = 2
KIND_SEALED = 3
KINDS = (KIND_META, KIND_DATA, KIND_SEALED)
FLAG_ZSTD = 0x01
ID_BYTES = 32
PACK_ID_BYTES = 16
TAG_BYTES = 16

CONFIG_NAME = "config"
PACKS = "packs/"
INDEX = "index/"
BACKUPS = "backups/"
LOCKS = "locks/"

_CONFIG_HEAD = struct.Struct("<4sBBH16sQ")          # 32 bytes
_SLOT = struct.Struct("<BBBB4s8s16s12s48s")          # 92 bytes
_SEALED_HEAD = struct.Struct("<4sB3sI")              # 12 bytes
_PACK_HEAD = struct.Struct("<4sB3s16s")              # 24 bytes
_PACK_TRAILER = struct.Struct("<III4s")              # 16 bytes
_ENTRY = struct.Struct("<32sBBHIII")                 # 48 bytes
_RECORD = struct.Struct("<HIH")                      # 8 bytes
_CHUNK_REF = struct.Struct("<32sIII")                # after the first key
_MANIFEST_HEAD = struct.Struct("<4sB3sII")           # 16 bytes
_U32 = struct.Struct("<I")
_INDEX_PACK = struct.Struct("<16sQI")

PACK_HEADER_BYTES = _PACK_HEAD.size
PACK_TRAILER_BYTES = _PACK_TRAILER.size
ENTRY_BYTES = _ENTRY.size
MAGIC_CONFIG = b"GBRC"
MAGIC_INDEX = b"GBIX"
MAGIC_LOCK = b"GBLK"
MAGIC_PACK = b"GBPK"
MAGIC_PACK_END = b"GBPE"
MAGIC_MANIFEST = b"GBMF"
_SLOT_AAD = b"galleonfs-backup key slot"
KEY_KIND_KEY = 1
KEY_KIND_PASSPHRASE = 2


# --- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryKey:
    """What opens a repository: 32 key bytes (a key file, a KMS) or a passphrase.

    ``repr`` never shows the secret.
    """

    kind: int
    secret: bytes = field(repr=False)

    @classmethod
    def from_key(cls, key: bytes) -> RepositoryKey:
        if len(key) != 32:
            raise InvalidArgument(f"a backup repository key is 32 bytes, not {len(key)}")
        return cls(KEY_KIND_KEY, bytes(key))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> RepositoryKey:
        if not passphrase or len(passphrase) > limits.passphrase_max_chars:
            raise InvalidArgument(
                f"a backup passphrase must have 1 to {limits.passphrase_max_chars} characters")
        return cls(KEY_KIND_PASSPHRASE, passphrase.encode())

    @property
    def description(self) -> str:
        return "passphrase" if self.kind == KEY_KIND_PASSPHRASE else "key"

    def kek(self, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
        if self.kind == KEY_KIND_KEY:
            return self.secret
        return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(self.secret)


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class Keys:
    """The working keys derived from a repository's master key (see the module docstring)."""

    def __init__(self, master: bytes) -> None:
        assert len(master) == 32
        self._master = master
        self.objects = AESGCM(_hkdf(master, b"galleonfs-backup objects v1"))
        self.id_key = _hkdf(master, b"galleonfs-backup ids v1")
        self.config = AESGCM(_hkdf(master, b"galleonfs-backup config v1"))

    @property
    def master(self) -> bytes:
        return self._master

    def pack(self, pack_id: bytes) -> AESGCM:
        return AESGCM(_hkdf(self._master, b"galleonfs-backup pack v1" + pack_id))

    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """The repository's own keyed id of a blob (metadata chunks)."""
        return blake3.blake3(data, key=self.id_key).digest()

    def key_hash32(self, data: bytes) -> int:
        """A keyed 32-bit hash: where table chunks are cut, unguessable without the key."""
        return int.from_bytes(blake3.blake3(data, key=self.id_key).digest(4), "little")


@dataclass(frozen=True, slots=True)
class Config:
    repo_id: bytes
    created_s: int
    slots: tuple[bytes, ...]


def _seal_slot(key: RepositoryKey, master: bytes, repo_id: bytes) -> bytes:
    if key.kind == KEY_KIND_PASSPHRASE:
        salt, log2_n, r, p = os.urandom(16), limits.scrypt_log2_n, limits.scrypt_r, limits.scrypt_p
    else:
        salt, log2_n, r, p = bytes(16), 0, 0, 0
    kek = key.kek(salt, log2_n, r, p)
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, master, _SLOT_AAD + repo_id)
    return _SLOT.pack(key.kind, log2_n, r, p, bytes(4), hashlib.sha256(kek).digest()[:8],
                      salt, nonce, wrapped)


def new_config(key: RepositoryKey) -> tuple[bytes, Keys]:
    """A fresh repository's ``config`` object and its keys."""
    master, repo_id = os.urandom(32), os.urandom(16)
    slot = _seal_slot(key, master, repo_id)
    head = _CONFIG_HEAD.pack(MAGIC_CONFIG, VERSION, 1, 0, repo_id, int(datetime.now(UTC).timestamp()))
    return _finish_config(head + slot, Keys(master)), Keys(master)


def _finish_config(body: bytes, keys: Keys) -> bytes:
    nonce = os.urandom(12)
    return body + nonce + keys.config.encrypt(nonce, b"", body)


def _parse_config(data: bytes, target: str) -> Config:
    def bad(reason: str) -> ObjectCorrupt:
        return ObjectCorrupt(name=CONFIG_NAME, target=target, reason=reason)

    if len(data) < _CONFIG_HEAD.size + 28:
        raise ObjectTruncated(name=CONFIG_NAME, target=target, reason=f"{len(data)} bytes")
    magic, version, count, _, repo_id, created = _CONFIG_HEAD.unpack_from(data)
    if magic != MAGIC_CONFIG:
        raise bad("it is not a GalleonFS backup repository config (bad magic)")
    if version != VERSION:
        raise UnsupportedRepository(name=CONFIG_NAME, target=target, version=version)
    end = _CONFIG_HEAD.size + count * _SLOT.size
    if not 1 <= count <= limits.key_slots_max or len(data) != end + 28:
        raise bad(f"{count} key slots do not match its length of {len(data)} bytes")
    slots = tuple(data[_CONFIG_HEAD.size + i * _SLOT.size:][:_SLOT.size] for i in range(count))
    return Config(repo_id, created, slots)


def _check_config(data: bytes, keys: Keys, target: str) -> None:
    end = len(data) - 28
    try:
        keys.config.decrypt(data[end:end + 12], data[end + 12:], data[:end])
    except InvalidTag:
        raise ObjectCorrupt(name=CONFIG_NAME, target=target,
                            reason="its authentication tag does not match (altered)") from None


def open_config(data: bytes, key: RepositoryKey, target: str) -> tuple[Config, Keys]:
    """Check ``config`` and unwrap the master key with ``key``."""
    config = _parse_config(data, target)
    keys = Keys(_unwrap(config.slots, key, config.repo_id, target))
    _check_config(data, keys, target)
    return config, keys


def reread_config(data: bytes, keys: Keys, target: str) -> Config:
    """``config`` as stored now, checked with keys already unwrapped."""
    config = _parse_config(data, target)
    _check_config(data, keys, target)
    return config


def slot_opens(slot: bytes, key: RepositoryKey) -> bool:
    kind, log2_n, r, p, _, kek_id, salt, _nonce, _wrapped = _SLOT.unpack(slot)
    if kind != key.kind or (kind == KEY_KIND_PASSPHRASE and not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 4)):
        return False
    return hashlib.sha256(key.kek(salt, log2_n, r, p)).digest()[:8] == bytes(kek_id)


def config_with_slots(config: Config, keys: Keys, slots: Sequence[bytes]) -> bytes:
    """``config`` rewritten with other key slots (adding or removing a key)."""
    assert 1 <= len(slots) <= limits.key_slots_max
    head = _CONFIG_HEAD.pack(MAGIC_CONFIG, VERSION, len(slots), 0, config.repo_id, config.created_s)
    return _finish_config(head + b"".join(slots), keys)


def new_slot(key: RepositoryKey, keys: Keys, repo_id: bytes) -> bytes:
    return _seal_slot(key, keys.master, repo_id)


def _unwrap(slots: Sequence[bytes], key: RepositoryKey, repo_id: bytes, target: str) -> bytes:
    for slot in slots:
        kind, log2_n, r, p, _, kek_id, salt, nonce, wrapped = _SLOT.unpack(slot)
        if kind != key.kind:
            continue
        if kind == KEY_KIND_PASSPHRASE and not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 4):
            raise ObjectCorrupt(name=CONFIG_NAME, target=target,
                                reason=f"scrypt parameters n=2**{log2_n} r={r} p={p} are out of range")
        kek = key.kek(salt, log2_n, r, p)
        if hashlib.sha256(kek).digest()[:8] != kek_id:
            continue
        try:
            return AESGCM(kek).decrypt(nonce, wrapped, _SLOT_AAD + repo_id)
        except InvalidTag:
            raise ObjectCorrupt(name=CONFIG_NAME, target=target,
                                reason="a key slot matches the key but does not decrypt (altered)") from None
    raise RepositoryKeyRejected(kind=key.description, target=target)


# --- sealed objects --------------------------------------------------------------------------


def seal(keys: Keys, magic: bytes, name: str, payload: bytes) -> bytes:
    body = zstandard.ZstdCompressor(level=3).compress(payload)
    head = _SEALED_HEAD.pack(magic, VERSION, bytes(3), len(body) + TAG_BYTES)
    nonce = os.urandom(12)
    return head + nonce + keys.objects.encrypt(nonce, body, head + name.encode())


def _decompress(data: bytes, name: str, target: str, max_bytes: int) -> bytes:
    try:
        out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=max_bytes)
    except zstandard.ZstdError as exc:
        raise ObjectCorrupt(name=name, target=target, reason=f"it does not decompress ({exc})") from None
    return out


def unseal(keys: Keys, magic: bytes, name: str, data: bytes, target: str) -> bytes:
    if len(data) < _SEALED_HEAD.size + 12 + TAG_BYTES:
        raise ObjectTruncated(name=name, target=target, reason=f"only {len(data)} bytes")
    got, version, _, sealed_len = _SEALED_HEAD.unpack_from(data)
    if got != magic:
        raise ObjectCorrupt(name=name, target=target, reason=f"bad magic {got!r}, expected {magic!r}")
    if version != VERSION:
        raise UnsupportedRepository(name=name, target=target, version=version)
    end = _SEALED_HEAD.size + 12 + sealed_len
    if len(data) < end:
        raise ObjectTruncated(name=name, target=target, reason=f"{len(data)} of its {end} bytes")
    if len(data) > end:
        raise ObjectCorrupt(name=name, target=target, reason=f"{len(data) - end} bytes follow its end")
    head = data[:_SEALED_HEAD.size]
    try:
        body = keys.objects.decrypt(data[12:24], data[24:], head + name.encode())
    except InvalidTag:
        raise ObjectCorrupt(name=name, target=target,
                            reason="its authentication tag does not match (altered, truncated or renamed)") from None
    return _decompress(body, name, target, limits.object_max_bytes)


# --- index entries and packs -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one blob is inside its pack."""

    blob_id: bytes
    kind: int
    flags: int
    offset: int
    stored_len: int
    raw_len: int
    digest: bytes = b""       # BLAKE3 of the stored bytes, kind 3 only

    def encode(self) -> bytes:
        head = _ENTRY.pack(self.blob_id, self.kind, self.flags, 0, self.offset,
                           self.stored_len, self.raw_len)
        return head + self.digest


def decode_entries(data: bytes | memoryview, pos: int, count: int, limit: int,
                   name: str, target: str) -> tuple[list[Entry], int]:
    """``count`` entries from ``pos``; each must lie inside a pack's blob area ``[24, limit)``."""
    out = []
    for _ in range(count):
        if pos + ENTRY_BYTES > len(data):
            raise ObjectCorrupt(name=name, target=target, reason="its index entries are cut short")
        blob_id, kind, flags, _, offset, stored, raw = _ENTRY.unpack_from(data, pos)
        pos += ENTRY_BYTES
        digest = b""
        if kind == KIND_SEALED:
            digest = bytes(data[pos:pos + 32])
            pos += 32
            if len(digest) != 32:
                raise ObjectCorrupt(name=name, target=target, reason="its index entries are cut short")
        sealed_min = 0 if kind == KIND_SEALED else TAG_BYTES
        if (kind not in KINDS or flags & ~FLAG_ZSTD or (kind == KIND_SEALED and flags)
                or offset < PACK_HEADER_BYTES or offset + stored > limit or stored < sealed_min
                or raw > limits.blob_max_bytes):
            raise ObjectCorrupt(name=name, target=target,
                                reason=f"index entry for blob {bytes(blob_id).hex()} is out of range")
        out.append(Entry(bytes(blob_id), kind, flags, offset, stored, raw, digest))
    return out, pos


def pack_name(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"{PACKS}{h[:2]}/{h}"


def pack_id_of(name: str) -> bytes | None:
    """The pack id a ``packs/..`` name stands for, or None for a name that is not a pack."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] + "/" != PACKS:
        return None
    try:
        pack_id = bytes.fromhex(parts[2])
    except ValueError:
        return None
    if len(pack_id) != PACK_ID_BYTES or parts[1] != parts[2][:2]:
        return None
    return pack_id


def _blob_nonce(offset: int) -> bytes:
    return b"blob" + offset.to_bytes(8, "little")


def _blob_aad(pack_id: bytes, blob_id: bytes, kind: int, flags: int, raw_len: int) -> bytes:
    return b"GBPK blob" + pack_id + blob_id + bytes((kind, flags)) + _U32.pack(raw_len)


class PackBuilder:
    """Collects blobs into one pack; ``finish`` returns the pack object's bytes.

    Used by one thread at a time (its zstd compressor is not shareable).
    """

    def __init__(self, keys: Keys, compressor: zstandard.ZstdCompressor) -> None:
        self.pack_id = os.urandom(PACK_ID_BYTES)
        self._cipher = keys.pack(self.pack_id)
        self._zstd = compressor
        self._buf = bytearray(_PACK_HEAD.pack(MAGIC_PACK, VERSION, bytes(3), self.pack_id))
        self.entries: list[Entry] = []
        self.raw_bytes = 0

    @property
    def size(self) -> int:
        return len(self._buf)

    def add(self, blob_id: bytes, kind: int, data: bytes | bytearray | memoryview) -> Entry:
        assert kind in KINDS and len(blob_id) == ID_BYTES and len(data) <= limits.blob_max_bytes
        offset = len(self._buf)
        if kind == KIND_SEALED:
            stored: bytes | bytearray | memoryview = data
            entry = Entry(blob_id, kind, 0, offset, len(data), len(data), blake3.blake3(data).digest())
        else:
            flags, payload = 0, data
            if len(data) >= 64:
                packed = self._zstd.compress(data)
                if len(packed) < len(data):
                    flags, payload = FLAG_ZSTD, packed
            stored = self._cipher.encrypt(_blob_nonce(offset), bytes(payload),
                                          _blob_aad(self.pack_id, blob_id, kind, flags, len(data)))
            entry = Entry(blob_id, kind, flags, offset, len(stored), len(data))
        self._buf += stored
        self.entries.append(entry)
        self.raw_bytes += len(data)
        return entry

    def finish(self) -> bytes:
        index = b"".join(e.encode() for e in self.entries)
        offset = len(self._buf)
        count = len(self.entries)
        sealed = self._cipher.encrypt(b"indx" + offset.to_bytes(8, "little"), index,
                                      b"GBPK index" + self.pack_id + _U32.pack(count))
        self._buf += sealed
        self._buf += _PACK_TRAILER.pack(len(sealed), count, 0, MAGIC_PACK_END)
        return bytes(self._buf)


def pack_tail_length(tail: bytes, pack_size: int, name: str, target: str) -> int:
    """How many bytes from the end hold the pack index and trailer (from the trailer)."""
    if pack_size < PACK_HEADER_BYTES + PACK_TRAILER_BYTES or len(tail) < PACK_TRAILER_BYTES:
        raise ObjectTruncated(name=name, target=target, reason=f"{pack_size} bytes is no complete pack")
    sealed_len, _count, _, magic = _PACK_TRAILER.unpack_from(tail, len(tail) - PACK_TRAILER_BYTES)
    if magic != MAGIC_PACK_END:
        raise ObjectTruncated(name=name, target=target, reason="its trailer is missing (cut short or altered)")
    need = int(sealed_len) + PACK_TRAILER_BYTES
    if need > pack_size - PACK_HEADER_BYTES:
        raise ObjectCorrupt(name=name, target=target, reason=f"its index claims {sealed_len} bytes")
    return need


def open_pack_tail(keys: Keys, pack_id: bytes, tail: bytes, pack_size: int,
                   name: str, target: str) -> list[Entry]:
    """The entries of a pack from its last bytes (at least ``pack_tail_length``)."""
    need = pack_tail_length(tail, pack_size, name, target)
    assert len(tail) >= need
    _sealed_len, count, _, _ = _PACK_TRAILER.unpack_from(tail, len(tail) - PACK_TRAILER_BYTES)
    offset = pack_size - need
    sealed = tail[len(tail) - need:len(tail) - PACK_TRAILER_BYTES]
    try:
        plain = keys.pack(pack_id).decrypt(b"indx" + offset.to_bytes(8, "little"), sealed,
                                           b"GBPK index" + pack_id + _U32.pack(count))
    except InvalidTag:
        raise ObjectCorrupt(name=name, target=target,
                            reason="its index's authentication tag does not match (altered or cut)") from None
    entries, end = decode_entries(plain, 0, count, offset, name, target)
    if end != len(plain):
        raise ObjectCorrupt(name=name, target=target, reason="its index has trailing bytes")
    return entries


def check_pack_header(head: bytes, pack_id: bytes, name: str, target: str) -> None:
    if len(head) < PACK_HEADER_BYTES:
        raise ObjectTruncated(name=name, target=target, reason="its header is cut short")
    magic, version, _, got = _PACK_HEAD.unpack_from(head)
    if magic != MAGIC_PACK:
        raise ObjectCorrupt(name=name, target=target, reason="bad magic (not a pack)")
    if version != VERSION:
        raise UnsupportedRepository(name=name, target=target, version=version)
    if got != pack_id:
        raise ObjectCorrupt(name=name, target=target, reason="its header names another pack")


def open_blob(keys: Keys | AESGCM, pack_id: bytes, entry: Entry, stored: bytes | memoryview,
              name: str, target: str) -> bytes:
    """Check and decode one stored blob; raise naming the pack and the blob when it is bad."""
    what = f"blob {entry.blob_id.hex()}"
    if len(stored) != entry.stored_len:
        raise ObjectTruncated(name=name, target=target,
                              reason=f"{what} has {len(stored)} of its {entry.stored_len} bytes")
    if entry.kind == KIND_SEALED:
        if blake3.blake3(stored).digest() != entry.digest:
            raise ObjectCorrupt(name=name, target=target, reason=f"{what} does not match its hash")
        return bytes(stored)
    cipher = keys.pack(pack_id) if isinstance(keys, Keys) else keys
    try:
        payload = cipher.decrypt(_blob_nonce(entry.offset), bytes(stored),
                                 _blob_aad(pack_id, entry.blob_id, entry.kind, entry.flags, entry.raw_len))
    except InvalidTag:
        raise ObjectCorrupt(name=name, target=target,
                            reason=f"{what} fails authentication (altered or moved)") from None
    if entry.flags & FLAG_ZSTD:
        payload = _decompress(payload, name, target, entry.raw_len)
    if len(payload) != entry.raw_len:
        raise ObjectCorrupt(name=name, target=target,
                            reason=f"{what} decodes to {len(payload)} bytes, not {entry.raw_len}")
    return payload


# --- index objects ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackInfo:
    pack_id: bytes
    size: int
    entries: tuple[Entry, ...]


def encode_index(packs: Iterable[PackInfo]) -> bytes:
    packs = list(packs)
    out = [_U32.pack(len(packs))]
    for p in packs:
        out.append(_INDEX_PACK.pack(p.pack_id, p.size, len(p.entries)))
        out.extend(e.encode() for e in p.entries)
    return b"".join(out)


def decode_index(data: bytes, name: str, target: str) -> list[PackInfo]:
    def bad(reason: str) -> ObjectCorrupt:
        return ObjectCorrupt(name=name, target=target, reason=reason)

    if len(data) < 4:
        raise bad("its payload is cut short")
    (count,), pos, out = _U32.unpack_from(data), 4, []
    for _ in range(count):
        if pos + _INDEX_PACK.size > len(data):
            raise bad("its pack list is cut short")
        pack_id, size, n = _INDEX_PACK.unpack_from(data, pos)
        pos += _INDEX_PACK.size
        limit = size - PACK_TRAILER_BYTES
        entries, pos = decode_entries(data, pos, n, limit, name, target)
        out.append(PackInfo(pack_id, size, tuple(entries)))
    if pos != len(data):
        raise bad("it has trailing bytes")
    return out


# --- table chunks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a backup's table: an opaque key and value, and the blobs it references."""

    key: bytes
    value: bytes
    refs: tuple[bytes, ...] = ()

    @property
    def encoded_size(self) -> int:
        return _RECORD.size + len(self.key) + len(self.value) + ID_BYTES * len(self.refs)


def check_record(record: Record) -> None:
    """Bad input from the volume side is refused with one sentence (it is a bug there)."""
    if not 1 <= len(record.key) <= limits.record_key_max_bytes:
        raise InvalidArgument(f"a backup record key has 1 to {limits.record_key_max_bytes} bytes, "
                              f"not {len(record.key)}")
    if len(record.value) > limits.record_value_max_bytes:
        raise InvalidArgument(f"a backup record value has at most {limits.record_value_max_bytes} "
                              f"bytes, not {len(record.value)}")
    if len(record.refs) > limits.record_refs_max or any(len(r) != ID_BYTES for r in record.refs):
        raise InvalidArgument(f"a backup record references at most {limits.record_refs_max} "
                              f"blobs by {ID_BYTES}-byte ids")


def encode_chunk(records: Sequence[Record]) -> bytes:
    out = [bytes((VERSION,)), _U32.pack(len(records))]
    for r in records:
        out.append(_RECORD.pack(len(r.key), len(r.value), len(r.refs)))
        out.append(r.key)
        out.append(r.value)
        out.extend(r.refs)
    return b"".join(out)


def decode_chunk(data: bytes, name: str, target: str) -> list[Record]:
    def bad(reason: str) -> ObjectCorrupt:
        return ObjectCorrupt(name=name, target=target, reason=reason)

    if len(data) < 5 or data[0] != VERSION:
        raise bad("a table chunk has a bad header")
    (count,), pos = _U32.unpack_from(data, 1), 5
    out: list[Record] = []
    last = b""
    for _ in range(count):
        if pos + _RECORD.size > len(data):
            raise bad("a table chunk is cut short")
        klen, vlen, nrefs = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        end = pos + klen + vlen + ID_BYTES * nrefs
        if end > len(data) or klen == 0:
            raise bad("a table chunk record runs past its end")
        key = data[pos:pos + klen]
        value = data[pos + klen:pos + klen + vlen]
        base = pos + klen + vlen
        refs = tuple(data[base + i * ID_BYTES:base + (i + 1) * ID_BYTES] for i in range(nrefs))
        if out and key <= last:
            raise bad("a table chunk's keys are out of order")
        out.append(Record(key, value, refs))
        last, pos = key, end
    if pos != len(data):
        raise bad("a table chunk has trailing bytes")
    return out


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a backup's table, as the manifest lists it."""

    first_key: bytes
    blob_id: bytes
    records: int
    raw_bytes: int
    refs: int


def encode_chunk_list(chunks: Sequence[ChunkRef]) -> bytes:
    out = [_U32.pack(len(chunks))]
    for c in chunks:
        out.append(struct.pack("<H", len(c.first_key)) + c.first_key)
        out.append(_CHUNK_REF.pack(c.blob_id, c.records, c.raw_bytes, c.refs))
    return b"".join(out)


def decode_chunk_list(data: bytes, name: str, target: str) -> list[ChunkRef]:
    def bad(reason: str) -> ObjectCorrupt:
        return ObjectCorrupt(name=name, target=target, reason=reason)

    if len(data) < 4:
        raise bad("its chunk list is cut short")
    (count,), pos = _U32.unpack_from(data), 4
    out: list[ChunkRef] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise bad("its chunk list is cut short")
        (klen,) = struct.unpack_from("<H", data, pos)
        pos += 2
        key = data[pos:pos + klen]
        pos += klen
        if pos + _CHUNK_REF.size > len(data) or len(key) != klen or klen == 0:
            raise bad("its chunk list is cut short")
        blob_id, records, raw, refs = _CHUNK_REF.unpack_from(data, pos)
        pos += _CHUNK_REF.size
        if out and key <= out[-1].first_key:
            raise bad("its chunk list is out of order")
        out.append(ChunkRef(key, blob_id, records, raw, refs))
    if pos != len(data):
        raise bad("its chunk list has trailing bytes")
    return out


# --- manifests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupInfo:
    """A backup as its manifest header describes it (what ``list`` returns)."""

    backup_id: str
    volume_name: str
    volume_id: str
    generation: int
    time: datetime
    parent: str | None
    meta: dict[str, str]
    stats: dict[str, int]
    chunks: int
    records: int
    refs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": VERSION, "backup": self.backup_id,
            "volume": {"name": self.volume_name, "id": self.volume_id},
            "generation": self.generation, "time": self.time.isoformat(),
            "time_ns": _time_ns(self.time),
            "parent": self.parent, "meta": self.meta, "stats": self.stats,
            "table": {"chunks": self.chunks, "records": self.records, "refs": self.refs},
        }


def _time_ns(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _info_from_json(doc: Any, name: str, target: str) -> BackupInfo:
    def bad(reason: str) -> ObjectCorrupt:
        return ObjectCorrupt(name=name, target=target, reason=reason)

    try:
        if not isinstance(doc, dict) or doc.get("format") != VERSION:
            raise UnsupportedRepository(name=name, target=target,
                                        version=doc.get("format") if isinstance(doc, dict) else "?")
        vol, table = doc["volume"], doc["table"]
        meta, stats = doc["meta"], doc["stats"]
        parent = doc["parent"]
        ns = doc["time_ns"]
        ok = (isinstance(vol["name"], str) and isinstance(vol["id"], str)
              and isinstance(doc["generation"], int) and isinstance(ns, int)
              and (parent is None or isinstance(parent, str)) and isinstance(doc["backup"], str)
              and isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
              and isinstance(stats, dict) and all(isinstance(v, int) for v in stats.values())
              and all(isinstance(table[k], int) for k in ("chunks", "records", "refs")))
        if not ok:
            raise bad("its header has fields of the wrong type")
        time = datetime.fromtimestamp(ns // 10**9, UTC).replace(microsecond=(ns % 10**9) // 1000)
        return BackupInfo(doc["backup"], vol["name"], vol["id"], doc["generation"], time, parent,
                          dict(meta), dict(stats), table["chunks"], table["records"], table["refs"])
    except (KeyError, TypeError) as exc:
        raise bad(f"its header lacks {exc}") from None


def encode_manifest(keys: Keys, name: str, info: BackupInfo, chunks: Sequence[ChunkRef]) -> bytes:
    header = json.dumps(info.to_json(), sort_keys=True).encode()
    body = zstandard.ZstdCompressor(level=3).compress(encode_chunk_list(chunks))
    n1, n2 = os.urandom(12), os.urandom(12)
    sealed_len = 12 + len(header) + TAG_BYTES
    head = _MANIFEST_HEAD.pack(MAGIC_MANIFEST, VERSION, bytes(3), sealed_len, 12 + len(body) + TAG_BYTES)
    h = n1 + keys.objects.encrypt(n1, header, head + name.encode() + b"\0header")
    b = n2 + keys.objects.encrypt(n2, body, head + name.encode() + b"\0body")
    return head + h + b


def manifest_header_length(prefix: bytes, name: str, target: str) -> int:
    """Bytes from the start of a manifest up to the end of its sealed header."""
    if len(prefix) < _MANIFEST_HEAD.size:
        raise ObjectTruncated(name=name, target=target, reason=f"only {len(prefix)} bytes")
    magic, version, _, sealed_len, _body_len = _MANIFEST_HEAD.unpack_from(prefix)
    if magic != MAGIC_MANIFEST:
        raise ObjectCorrupt(name=name, target=target, reason="bad magic (not a manifest)")
    if version != VERSION:
        raise UnsupportedRepository(name=name, target=target, version=version)
    if not 12 + TAG_BYTES <= sealed_len <= limits.manifest_header_max_bytes:
        raise ObjectCorrupt(name=name, target=target, reason=f"its header claims {sealed_len} bytes")
    return _MANIFEST_HEAD.size + int(sealed_len)


def open_manifest_header(keys: Keys, name: str, prefix: bytes, target: str) -> BackupInfo:
    end = manifest_header_length(prefix, name, target)
    if len(prefix) < end:
        raise ObjectTruncated(name=name, target=target, reason="its header is cut short")
    head = prefix[:_MANIFEST_HEAD.size]
    try:
        plain = keys.objects.decrypt(prefix[16:28], prefix[28:end], head + name.encode() + b"\0header")
    except InvalidTag:
        raise ObjectCorrupt(name=name, target=target,
                            reason="its header fails authentication (altered or renamed)") from None
    try:
        doc = json.loads(plain)
    except ValueError:
        raise ObjectCorrupt(name=name, target=target, reason="its header is not JSON") from None
    info = _info_from_json(doc, name, target)
    if BACKUPS + info.backup_id != name:
        raise ObjectCorrupt(name=name, target=target, reason=f"it describes backup {info.backup_id}")
    return info


def open_manifest_body(keys: Keys, name: str, data: bytes, target: str) -> list[ChunkRef]:
    end = manifest_header_length(data, name, target)
    head = data[:_MANIFEST_HEAD.size]
    body_len = _MANIFEST_HEAD.unpack_from(data)[4]
    if len(data) < end + body_len:
        raise ObjectTruncated(name=name, target=target, reason=f"{len(data)} of its {end + body_len} bytes")
    if len(data) > end + body_len or body_len < 12 + TAG_BYTES:
        raise ObjectCorrupt(name=name, target=target, reason="its length does not match its header")
    try:
        body = keys.objects.decrypt(data[end:end + 12], data[end + 12:], head + name.encode() + b"\0body")
    except InvalidTag:
        raise ObjectCorrupt(name=name, target=target,
                            reason="its body fails authentication (altered or cut short)") from None
    return decode_chunk_list(_decompress(body, name, target, limits.object_max_bytes), name, target)
