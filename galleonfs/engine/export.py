"""Export a snapshot's records and blocks to spool files, and load them into a new volume.

This is the engine's side of an off-node backup (issue 13). A backup is the snapshot's tree
at the level of metadata records: every record of the versioned databases (inodes,
directory entries and their index, xattrs, symlink targets, extents) as it was at the
snapshot's generation, and the plaintext of the blocks the extents name. That is the copy
a clone makes (``clones._copy_tree``), written to a file instead of another volume, so a
restore is a volume equal to the snapshot: contents, modes, owners, times, xattrs,
symlinks, hard links, holes (no extent: nothing stored).

* ``export_records``: the snapshot's records, or with ``since`` (an older snapshot) only
  those that changed between the two generations (the generation diff: cost proportional
  to the change); a record gone since is exported with value ``None``.
* ``export_blocks``: the plaintext of the blocks whose ids a file lists.
* ``load``: a records file and a blocks file into an empty, unmounted volume.

Spool files are written by the daemon's helper (or a mount worker) under a directory the
daemon made from ids; each is a sequence of frames ``u32 length | msgpack``, a frame being a
list of ``[key, value or nil, [block ids]]`` (records; the key is ``db byte | record key``)
or of ``[block id, bytes]`` (blocks).

What it must not do: change the source volume, or load into a volume that has files.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from ..errors import FailedPrecondition, FormatError, InvalidArgument
from ..ids import ROOT_INODE, BlockId
from ..meta import schema
from ..meta.schema import Db, Inode
from . import snapshots
from .engine import Engine

DBS = (Db.INODES, Db.DIRENTS, Db.DIRINDEX, Db.XATTRS, Db.LINKS, Db.EXTENTS)
FRAME_RECORDS = 4096            # records per frame: ~1 MB of msgpack at most
FRAME_BLOCKS = 64               # blocks per frame: 4 MiB at the default 64 KiB block size
LOAD_CHUNK = 8192               # records per journal record while loading
# Blocks stored per ``store_blocks`` call: their frames go out in one vectored write, whose
# iovec count the kernel bounds (IOV_MAX 1024; two per frame); 256 is 16 MiB at 64 KiB.
STORE_BATCH = 256
_LEN = struct.Struct("<I")
_FRAME_BYTES_MAX = 256 << 20

Row = tuple[bytes, bytes | None, tuple[bytes, ...]]


def write_frames(out: IO[bytes], rows: Iterator[Any], per_frame: int) -> int:
    """``rows`` into ``out``, ``per_frame`` to a frame; return how many rows."""
    batch: list[Any] = []
    count = 0
    for row in rows:
        batch.append(row)
        count += 1
        if len(batch) >= per_frame:
            _frame(out, batch)
            batch = []
    if batch:
        _frame(out, batch)
    return count


def _frame(out: IO[bytes], batch: list[Any]) -> None:
    data = msgspec.msgpack.encode(batch)
    out.write(_LEN.pack(len(data)))
    out.write(data)


def read_frames(path: str) -> Iterator[list[Any]]:
    with open(path, "rb") as f:
        while True:
            head = f.read(_LEN.size)
            if not head:
                return
            if len(head) < _LEN.size:
                raise FormatError(f"spool file {path} is cut short")
            (n,) = _LEN.unpack(head)
            if n > _FRAME_BYTES_MAX:
                raise FormatError(f"spool file {path} has a frame of {n} bytes")
            data = f.read(n)
            if len(data) < n:
                raise FormatError(f"spool file {path} is cut short")
            batch = msgspec.msgpack.decode(data)
            if not isinstance(batch, list):
                raise FormatError(f"spool file {path} has a bad frame")
            yield batch


def _refs(db: Db, payload: bytes) -> tuple[bytes, ...]:
    return (payload,) if db == Db.EXTENTS else ()


def _all_rows(engine: Engine, gen: int) -> Iterator[Row]:
    for db in DBS:
        for key, payload in engine.meta.scan_at(db, b"", gen):
            yield bytes((db,)) + key, payload, _refs(db, payload)


def _changed_rows(engine: Engine, since: int, gen: int) -> Iterator[Row]:
    meta = engine.meta
    for db, skey in sorted(snapshots.changed_keys(meta, since, gen, set(DBS))):
        key = meta.original_key(Db(db), skey)
        if key is None:
            continue                         # born and dead after ``gen``: not in either
        payload = meta.get_at(Db(db), key, gen)
        before = meta.get_at(Db(db), key, since)
        if payload == before:
            continue                         # changed and changed back, or only after ``gen``
        yield bytes((db,)) + key, payload, _refs(Db(db), payload) if payload is not None else ()


def export_records(engine: Engine, snapshot: str, since: str | None, path: str) -> tuple[int, int, int]:
    """The records of ``snapshot`` (or its changes since snapshot ``since``) into ``path``.
    Returns (generation, records, used bytes of the snapshot)."""
    snap = snapshots.get(engine, snapshot)
    if since is not None:
        base = snapshots.get(engine, since)
        if base.gen >= snap.gen:
            raise InvalidArgument(f"snapshot {since} is not older than snapshot {snapshot}")
        rows = _changed_rows(engine, base.gen, snap.gen)
    else:
        rows = _all_rows(engine, snap.gen)
    with open(path, "wb") as out:
        count = write_frames(out, ([k, v, list(r)] for k, v, r in rows), FRAME_RECORDS)
    return snap.gen, count, snap.used_bytes


def export_blocks(engine: Engine, snapshot: str, ids_path: str, out_path: str) -> tuple[int, int]:
    """The plaintext of the blocks ``ids_path`` lists (frames of ids) into ``out_path``.
    The snapshot holds a reference to each, so none can be gone. Returns (blocks, bytes)."""
    snapshots.get(engine, snapshot)        # it must still exist: it keeps the blocks alive
    count = size = 0
    with open(out_path, "wb") as out:
        for batch in read_frames(ids_path):
            ids = [BlockId(bytes(b)) for b in batch]
            for start in range(0, len(ids), FRAME_BLOCKS):
                part = ids[start:start + FRAME_BLOCKS]
                for bid in part:
                    if engine.block_info(bid) is None:
                        raise FailedPrecondition(f"block {bid.hex()[:16]} of snapshot {snapshot} is missing "
                                                 "from its volume; run `galleonfs check`")
                data = engine.read_blocks(part)
                _frame(out, [[b, d] for b, d in zip(part, data, strict=True)])
                count += len(part)
                size += sum(len(d) for d in data)
    return count, size


def load(engine: Engine, records_path: str, blocks_path: str, known_path: str, *,
         first: bool) -> list[tuple[bytes, bytes]]:
    """Put the records of ``records_path`` into ``engine``, storing the blocks their extents
    name from ``blocks_path``. Blocks get this volume's own ids (its family key hashes them;
    fsck checks that), so an extent's block id is mapped: ``known_path`` lists ``[backup id,
    volume id]`` of blocks earlier calls stored. ``first``: the volume must be empty (only
    its root). Returns the mapping of the blocks this call stored."""
    if first and engine.sb.inode_count > 1:
        raise FailedPrecondition("a backup is restored into a new, empty volume only")
    blocks: dict[bytes, bytes] = {}
    for batch in read_frames(blocks_path):
        for bid, data in batch:
            blocks[bytes(bid)] = bytes(data)
    mapped: dict[bytes, BlockId] = {}
    for batch in read_frames(known_path):
        for old, new in batch:
            mapped[bytes(old)] = BlockId(bytes(new))
    stored: list[tuple[bytes, bytes]] = []
    unused: set[bytes] = set()            # stored by this call: their first reference is taken
    loaded = 0
    with engine.operation() as op:
        frames = list(read_frames(records_path))
        # Every new block of the window in one store (one write of their frames).
        wanted = list(dict.fromkeys(bytes(v) for batch in frames for k, v, _u in batch
                                    if bytes(k)[:1] == bytes((Db.EXTENTS,)) and v is not None
                                    and bytes(v) not in mapped and bytes(v) in blocks))
        for start in range(0, len(wanted), STORE_BATCH):
            part = wanted[start:start + STORE_BATCH]
            for old, new in zip(part, engine.store_blocks([blocks[b] for b in part]), strict=True):
                mapped[old] = new
                stored.append((old, new))
                unused.add(old)
        for batch in frames:
            for key, value, _unused in batch:
                key = bytes(key)
                if value is None or not key or key[0] not in DBS:
                    raise FormatError("a restore record has no value or an unknown database")
                db, rkey, payload = Db(key[0]), key[1:], bytes(value)
                if db == Db.EXTENTS:
                    payload = _extent(engine, payload, mapped, unused)
                elif db == Db.INODES:
                    ino = schema.ino_of_key(rkey)
                    if engine.meta.get(Db.INODES, rkey) is None and ino != ROOT_INODE:
                        engine.sb.inode_count += 1
                    engine.sb.next_inode = max(engine.sb.next_inode, ino + 1)
                    if Inode.decode(ino, payload).nlink == 0:
                        engine.meta.put(Db.ORPHANS, rkey, b"")     # open at the snapshot
                engine.meta.put(db, rkey, payload)
                loaded += 1
                if loaded % LOAD_CHUNK == 0:
                    op.record()
    return stored


def _extent(engine: Engine, old: bytes, mapped: dict[bytes, BlockId], unused: set[bytes]) -> bytes:
    """One extent's block id in this volume: the reference ``store_blocks`` added for a block
    this call stored, else one reference more to a block an earlier call stored."""
    new = mapped.get(old)
    if new is None:
        raise FormatError(f"block {old.hex()[:16]} of a restored file was not sent")
    if old in unused:
        unused.discard(old)
        return new
    if engine.block_info(new) is None:
        raise FormatError(f"block {old.hex()[:16]} of a restored file was mapped to a block that is gone")
    engine.ref_block(new)
    return new
