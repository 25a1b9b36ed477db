"""Snapshots: O(1) create by birth generation, and what follows from it (DESIGN §3).

A snapshot is a name for a generation ``G``. Creating one records ``G`` and bumps the
volume's generation: one journal record, whatever the volume's size. From then on the
metadata store keeps, in its history table, every version a snapshot still needs
(``MetaStore.put``); reading a snapshot reads each record as it was at ``G``
(``MetaStore.get_at``/``scan_at``).

Everything else costs in proportion to what changed, thanks to the ``born`` and ``died``
indexes:

* delete: the versions that died between ``G`` and the next snapshot and were born after
  the previous one are needed by ``G`` alone: drop them, releasing their block references.
  Done in chunks, each a journal record; the snapshot is marked ``deleting`` first, so a
  crash in between leaves it invisible and ``resume`` finishes it at the next open;
* diff: the inodes and directory entries born or died between two generations;
* restore: every record born or died after ``G`` is put back to its version at ``G``,
  through the versioned store (so later snapshots keep what they need), in resumable
  chunks; the volume records ``restoring_to`` until done.

Block references: a live extent holds one reference to its block; when a snapshot keeps
the old extent in history, the reference goes with it, and dropping that history version
releases it. So a block is freed when neither the live tree nor any snapshot uses it.

The record of a snapshot is ``schema.Snapshot``. This module works on any ``Volume`` (the
parts of an engine it needs, below); ``Engine.open`` calls ``resume``, so it must not import
the engine facade.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from .. import names
from ..errors import AlreadyExists, Busy, FailedPrecondition, NotFound
from ..ids import BlockId
from ..meta import schema
from ..meta.schema import SNAPSHOT_DELETING, Db, Inode, Snapshot
from ..meta.store import PRESERVED, MetaStore
from .blocks import BlockStore
from .ops import Operation
from .snaplist import all_snapshots as all_snapshots
from .snaplist import newest_gen
from .superblock import SuperBlock

CHUNK = 8192            # history versions or restored keys handled per journal record


class Volume(Protocol):
    """What snapshots need of an open volume (``Engine`` is one)."""

    meta: MetaStore
    sb: SuperBlock
    blocks: BlockStore

    def check_writable(self) -> None: ...
    def operation(self) -> Operation: ...


def check_snapshot_name(name: str) -> str:
    """A snapshot's name becomes a directory name under ``.snapshots/``: ``galleonfs.names``
    decides (never '', '.', '..', '/', NUL or another control character)."""
    return names.check(name, names.SNAPSHOT)


def view_path(mount_root: str, name: str) -> str:
    """Where snapshot ``name`` shows in a mounted volume (``ROOT/.snapshots/NAME``): the one
    place a snapshot's name becomes part of a path, so it is checked here as well, whatever
    the caller checked (a name stored by an older version included)."""
    return os.path.join(mount_root, ".snapshots", check_snapshot_name(name))


# --- listing ---------------------------------------------------------------------------------------
def snapshots(engine: Volume) -> list[Snapshot]:
    """The snapshots a user sees (not those being deleted), oldest first."""
    return [s for s in all_snapshots(engine.meta) if s.ready]


def get(engine: Volume, name: str) -> Snapshot:
    raw = engine.meta.get(Db.SNAPSHOTS, name.encode())
    snap = Snapshot.decode(raw) if raw is not None else None
    if snap is None or not snap.ready:
        raise NotFound(f"snapshot {name!r} does not exist")
    return snap


def by_slot(engine: Volume, slot: int) -> Snapshot | None:
    for snap in snapshots(engine):
        if snap.slot == slot:
            return snap
    return None


def save(engine: Volume, snap: Snapshot) -> None:
    engine.meta.put(Db.SNAPSHOTS, snap.name.encode(), snap.encode())


def _refresh(engine: Volume) -> None:
    engine.meta.snap_gen_max = newest_gen(engine.meta)


def info(engine: Volume, snap: Snapshot) -> dict[str, object]:
    """What the daemon reports about a snapshot (the freeable bytes are computed now)."""
    return {"name": snap.name, "id": snap.id, "generation": snap.gen, "created_ns": snap.created_ns,
            "logical_bytes": snap.used_bytes, "inodes": snap.inodes,
            "freeable_bytes": freed_by_delete(engine, snap), "holds": list(snap.holds)}


# --- create ----------------------------------------------------------------------------------------
def create(engine: Volume, name: str) -> Snapshot:
    """Take a snapshot of the live tree as it is now: one record, O(1).

    The caller has made sure everything acknowledged is in the engine (a mounted volume
    flushes the kernel's dirty pages first).
    """
    check_snapshot_name(name)
    engine.check_writable()
    if engine.meta.get(Db.SNAPSHOTS, name.encode()) is not None:
        raise AlreadyExists(f"a snapshot named {name!r} already exists on this volume")
    sb = engine.sb
    if sb.restoring_to:
        raise Busy("the volume is being restored; try again when the restore has finished")
    gen = sb.generation
    snap = Snapshot(name=name, id=str(uuid.uuid4()), gen=gen, created_ns=time.time_ns(),
                    used_bytes=sb.used_bytes, inodes=sb.inode_count, slot=sb.next_slot)
    with engine.operation():
        save(engine, snap)
        sb.next_slot = snap.slot + 1
        sb.generation = gen + 1
        engine.meta.generation = gen + 1
    _refresh(engine)
    return snap


# --- delete ----------------------------------------------------------------------------------------
def _neighbours(engine: Volume, snap: Snapshot) -> tuple[int, int]:
    """Generations of the previous ready snapshot (0 if none) and of the next one (or the
    current generation): the versions ``snap`` alone needs died in (gen, next]."""
    gens = [s.gen for s in all_snapshots(engine.meta) if s.ready and s.name != snap.name]
    prev = max((g for g in gens if g < snap.gen), default=0)
    nxt = min((g for g in gens if g > snap.gen), default=engine.sb.generation)
    return prev, nxt


def _doomed(meta: MetaStore, gen: int, prev: int, nxt: int, limit: int | None = None,
            start: bytes | None = None) -> Iterator[tuple[bytes, int, bytes, bytes]]:
    """History versions that died in (gen, nxt] and were born after ``prev``:
    ``(died index key, db, key, stored value)``, from ``start`` on."""
    count = 0
    for ikey, _ in meta.scan(Db.DIED, start=start or schema.gen_prefix(gen + 1)):
        died, db, key = schema.decode_gen_index_key(ikey)
        if died > nxt:
            return
        value = meta.get(Db.HISTORY, schema.history_key(db, key, died))
        assert value is not None, "died index names a missing history version"
        if schema.born_of(value) > prev:
            yield bytes(ikey), db, key, value
            count += 1
            if limit is not None and count >= limit:
                return


def freed_by_delete(engine: Volume, snap: Snapshot) -> int:
    """The bytes deleting ``snap`` would free now (blocks only it still references)."""
    prev, nxt = _neighbours(engine, snap)
    refs: dict[BlockId, int] = defaultdict(int)
    for _, db, _, value in _doomed(engine.meta, snap.gen, prev, nxt):
        if db == Db.EXTENTS:
            refs[BlockId(bytes(value[8:]))] += 1
    freed = 0
    for bid, count in refs.items():
        loc = engine.blocks.info(bid)
        if loc is not None and loc.refs <= count:
            freed += loc.raw_len
    return freed


def delete(engine: Volume, name: str) -> int:
    """Delete a snapshot; return the bytes its blocks freed."""
    snap = get(engine, name)
    engine.check_writable()
    if snap.holds:
        raise Busy(f"snapshot {name} has dependent clones ({', '.join(snap.holds)}); "
                   f"flatten or delete them first")
    with engine.operation():
        snap.state = SNAPSHOT_DELETING
        save(engine, snap)
    _refresh(engine)
    return _finish_delete(engine, snap)


def _finish_delete(engine: Volume, snap: Snapshot) -> int:
    """Drop the history versions only ``snap`` needs, CHUNK per record, then its record."""
    freed = 0
    prev, nxt = _neighbours(engine, snap)
    start: bytes | None = None                     # past the versions kept so far
    with engine.operation() as op:
        while True:
            batch = list(_doomed(engine.meta, snap.gen, prev, nxt, CHUNK, start))
            if batch:
                start = batch[-1][0]
            freed += _drop_versions(engine, batch)
            if len(batch) < CHUNK:
                break
            op.record()
        engine.meta.delete(Db.SNAPSHOTS, snap.name.encode())
        if not snapshots(engine):
            _drop_born_index(engine, op)
    _refresh(engine)
    return freed


def _drop_versions(engine: Volume, batch: list[tuple[bytes, int, bytes, bytes]]) -> int:
    """Delete history versions and their index entries; return the bytes their blocks freed."""
    freed = 0
    for ikey, db, key, value in batch:
        died = schema.decode_gen_index_key(ikey)[0]
        engine.meta.delete(Db.HISTORY, schema.history_key(db, key, died))
        engine.meta.delete(Db.DIED, ikey)
        engine.meta.delete(Db.BORN, schema.gen_index_key(schema.born_of(value), db, key))
        if db == Db.EXTENTS:
            freed += engine.blocks.unref(BlockId(bytes(value[8:])))
    return freed


def _drop_born_index(engine: Volume, op: Operation) -> None:
    """No snapshot left: nothing will ever ask what was born when; the index goes."""
    keys = [bytes(k) for k, _ in engine.meta.scan(Db.BORN)]
    for i, key in enumerate(keys):
        engine.meta.delete(Db.BORN, key)
        if i % CHUNK == CHUNK - 1:
            op.record()


def resume(engine: Volume) -> list[str]:
    """At open: finish deletes and restores that a crash interrupted. Returns what it did."""
    done = []
    for snap in all_snapshots(engine.meta):
        if snap.state == SNAPSHOT_DELETING:
            _finish_delete(engine, snap)
            done.append(f"finished deleting snapshot {snap.name}")
    target = engine.sb.restoring_to
    if target:
        _finish_restore(engine, target)
        done.append(f"finished restoring generation {target}")
    return done


# --- changes between generations -------------------------------------------------------------------
def changed_keys(meta: MetaStore, after: int, upto: int, dbs: set[int]) -> set[tuple[int, bytes]]:
    """``(db, key)`` of every record with a version born or dead in (after, upto]."""
    out: set[tuple[int, bytes]] = set()
    for index in (Db.BORN, Db.DIED):
        for ikey, _ in meta.scan(index, start=schema.gen_prefix(after + 1)):
            gen, db, key = schema.decode_gen_index_key(ikey)
            if gen > upto:
                break
            if db in dbs:
                out.add((db, key))
    return out


# --- restore ---------------------------------------------------------------------------------------
def restore(engine: Volume, name: str) -> int:
    """Roll the live tree back to snapshot ``name``; return how many records changed.

    The volume must not be mounted (the kernel's caches would disagree); later snapshots
    stay valid, the versions they need are kept as for any change.
    """
    snap = get(engine, name)
    engine.check_writable()
    with engine.operation():
        engine.sb.restoring_to = snap.gen
    return _finish_restore(engine, snap.gen)


def _finish_restore(engine: Volume, gen: int) -> int:
    meta = engine.meta
    keys = sorted(changed_keys(meta, gen, engine.sb.generation, set(schema.VERSIONED)))
    changed = 0
    with engine.operation() as op:
        for i, (db, skey) in enumerate(keys):
            key = meta.original_key(Db(db), skey)     # indexes hold stored keys (sealed volumes)
            if key is not None and _restore_key(engine, Db(db), key, gen):
                changed += 1
            if i % CHUNK == CHUNK - 1:
                op.record()
        engine.sb.restoring_to = 0
    return changed


def _restore_key(engine: Volume, db: Db, key: bytes, gen: int) -> bool:
    meta = engine.meta
    want = meta.get_at(db, key, gen)
    current = meta.get_versioned(db, key)
    live = None if current is None else current[1]
    if live == want and (current is None or current[0] <= gen):
        return False
    if want is None:
        preserved = meta.delete(db, key) == PRESERVED
    else:
        if db == Db.EXTENTS:
            engine.blocks.ref(BlockId(want))       # the restored extent's own reference
        preserved = meta.put(db, key, want)
    if db == Db.EXTENTS and live is not None and not preserved:
        engine.blocks.unref(BlockId(live))
    if db == Db.INODES:
        _fix_inode_bookkeeping(engine, key, live, want)
    return True


def _fix_inode_bookkeeping(engine: Volume, key: bytes, live: bytes | None, want: bytes | None) -> None:
    if (live is None) != (want is None):
        engine.sb.inode_count += 1 if want is not None else -1
    if want is None or Inode.decode(schema.ino_of_key(key), want).nlink > 0:
        engine.meta.delete(Db.ORPHANS, key)       # gone, or linked again: nothing pending
    else:
        engine.meta.put(Db.ORPHANS, key, b"")     # open at the snapshot: deleted at mount


# --- diff --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    kind: str               # "+" created, "-" deleted, "M" modified, "R" renamed
    path: str
    new_path: str = ""
    type: str = ""          # "file", "dir", "symlink", "other"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class _Paths:
    """Paths of inodes at one generation, through the ``links`` records (memoised)."""

    def __init__(self, meta: MetaStore, gen: int) -> None:
        self.meta, self.gen = meta, gen
        self._cache: dict[int, str | None] = {1: ""}

    def __call__(self, ino: int, depth: int = 0) -> str | None:
        if ino in self._cache:
            return self._cache[ino]
        path = None
        for key, _ in self.meta.scan_at(Db.LINKS, schema.ino_key(ino), self.gen, limit=1):
            _, parent, name = schema.decode_link_key(key)
            head = self(parent, depth + 1) if depth < 4096 else None
            if head is not None:
                path = f"{head}/{name.decode(errors='surrogateescape')}"
        self._cache[ino] = path
        return path


def _same_but_atime(before: bytes, after: bytes) -> bool:
    b, a = Inode.decode(0, before), Inode.decode(0, after)
    b.atime_ns = a.atime_ns
    return b == a


def diff(engine: Volume, old: str, new: str | None) -> list[Change]:
    """What changed from snapshot ``old`` to snapshot ``new`` (None: the live volume).

    Like ``zfs diff``: created (+), deleted (-), modified (M: content, metadata other than
    atime, xattrs) and renamed (R) paths; a directory whose entries changed is modified.
    """
    meta = engine.meta
    a = get(engine, old).gen
    b = get(engine, new).gen if new is not None else engine.sb.generation
    if b < a:
        raise FailedPrecondition(f"snapshot {new} is older than {old}; swap them")
    keys = changed_keys(meta, a, b, {Db.INODES, Db.LINKS, Db.EXTENTS, Db.XATTRS})
    content = {schema.ino_of_key(k) for db, k in keys if db in (Db.EXTENTS, Db.XATTRS)}
    inodes = {schema.ino_of_key(k) for db, k in keys if db == Db.INODES} | content
    inodes |= {schema.decode_link_key(k)[0] for db, k in keys if db == Db.LINKS}
    paths_a, paths_b = _Paths(meta, a), _Paths(meta, b)
    changes = []
    for ino in sorted(inodes - {1}):
        before = meta.get_at(Db.INODES, schema.ino_key(ino), a)
        after = meta.get_at(Db.INODES, schema.ino_key(ino), b)
        pa = paths_a(ino) if before is not None else None
        pb = paths_b(ino) if after is not None else None
        if pa is None and pb is None:
            continue                                   # born and gone in between, or unlinked
        record = after if after is not None else before
        assert record is not None
        kind = _kind(Inode.decode(ino, record).mode)
        if pa is None:
            changes.append(Change("+", pb or "", type=kind))
        elif pb is None:
            changes.append(Change("-", pa, type=kind))
        elif pa != pb:
            changes.append(Change("R", pa, pb, type=kind))
        elif ino in content or (before is not None and after is not None
                                and not _same_but_atime(before, after)):
            changes.append(Change("M", pa, type=kind))
    return sorted(changes, key=lambda c: (c.path, c.kind))
