"""``SuperBlock``: a volume's identity and counters as one typed record (the ``super`` db).

Role: the one place that knows how the super fields are stored (``schema.SUPER_INT_FIELDS``
and ``SUPER_BYTES_FIELDS``: one metadata record per field, integers as little-endian i64).
Everything else reads and changes attributes (``sb.used_bytes += n``); ``persist`` writes
the fields that changed since the last call, into the operation's journal record, and
``set_applied`` writes the checkpoint's own field, ``applied_lsn``, which is never journaled
(it says how far the journal was applied, so a record cannot carry it).

What it must not do: decide what a counter means (the engine, the VFS and snapshots do),
or write anything but the ``super`` database.
"""

from __future__ import annotations

import itertools
import operator
import time
from dataclasses import dataclass, field

from ..errors import FormatError
from ..ids import InodeId
from ..meta import schema
from ..meta.schema import Db
from ..meta.store import MetaStore

# The integer fields by attribute name, in the order of ``schema.SUPER_INT_FIELDS``.
_INT_NAMES = tuple(key.decode() for key in schema.SUPER_INT_FIELDS)
# Journaled with the operation that changed them: all but the checkpoint's ``applied_lsn``.
_JOURNALED = tuple(name for name in _INT_NAMES if name != "applied_lsn")
_JOURNALED_KEYS = tuple(name.encode() for name in _JOURNALED)
_INDEXES = range(len(_JOURNALED))
_read_journaled = operator.attrgetter(*_JOURNALED)


@dataclass(slots=True)
class SuperBlock:
    """The super record of one volume. Integer fields first (``schema.SUPER_INT_FIELDS``)."""

    format_version: int
    size: int                   # the volume's quota in bytes (what ``df`` shows)
    block_size: int
    generation: int             # bumped by each snapshot (DESIGN §3)
    applied_lsn: int            # the last journal record the metadata store holds
    next_inode: int
    next_segment: int
    used_bytes: int             # raw bytes of every stored block, counted once
    inode_count: int
    created_ns: int
    next_slot: int              # snapshot slots (FUSE inode numbers of views), never reused
    restoring_to: int           # generation a restore is rolling back to (0: none)
    dedup: int                  # 1: equal blocks are stored once
    volume_id: str = ""
    name: str = ""
    compression: str = "none"
    family_key: bytes = b""     # the block id key of an unencrypted volume (else in KEY)
    # The journaled fields as the store holds them (what ``persist`` compares against).
    _stored: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    # --- reading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, meta: MetaStore, where: str) -> SuperBlock:
        """Read every field; one clear sentence if one is missing or the format is not ours."""
        ints = _read_ints(meta, where)
        version = ints["format_version"]
        if not schema.FORMAT_VERSION_OLDEST <= version <= schema.FORMAT_VERSION:
            raise FormatError(
                f"{where} has on-disk format version {version}; this GalleonFS reads "
                f"versions {schema.FORMAT_VERSION_OLDEST} to {schema.FORMAT_VERSION} only: "
                f"open it with the GalleonFS that wrote it"
            )
        sb = cls(**ints, volume_id=_text(meta, b"volume_id"), name=_text(meta, b"name"),
                 compression=_text(meta, b"compression") or "none",
                 family_key=bytes(meta.get(Db.SUPER, b"family_key") or b""))
        sb.mark_stored()
        return sb

    def reload_counters(self, meta: MetaStore, where: str) -> None:
        """After a replay or a rebuild: the integer fields as the metadata store has them
        now, except ``applied_lsn`` (replay does not move the checkpoint)."""
        for name, value in _read_ints(meta, where).items():
            if name != "applied_lsn":
                setattr(self, name, value)
        self.mark_stored()

    def mark_stored(self) -> None:
        """The attributes are what the store holds: nothing for ``persist`` to write."""
        self._stored = _read_journaled(self)

    # --- counters ------------------------------------------------------------------------------
    def allocate_inode(self) -> InodeId:
        """A new inode number (never reused within the volume), counted."""
        ino = self.next_inode
        self.next_inode = ino + 1
        self.inode_count += 1
        return InodeId(ino)

    def release_inode(self) -> None:
        self.inode_count -= 1

    @property
    def changed(self) -> bool:
        """True if a journaled field differs from what the store holds."""
        return bool(_read_journaled(self) != self._stored)

    # --- writing -------------------------------------------------------------------------------
    def persist(self, meta: MetaStore) -> None:
        """Write the fields changed since the last call (journaled with the operation)."""
        current = _read_journaled(self)
        stored = self._stored
        if current == stored:
            return
        # compress/map/ne pick the changed fields in C: usually one or two of twelve.
        for i in itertools.compress(_INDEXES, map(operator.ne, current, stored)):
            meta.put(Db.SUPER, _JOURNALED_KEYS[i], schema.encode_super_int(current[i]))
        self._stored = current

    def set_applied(self, meta: MetaStore, lsn: int) -> None:
        """The checkpoint's field: written outside any journal record."""
        meta.put_unjournaled(Db.SUPER, b"applied_lsn", schema.encode_super_int(lsn))
        self.applied_lsn = lsn

    def write_all(self, meta: MetaStore) -> None:
        """Every field (mkfs): a new volume's first super record."""
        for name in _INT_NAMES:
            meta.put(Db.SUPER, name.encode(), schema.encode_super_int(int(getattr(self, name))))
        meta.put(Db.SUPER, b"volume_id", self.volume_id.encode())
        meta.put(Db.SUPER, b"name", self.name.encode())
        meta.put(Db.SUPER, b"compression", self.compression.encode())
        meta.put(Db.SUPER, b"family_key", self.family_key)
        self.mark_stored()

    @classmethod
    def new(cls, *, size: int, block_size: int, volume_id: str, name: str, compression: str,
            dedup: bool, family_key: bytes) -> SuperBlock:
        """The super record of an empty volume: the root directory is inode 1."""
        return cls(format_version=schema.FORMAT_VERSION, size=size, block_size=block_size,
                   generation=1, applied_lsn=0, next_inode=2, next_segment=1, used_bytes=0,
                   inode_count=1, created_ns=time.time_ns(), next_slot=1, restoring_to=0,
                   dedup=int(dedup), volume_id=volume_id, name=name, compression=compression,
                   family_key=family_key)


def _read_ints(meta: MetaStore, where: str) -> dict[str, int]:
    ints: dict[str, int] = {}
    for name in _INT_NAMES:
        raw = meta.get(Db.SUPER, name.encode())
        if raw is None:
            raise FormatError(f"{where}: metadata lacks the super field {name}")
        ints[name] = schema.decode_super_int(raw)
    return ints


def _text(meta: MetaStore, key: bytes) -> str:
    return bytes(meta.get(Db.SUPER, key) or b"").decode(errors="replace")
