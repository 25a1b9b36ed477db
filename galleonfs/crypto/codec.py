"""Sealing what a volume stores: block payloads, metadata values, names, journal records.

``VolumeCrypto`` holds a volume family's data keys (by epoch: a rekey adds a new one and
retires the old once everything is rewritten) and derives, with HKDF-SHA256, one subkey per
purpose, so no two purposes ever share a nonce space:

* ``block``: AES-256-GCM of each frame's payload. The associated data binds the volume
  family, the block id, the flags and the plaintext length, so a frame moved to another
  block's place, or another volume, fails authentication (DESIGN §3);
* ``meta``: AES-256-GCM of each metadata value, bound to its database and key;
* ``journal``: AES-256-GCM of each journal record body, bound to its header (v2: LSN,
  epoch, volume tag, lengths; v1 records: the LSN alone);
* names: keyed BLAKE3 tokens that replace names inside metadata keys (lookups by name
  still work; the name itself is sealed in the value). Their key is fixed for the family's
  life (``volume_key``), not rotated by a rekey.

Nonces are 96 random bits per message, as NIST SP 800-38D allows up to 2**32 messages per
key; ``VolumeCrypto.sealed`` counts them so a volume can be rekeyed long before.

``BlockCodec`` combines compression (zstd or lz4, per block, kept only when it shrinks the
block) with encryption, and fills the frame header's flags and nonce. The flag bits that say
how a payload was transformed are defined here, since this is what sets and reads them; the
frame layout that carries them is ``engine/frames.py``'s.

What it must not do: any I/O, decide policy (the storage class decides), or import the
engine (it sits below it: DESIGN §5).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Protocol

import blake3
import lz4.block
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import Corrupt, InvalidArgument

# How a frame's payload was made from the block (bits of the frame header's flags byte).
FLAG_ZSTD = 0x01
FLAG_LZ4 = 0x02
FLAG_AES_GCM = 0x04
ZERO_NONCE = bytes(12)          # the nonce field of a frame that is not encrypted

NONCE = 12
TAG = 16
RECORD_SEAL_OVERHEAD = 1 + NONCE + TAG    # key epoch | nonce | ... | tag
_BLOCK_AAD = struct.Struct("<32sBI")
_U64 = struct.Struct("<Q")
COMPRESSIONS = ("none", "lz4", "zstd")
ZSTD_LEVEL = 3          # 4.5 GB/s on random 64 KiB blocks here, ~ as fast as lz4 on text


def _subkey(data_key: bytes, family: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=family,
                info=b"galleonfs " + purpose).derive(data_key)


class SealedHeader(Protocol):
    """What opening a payload needs from its frame header (``frames.FrameHeader``)."""

    @property
    def flags(self) -> int: ...
    @property
    def key_epoch(self) -> int: ...
    @property
    def raw_len(self) -> int: ...
    @property
    def block_id(self) -> bytes: ...
    @property
    def nonce(self) -> bytes: ...


@dataclass
class _Keys:
    block: AESGCM
    meta: AESGCM
    journal: AESGCM


class VolumeCrypto:
    """The data keys of one volume family, by epoch; ``epoch`` seals, every epoch opens."""

    def __init__(self, family_id: bytes, keys: dict[int, bytes], epoch: int, *, names_key: bytes) -> None:
        assert epoch in keys and len(family_id) >= 16 and len(names_key) == 32
        self.family_id = family_id
        self.epoch = epoch
        self._keys = {e: self._derive(k) for e, k in keys.items()}
        self._names = _subkey(names_key, family_id, b"names")
        self.sealed = 0

    def _derive(self, data_key: bytes) -> _Keys:
        assert len(data_key) == 32
        f = self.family_id
        return _Keys(AESGCM(_subkey(data_key, f, b"block")), AESGCM(_subkey(data_key, f, b"meta")),
                     AESGCM(_subkey(data_key, f, b"journal")))

    @property
    def epochs(self) -> list[int]:
        return sorted(self._keys)

    def add_epoch(self, epoch: int, data_key: bytes) -> None:
        """Seal with a new data key from now on (a rekey); older epochs still open."""
        assert epoch > max(self._keys)
        self._keys[epoch] = self._derive(data_key)
        self.epoch = epoch

    def drop_epochs_before(self, epoch: int) -> None:
        """Forget the data keys a finished rekey replaced."""
        assert epoch == self.epoch
        self._keys = {e: k for e, k in self._keys.items() if e >= epoch}

    def _epoch(self, epoch: int, what: str) -> _Keys:
        keys = self._keys.get(epoch)
        if keys is None:
            raise Corrupt(f"{what} is sealed with key epoch {epoch}, which this volume does not have")
        return keys

    # --- names -----------------------------------------------------------------------------------
    def token(self, scope: bytes, name: bytes) -> bytes:
        """A name's stand-in inside a metadata key: equal names give equal tokens."""
        return blake3.blake3(scope + b"\0" + name, key=self._names).digest(16)

    # --- metadata values -------------------------------------------------------------------------
    def seal_value(self, aad: bytes, plaintext: bytes) -> bytes:
        """``epoch u8 | nonce | ciphertext+tag``."""
        nonce = os.urandom(NONCE)
        self.sealed += 1
        return bytes((self.epoch,)) + nonce + self._keys[self.epoch].meta.encrypt(nonce, plaintext, aad)

    def open_value(self, aad: bytes, sealed: bytes, what: str) -> bytes:
        if len(sealed) < 1 + NONCE + TAG:
            raise Corrupt(f"{what}: sealed value too short")
        keys = self._epoch(sealed[0], what)
        try:
            return keys.meta.decrypt(sealed[1:1 + NONCE], sealed[1 + NONCE:], aad)
        except InvalidTag:
            raise Corrupt(f"{what}: fails authentication (altered, or moved from elsewhere)") from None

    # --- journal records -------------------------------------------------------------------------
    def seal_record(self, lsn: int, body: bytes, aad: bytes | None = None) -> bytes:
        """Seal a journal record body. ``aad`` binds it (a v2 record's header, which holds the
        LSN, the volume tag and the epoch); without it, the LSN alone (v1 records)."""
        nonce = os.urandom(NONCE)
        self.sealed += 1
        bound = _U64.pack(lsn) if aad is None else aad
        return bytes((self.epoch,)) + nonce + self._keys[self.epoch].journal.encrypt(nonce, body, bound)

    def open_record(self, lsn: int, sealed: bytes, aad: bytes | None = None) -> bytes | None:
        """The body, or None if it does not authenticate (replay treats it as a torn tail)."""
        if len(sealed) < RECORD_SEAL_OVERHEAD or sealed[0] not in self._keys:
            return None
        bound = _U64.pack(lsn) if aad is None else aad
        try:
            return self._keys[sealed[0]].journal.decrypt(sealed[1:1 + NONCE], sealed[1 + NONCE:], bound)
        except InvalidTag:
            return None

    # --- block payloads --------------------------------------------------------------------------
    def seal_block(self, block_id: bytes, flags: int, raw_len: int, payload: bytes) -> tuple[bytes, bytes, int]:
        """Return ``(nonce, ciphertext, key epoch)``."""
        nonce = os.urandom(NONCE)
        self.sealed += 1
        aad = self.family_id + _BLOCK_AAD.pack(block_id, flags, raw_len)
        return nonce, self._keys[self.epoch].block.encrypt(nonce, payload, aad), self.epoch

    def open_block(self, header: SealedHeader, payload: bytes | memoryview, where: str) -> bytes:
        keys = self._epoch(header.key_epoch, where)
        aad = self.family_id + _BLOCK_AAD.pack(header.block_id, header.flags, header.raw_len)
        try:
            return keys.block.decrypt(header.nonce, bytes(payload), aad)
        except InvalidTag:
            raise Corrupt(f"{where}: fails authentication (altered, or moved from elsewhere)") from None


