"""The metadata schema: named databases, key codecs and record codecs.

Keys are big-endian so that LMDB's byte order is numeric order (a directory's entries
sort by cookie, a file's extents by block number). Values are little-endian structs.

Databases (one LMDB sub-database each)::

    super      name            -> value           volume identity, counters, format version;
                                                  ``origin`` -> Origin (JSON) in a clone
    inodes     ino u64         -> Inode            versioned
    dirents    parent u64|name -> Dirent           versioned: lookup by name
    dirindex   parent u64|cookie u64 -> DirIndex   versioned: readdir in stable cookie order
    xattrs     ino u64|name    -> value            versioned
    extents    ino u64|blk u64 -> block id (32)    versioned: a missing key is a hole
    blocks     block id (32)   -> BlockLoc         block index with refcounts (not versioned)
    segments   seg u32         -> SegmentStats     bytes written and still live per segment
    orphans    ino u64         -> b""              unlinked inodes still open or looked up
    links      ino u64|parent u64|name -> b""      versioned: the names of an inode (paths in diffs)
    snapshots  name            -> Snapshot (JSON)  snapshots of this volume
    history    db u8|key|died u64 -> stored value  versions that snapshots still need
    died       died u64|db u8|key -> b""           history by the generation a version died in
    born       born u64|db u8|key -> b""           versions by the generation they were born in

"Versioned" records start with the generation they were written in (8 bytes, DESIGN §3:
the hook snapshots are built on); ``MetaStore`` adds and strips that prefix. While a
volume has snapshots, the first change to a record born at or before the newest snapshot
moves the old version to ``history``; ``died`` and ``born`` make the changes between two
generations findable without reading the whole volume (snapshot delete, diff, restore).

History keys end in the 8-byte big-endian died generation after a variable-length key.
That keeps them in the order of the keys themselves because a variable part is always a
name, names never contain a NUL byte, and a generation's first byte is 0 (below 2**56).
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 4        # 2: links, snapshots, history, generation indexes; 3: codec fields;
                          # 4: journal records v2 (engine/journal.py)
FORMAT_VERSION_OLDEST = 3  # opened too: its journal is read, the next record written upgrades it


class Db(enum.IntEnum):
    SUPER = 0
    INODES = 1
    DIRENTS = 2
    DIRINDEX = 3
    XATTRS = 4
    EXTENTS = 5
    BLOCKS = 6
    SEGMENTS = 7
    ORPHANS = 8
    LINKS = 9
    SNAPSHOTS = 10
    HISTORY = 11
    DIED = 12
    BORN = 13


VERSIONED = frozenset({Db.INODES, Db.DIRENTS, Db.DIRINDEX, Db.XATTRS, Db.EXTENTS, Db.LINKS})

# --- keys ------------------------------------------------------------------------------------
_U64 = struct.Struct(">Q")
_U64U64 = struct.Struct(">QQ")
_U32 = struct.Struct(">I")
_U64_LE = struct.Struct("<Q")


def ino_key(ino: int) -> bytes:
    return _U64.pack(ino)


def ino_of_key(key: bytes) -> int:
    return int(_U64.unpack_from(key)[0])


def dirent_key(parent: int, name: bytes) -> bytes:
    return _U64.pack(parent) + name


def dirindex_key(parent: int, cookie: int) -> bytes:
    return _U64U64.pack(parent, cookie)


def cookie_of_dirindex_key(key: bytes) -> int:
    return int(_U64U64.unpack_from(key)[1])


def xattr_key(ino: int, name: bytes) -> bytes:
    return _U64.pack(ino) + name


def extent_key(ino: int, blkno: int) -> bytes:
    return _U64U64.pack(ino, blkno)


def blkno_of_extent_key(key: bytes) -> int:
    return int(_U64U64.unpack_from(key)[1])


def link_key(ino: int, parent: int, name: bytes) -> bytes:
    return _U64U64.pack(ino, parent) + name


def decode_link_key(key: bytes) -> tuple[int, int, bytes]:
    """Return ``(ino, parent, name)``."""
    ino, parent = _U64U64.unpack_from(key)
    return int(ino), int(parent), bytes(key[16:])


def history_key(db: int, key: bytes, died: int) -> bytes:
    return bytes((db,)) + key + _U64.pack(died)


def decode_history_key(hkey: bytes) -> tuple[int, bytes, int]:
    """Return ``(db, key, died)``."""
    return hkey[0], bytes(hkey[1:-8]), int(_U64.unpack_from(hkey, len(hkey) - 8)[0])


def gen_index_key(gen: int, db: int, key: bytes) -> bytes:
    """Key of the ``born`` and ``died`` indexes."""
    return _U64.pack(gen) + bytes((db,)) + key


def decode_gen_index_key(ikey: bytes) -> tuple[int, int, bytes]:
    """Return ``(gen, db, key)``."""
    return int(_U64.unpack_from(ikey)[0]), ikey[8], bytes(ikey[9:])


def gen_prefix(gen: int) -> bytes:
    return _U64.pack(gen)


def born_of(stored: bytes) -> int:
    """The born generation of a stored versioned value."""
    return int(_U64_LE.unpack_from(stored)[0])


def segment_key(seg: int) -> bytes:
    return _U32.pack(seg)


def seg_of_key(key: bytes) -> int:
    return int(_U32.unpack_from(key)[0])


# --- records ---------------------------------------------------------------------------------
_INODE = struct.Struct("<IIIIQQqqqqQQQ")


@dataclass(slots=True)
class Inode:
    """One inode. ``aux`` is the next readdir cookie for a directory, unused otherwise;
    ``parent`` is a directory's parent (a directory has exactly one), 0 for other types.

    ``alloc`` counts the bytes of stored blocks the file references (``st_blocks``);
    ``target`` is the symlink target (empty for other types).
    """

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    alloc: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    btime_ns: int
    rdev: int
    aux: int
    parent: int
    target: bytes = b""

    def encode(self) -> bytes:
        return _INODE.pack(
            self.mode, self.uid, self.gid, self.nlink, self.size, self.alloc, self.atime_ns,
            self.mtime_ns, self.ctime_ns, self.btime_ns, self.rdev, self.aux, self.parent,
        ) + self.target

    @classmethod
    def decode(cls, ino: int, data: bytes) -> Inode:
        (mode, uid, gid, nlink, size, alloc, atime_ns, mtime_ns, ctime_ns, btime_ns, rdev, aux,
         parent) = _INODE.unpack_from(data)
        return cls(ino, mode, uid, gid, nlink, size, alloc, atime_ns, mtime_ns, ctime_ns, btime_ns,
                   rdev, aux, parent, bytes(data[_INODE.size:]))


_DIRENT = struct.Struct("<QQ")


def encode_dirent(child: int, cookie: int) -> bytes:
    return _DIRENT.pack(child, cookie)


def decode_dirent(data: bytes) -> tuple[int, int]:
    """Return ``(child inode, cookie)``."""
    child, cookie = _DIRENT.unpack_from(data)
    return int(child), int(cookie)


def encode_dirindex(child: int, name: bytes) -> bytes:
    return _U64.pack(child) + name


def decode_dirindex(data: bytes) -> tuple[int, bytes]:
    """Return ``(child inode, name)``."""
    return int(_U64.unpack_from(data)[0]), bytes(data[8:])


_BLOCKLOC = struct.Struct("<IQIII")
EXTERNAL = 0x8000_0000     # BlockLoc.seg flag: the frame is in the origin volume's segment (clones)


@dataclass(slots=True)
class BlockLoc:
    """Where a block's frame lives and how many references it has."""

    seg: int
    offset: int
    frame_len: int
    raw_len: int
    refs: int

    def encode(self) -> bytes:
        return _BLOCKLOC.pack(self.seg, self.offset, self.frame_len, self.raw_len, self.refs)

    @classmethod
    def decode(cls, data: bytes) -> BlockLoc:
        return cls(*_BLOCKLOC.unpack_from(data))


