"""Sealed objects: the index and lock objects, compressed and encrypted whole under the object key.

::

         0     4  magic ("GBIX" index, "GBLK" lock)
         4     1  format version 1
         5     3  reserved 0
         8     4  n, the length of the sealed payload (a shorter object is "truncated")
        12    12  nonce (random)
        24     n  AES-GCM(object key, zstd(payload)) including the 16-byte tag;
                  AAD = bytes 0..12 | object name (UTF-8)

What this module must not do: any I/O, or return a payload that did not authenticate.
"""

from __future__ import annotations

import os
import struct

import zstandard
from cryptography.exceptions import InvalidTag

from . import limits
from .errors import ObjectCorrupt, ObjectTruncated, UnsupportedRepository
from .keys import Keys
from .layout import TAG_BYTES, VERSION, decompress

_SEALED_HEAD = struct.Struct("<4sB3sI")              # 12 bytes
MAGIC_INDEX = b"GBIX"
MAGIC_LOCK = b"GBLK"


def seal(keys: Keys, magic: bytes, name: str, payload: bytes) -> bytes:
    body = zstandard.ZstdCompressor(level=3).compress(payload)
    head = _SEALED_HEAD.pack(magic, VERSION, bytes(3), len(body) + TAG_BYTES)
    nonce = os.urandom(12)
    return head + nonce + keys.objects.encrypt(nonce, body, head + name.encode())


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
    return decompress(body, name, target, limits.object_max_bytes)