class BlockCodec:
    """From a block's plaintext to a frame's payload and back: compress, then encrypt."""

    def __init__(self, compression: str = "none", crypto: VolumeCrypto | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise InvalidArgument(f"unknown compression {compression!r}; use none, lz4 or zstd")
        self.compression = compression
        self.crypto = crypto
        self._zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL) if compression == "zstd" else None
        self._zd = zstandard.ZstdDecompressor()

    @property
    def plain(self) -> bool:
        return self.compression == "none" and self.crypto is None

    def pack(self, block_id: bytes, data: bytes | bytearray | memoryview,
             extra_flags: int = 0) -> tuple[int, bytes | bytearray | memoryview, bytes, int]:
        """Return ``(flags, payload, nonce, key epoch)`` for a frame holding ``data``.

        ``extra_flags`` (a salted id) are set before sealing, so the tag covers them too.
        """
        flags, payload = extra_flags, data
        if self.compression == "lz4":
            packed = lz4.block.compress(bytes(data), store_size=False)
            if len(packed) < len(data):
                flags, payload = flags | FLAG_LZ4, packed
        elif self.compression == "zstd":
            assert self._zc is not None
            packed = self._zc.compress(bytes(data))
            if len(packed) < len(data):
                flags, payload = flags | FLAG_ZSTD, packed
        if self.crypto is None:
            return flags, payload, ZERO_NONCE, 0
        flags |= FLAG_AES_GCM
        nonce, sealed, epoch = self.crypto.seal_block(block_id, flags, len(data), bytes(payload))
        return flags, sealed, nonce, epoch

    def unpack(self, header: SealedHeader, payload: memoryview, where: str) -> bytes:
        """The block's plaintext; raises ``Corrupt`` for anything that does not check out."""
        data: bytes | memoryview = payload
        if header.flags & FLAG_AES_GCM:
            if self.crypto is None:
                raise Corrupt(f"{where}: the block is encrypted, but this volume has no key")
            data = self.crypto.open_block(header, payload, where)
        try:
            if header.flags & FLAG_LZ4:
                data = lz4.block.decompress(bytes(data), uncompressed_size=header.raw_len)
            elif header.flags & FLAG_ZSTD:
                data = self._zd.decompress(bytes(data), max_output_size=header.raw_len)
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as exc:
            raise Corrupt(f"{where}: does not decompress ({exc})") from None
        if len(data) != header.raw_len:
            raise Corrupt(f"{where}: decodes to {len(data)} bytes, not {header.raw_len}")
        return bytes(data)
