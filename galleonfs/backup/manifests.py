"""Manifests: one per backup, naming the chunks of its table; and the table chunks themselves.

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

What this module must not do: any I/O, or return a header or body that did not authenticate.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import zstandard
from cryptography.exceptions import InvalidTag

from ..errors import InvalidArgument
from . import limits
from .errors import ObjectCorrupt, ObjectTruncated, UnsupportedRepository
from .keys import Keys
from .layout import BACKUPS, ID_BYTES, TAG_BYTES, VERSION, decompress

_RECORD = struct.Struct("<HIH")                      # 8 bytes
_CHUNK_REF = struct.Struct("<32sIII")                # after the first key
_MANIFEST_HEAD = struct.Struct("<4sB3sII")           # 16 bytes
_U32 = struct.Struct("<I")
MAGIC_MANIFEST = b"GBMF"


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
    return decode_chunk_list(decompress(body, name, target, limits.object_max_bytes), name, target)
