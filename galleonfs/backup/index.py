"""The index: which pack holds each blob. Its objects' bytes, and the map built from them.

Index object payload (sealed, "GBIX", see ``sealed``; entries as drawn in ``packs``)::

         0     4  pack count
         4     .  per pack: pack id (16) | pack object size u64 | entry count u32 | entries

``Index`` is that map in memory, merged from every index object read so far: the dedup
oracle of writers and the map of readers (``Repository`` loads and saves it).

What this module must not do: any I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ObjectCorrupt
from .packs import PACK_TRAILER_BYTES, Entry, decode_entries

_U32 = struct.Struct("<I")
_INDEX_PACK = struct.Struct("<16sQI")


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


class Index:
    """Which pack holds each blob, as far as this process knows."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, tuple[bytes, Entry]] = {}
        self.packs: dict[bytes, int] = {}           # pack id -> object size
        self.objects: set[str] = set()              # index objects merged in

    def add(self, info: PackInfo) -> None:
        self.packs[info.pack_id] = info.size
        for e in info.entries:
            self.blobs.setdefault(e.blob_id, (info.pack_id, e))

    def drop_packs(self, gone: set[bytes]) -> None:
        if not gone:
            return
        for pack_id in gone:
            self.packs.pop(pack_id, None)
        self.blobs = {k: v for k, v in self.blobs.items() if v[0] not in gone}
