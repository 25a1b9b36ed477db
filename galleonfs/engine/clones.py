"""Clones: new writable volumes born from a snapshot, sharing its blocks (DESIGN §3).

A clone is a volume of its own (own directory, metadata, journal, worker), in the same
volume family as its origin (same block-id key, so equal content has equal ids). At
creation its metadata is a copy of the snapshot's tree and its block index points into
the origin's data segments: such entries carry ``EXTERNAL`` in their segment number and
are read straight from the origin's segment files (never through the origin's metadata,
which another process may be writing). New writes go to the clone's own segments.

Two rules keep those pointers valid for as long as the clone depends on the origin:

* the snapshot holds the clone (``Snapshot.holds``): it cannot be deleted, so every block
  of its tree keeps a reference in the origin;
* the hold pins the origin's segments that existed at clone time (``Snapshot.pin_seg``):
  the origin's GC leaves them alone, so the frames never move.

``flatten`` copies the shared blocks into the clone's own segments; the origin then
releases the hold. Creation runs where the origin's engine is open: its mount worker if
it is mounted, otherwise an offline helper process of the daemon (volops/helper.py).
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..ids import BlockId
from ..meta import schema
from ..meta.schema import EXTERNAL, SUPER_ORIGIN_FIELD, BlockLoc, Db, Inode, Origin, Snapshot
from ..meta.store import MetaStore
from . import snapshots
from .engine import Engine
from .ops import Operation

ORIGIN_FIELD = SUPER_ORIGIN_FIELD     # where a clone's super record keeps its Origin
_COPY_CHUNK = 8192          # records per journal record while copying a tree
_FLATTEN_CHUNK = 64         # blocks copied per journal record by flatten
_CLONE_OF_SHARED = ("cloning a snapshot of a clone that shares blocks with its own origin is "
                    "not supported; flatten the clone first")


def origin_of(engine: Engine) -> Origin | None:
    raw = engine.meta.get(Db.SUPER, ORIGIN_FIELD)
    return Origin.decode(raw) if raw else None


def create(source: Engine, snapshot: str, target_dir: str, *, clone_id: str = "", name: str = "",
           size: int | None = None) -> str:
    """Make ``target_dir`` a clone of ``source`` at ``snapshot``; return the clone's volume id.

    ``clone_id`` is what the hold on the snapshot records (the daemon's volume id of the
    clone); by default the clone's engine-level id.
    """
    snap = snapshots.get(source, snapshot)
    source.check_writable()
    size = source.size if size is None else size
    if size < snap.used_bytes:
        raise InvalidArgument(f"a clone of {snapshot} needs at least {snap.used_bytes} bytes, not {size}")
    if origin_of(source) is not None and _shares_with_origin(source, snap):
        # Refused before the target exists: a refusal is not a fault, and refused from the
        # middle of the copy it left an operation to undo, which the clone logged as a WARNING.
        raise FailedPrecondition(_CLONE_OF_SHARED)
    source.checkpoint()                 # the snapshot's frames durable, its block index committed
    encrypted = source.crypto is not None
    volume_id = Engine.create(target_dir, size=size, block_size=source.block_size, name=name,
                              family_key=None if encrypted else source.family_key,
                              key_source_dir=source.dir if encrypted else None, keys=source.key_manager,
                              compression=source.codec.compression, dedup=source.dedup)
    try:
        target = Engine.open(target_dir, keys=source.key_manager)
        try:
            with target.operation() as op:
                _copy_tree(source, snap, target, op)
                origin = Origin(source.volume_id, os.path.abspath(source.dir), snap.name, snap.id)
                target.meta.put(Db.SUPER, ORIGIN_FIELD, origin.encode())
            target.checkpoint()
        finally:
            target.close(checkpoint=False)
    except BaseException:
        shutil.rmtree(target_dir, ignore_errors=True)
        raise
    with source.operation():
        snap.holds.append(clone_id or volume_id)
        snap.pin_seg = max(snap.pin_seg, source.segments.next_seg - 1)
        snapshots.save(source, snap)
    source.commit()
    return volume_id


def _copy_tree(source: Engine, snap: Snapshot, target: Engine, op: Operation) -> None:
    """The snapshot's records into the clone, _COPY_CHUNK per record, its blocks shared."""
    refs: dict[BlockId, int] = defaultdict(int)
    inodes = 0
    puts = 0
    for db in (Db.INODES, Db.DIRENTS, Db.DIRINDEX, Db.XATTRS, Db.LINKS, Db.EXTENTS):
        for key, payload in source.meta.scan_at(db, b"", snap.gen):
            target.meta.put(db, key, payload)
            if db == Db.EXTENTS:
                refs[BlockId(payload)] += 1
            elif db == Db.INODES:
                inodes += 1
                if Inode.decode(schema.ino_of_key(key), payload).nlink == 0:
                    target.meta.put(Db.ORPHANS, key, b"")     # open at the snapshot
            puts += 1
            if puts % _COPY_CHUNK == 0:
                op.record()
    target.sb.used_bytes = _share_blocks(source, snap, target, refs)
    target.sb.inode_count = inodes
    target.sb.next_inode = source.sb.next_inode


