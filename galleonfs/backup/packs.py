"""Packs: blobs stored back to back in one object, sealed under the pack's own key, with
their index in the pack's tail (so a pack describes itself when every index object is lost).

Pack (``packs/<aa>/<pack id hex>``)::

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

What this module must not do: any I/O, or return a blob that did not authenticate.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import limits
from .errors import ObjectCorrupt, ObjectTruncated, UnsupportedRepository
from .keys import Keys
from .layout import ID_BYTES, PACKS, TAG_BYTES, VERSION, decompress

KIND_META = 1
KIND_DATA = 2
KIND_SEALED = 3
KINDS = (KIND_META, KIND_DATA, KIND_SEALED)
FLAG_ZSTD = 0x01
PACK_ID_BYTES = 16

_PACK_HEAD = struct.Struct("<4sB3s16s")              # 24 bytes
_PACK_TRAILER = struct.Struct("<III4s")              # 16 bytes
_ENTRY = struct.Struct("<32sBBHIII")                 # 48 bytes
_U32 = struct.Struct("<I")

PACK_HEADER_BYTES = _PACK_HEAD.size
PACK_TRAILER_BYTES = _PACK_TRAILER.size
ENTRY_BYTES = _ENTRY.size
MAGIC_PACK = b"GBPK"
MAGIC_PACK_END = b"GBPE"


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
        payload = decompress(payload, name, target, entry.raw_len)
    if len(payload) != entry.raw_len:
        raise ObjectCorrupt(name=name, target=target,
                            reason=f"{what} decodes to {len(payload)} bytes, not {entry.raw_len}")
    return payload