_SEGSTATS = struct.Struct("<QQ")


def encode_segstats(written: int, live: int) -> bytes:
    return _SEGSTATS.pack(written, live)


def decode_segstats(data: bytes) -> tuple[int, int]:
    """Return ``(bytes written, bytes still live)``."""
    written, live = _SEGSTATS.unpack_from(data)
    return int(written), int(live)


# --- the super database: named integer and byte fields ---------------------------------------
_SUPER_INT = struct.Struct("<q")

SUPER_INT_FIELDS = (
    b"format_version", b"size", b"block_size", b"generation", b"applied_lsn", b"next_inode",
    b"next_segment", b"used_bytes", b"inode_count", b"created_ns",
    b"next_slot",        # snapshot slots (FUSE inode numbers of snapshot views), never reused
    b"restoring_to",     # generation a restore is rolling back to (0: none); resumed at open
    b"dedup",            # 1: equal blocks are stored once; 0: every write gets its own frames
)
# family_key: the block-id key of an unencrypted volume (an encrypted one keeps it wrapped
# in its KEY file); compression: none, lz4 or zstd.
SUPER_BYTES_FIELDS = (b"volume_id", b"name", b"family_key", b"compression")


def encode_super_int(value: int) -> bytes:
    return _SUPER_INT.pack(value)


def decode_super_int(data: bytes) -> int:
    return int(_SUPER_INT.unpack(data)[0])


# --- the origin of a clone (super field ``origin``) -------------------------------------------
SUPER_ORIGIN_FIELD = b"origin"


@dataclass(frozen=True)
class Origin:
    """Where a clone's shared blocks live: its origin volume, at which snapshot."""

    volume_id: str
    volume_dir: str
    snapshot: str
    snapshot_id: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Origin:
        return cls(**json.loads(data))


# --- snapshots (JSON, keyed by name) ----------------------------------------------------------
SNAPSHOT_READY = "ready"
SNAPSHOT_DELETING = "deleting"


@dataclass
class Snapshot:
    """One snapshot of a volume: a name for generation ``gen`` (``engine/snapshots.py``)."""

    name: str
    id: str
    gen: int
    created_ns: int
    used_bytes: int          # the volume's used bytes when it was taken (its logical size)
    inodes: int
    slot: int                # its views' FUSE inode numbers: (slot << 40) | inode
    state: str = SNAPSHOT_READY     # or SNAPSHOT_DELETING
    holds: list[str] = field(default_factory=list)   # clones that depend on it
    pin_seg: int = 0         # while held: the origin's segments up to this one are not compacted

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        return cls(**json.loads(data))

    @property
    def ready(self) -> bool:
        return self.state == SNAPSHOT_READY