def _shares_with_origin(source: Engine, snap: Snapshot) -> bool:
    """Whether a block of ``snap`` (taken in a clone) still lies in the clone's origin.
    A clone's segment pointers are one hop deep: they cannot point at a pointer."""
    seen: set[BlockId] = set()
    for _, payload in source.meta.scan_at(Db.EXTENTS, b"", snap.gen):
        bid = BlockId(payload)
        if bid in seen:
            continue
        seen.add(bid)
        loc = source.blocks.info(bid)
        if loc is not None and loc.seg & EXTERNAL:
            return True
    return False


def _share_blocks(source: Engine, snap: Snapshot, target: Engine, refs: dict[BlockId, int]) -> int:
    """Index the clone's blocks where they lie in the origin; return their raw bytes."""
    used = 0
    for bid, count in refs.items():
        loc = source.blocks.info(bid)
        if loc is None:
            raise NotFound(f"block {bid.hex()[:16]} of snapshot {snap.name} is missing from its volume")
        # ``create`` refused such a snapshot before it made the target.
        assert not loc.seg & EXTERNAL, f"block {bid.hex()[:16]} of {snap.name} is in the origin"
        target.blocks.put_entry(bid, BlockLoc(loc.seg | EXTERNAL, loc.offset, loc.frame_len,
                                              loc.raw_len, count))
        used += loc.raw_len
    return used


def flatten_steps(engine: Engine) -> Iterator[tuple[int, int, int]]:
    """Copy every shared block into the clone's own segments, one journal record at a time.

    Yields ``(blocks done, blocks in all, bytes copied so far)`` after each step, so a
    mount worker can serve requests in between. When it is exhausted the clone no longer
    depends on its origin; the caller then releases the origin's hold (``release``).
    """
    if origin_of(engine) is None:
        raise FailedPrecondition("this volume is not a clone, or it was flattened already")
    engine.check_writable()
    shared = _shared_blocks(engine.meta)
    copied = 0
    for start in range(0, len(shared), _FLATTEN_CHUNK):
        ids = shared[start:start + _FLATTEN_CHUNK]
        with engine.operation():
            copied += engine.blocks.rewrite(ids, engine.blocks.read(ids))
        yield min(start + _FLATTEN_CHUNK, len(shared)), len(shared), copied
    with engine.operation():
        engine.meta.delete(Db.SUPER, ORIGIN_FIELD)
    engine.commit()


def _shared_blocks(meta: MetaStore) -> list[BlockId]:
    return [BlockId(bytes(k)) for k, v in meta.scan(Db.BLOCKS) if BlockLoc.decode(v).seg & EXTERNAL]


def flatten(engine: Engine, progress: Callable[[int, int], None] | None = None) -> tuple[Origin, int]:
    """``flatten_steps`` to the end; return (origin, bytes copied)."""
    origin = origin_of(engine)
    if origin is None:
        raise FailedPrecondition("this volume is not a clone, or it was flattened already")
    step = (0, 0, 0)
    for step in flatten_steps(engine):
        if progress is not None:
            progress(step[0], step[1])
    engine.checkpoint()
    return origin, step[2]


def release(source: Engine, snapshot: str, clone_id: str) -> None:
    """The clone no longer depends on ``snapshot`` (flattened or deleted)."""
    raw = source.meta.get(Db.SNAPSHOTS, snapshot.encode())
    if raw is None:
        return
    snap = Snapshot.decode(raw)
    if clone_id in snap.holds:
        with source.operation():
            snap.holds.remove(clone_id)
            if not snap.holds:
                snap.pin_seg = 0
            snapshots.save(source, snap)


def remove_dir(target_dir: str) -> None:
    shutil.rmtree(target_dir, ignore_errors=True)
