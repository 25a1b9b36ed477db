"""Garbage collection: mark and sweep that fails closed, and repacking of mostly dead packs.

Under an *exclusive* lock (no backup, restore or delete runs meanwhile; see ``locks``):

1. **Read everything first.** List ``backups/``, ``index/`` and ``packs/``; read every
   manifest, every index object, the tail of every pack no index names, and every table
   chunk of every backup. Any listing error, any unreadable manifest, index object or
   chunk, and any referenced blob that no readable pack holds stops GC with ``GCRefused``
   *before anything is written or deleted*: a repository GC does not fully understand is
   left as it is (run ``verify``).
2. **Mark**: live = every table chunk of every manifest and every blob a record references.
3. **Plan**: a pack with no live blob is dead; a pack whose live bytes are under
   ``repack_live_fraction`` of its size is repacked (its live blobs copied into new packs,
   re-encrypted under the new pack's key; already sealed blobs copied as they are).
4. **Write**: the new packs, then a fresh index naming every pack that stays.
5. **Delete**, after checking the lock is still ours: first the old index objects, then dead
   and repacked packs. This order keeps every crash safe: before step 5 old and new index
   objects both name packs that exist; after the old index objects go, the packs about to
   be deleted are named by no index, so a writer never dedups against them, and the next GC
   deletes whatever this one did not get to.

Writers never dedup against a pack they cannot see listed (``Repository.reconcile_packs``),
which closes the last gap: a writer that kept running after losing its lock cannot make a
later backup rely on a pack this GC deleted; and that writer itself refuses to commit.

What it must not do: delete anything after any read failed, or without the exclusive lock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import GalleonError
from . import limits
from .errors import BlobMissing, GCRefused
from .index import Index, PackInfo
from .layout import BACKUPS, INDEX
from .manifests import ChunkRef
from .packs import Entry, pack_name
from .progress import Meter, ProgressCallback
from .writer import PackSink

if TYPE_CHECKING:
    from .locks import Lock
    from .repository import Repository


@dataclass
class GCReport:
    dry_run: bool = False
    backups: int = 0
    blobs_live: int = 0
    packs_before: int = 0
    bytes_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_after: int = 0
    index_objects_written: int = 0
    index_objects_deleted: int = 0
    incomplete_removed: int = 0
    damaged_orphans: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after


@dataclass
class _State:
    index: Index
    packs: dict[bytes, PackInfo]
    index_names: list[str]
    damaged: dict[bytes, int]           # pack id -> size, for unreadable orphan packs
    live: set[bytes]
    backups: int
    orphans: int                        # packs the index objects do not describe right


def collect_garbage(repo: Repository, *, dry_run: bool = False,
                    repack_live_fraction: float = limits.repack_live_fraction_max,
                    progress: ProgressCallback | None = None,
                    wait_s: float = limits.lock_wait_default_s) -> GCReport:
    """Free what no backup references (see the module docstring)."""
    lock = repo.lock(exclusive=True, purpose="gc", wait_s=wait_s)
    try:
        try:
            state = _read_all(repo)
            _mark(repo, state)
        except GCRefused:
            raise
        except GalleonError as exc:
            raise GCRefused(target=repo.url, reason=str(exc)) from exc
        return _sweep(repo, state, lock, dry_run, repack_live_fraction,
                      Meter("gc", progress, limits.progress_interval_s))
    finally:
        lock.release()
        repo.replace_index(None)        # read afresh when next needed


def _read_all(repo: Repository) -> _State:
    index_names = [n for n, _ in repo.target.list(INDEX)]
    listed = repo.list_packs()
    objects = repo.parallel(repo.read_index_object, index_names)
    index, packs, stale = Index(), {}, 0
    for name in sorted(objects):
        for info in objects[name]:
            if listed.get(info.pack_id) != info.size:
                stale += 1                      # named by an index, gone from the target
            elif info.pack_id not in packs:
                packs[info.pack_id] = info
                index.add(info)
    orphans = {p: s for p, s in listed.items() if p not in packs}
    damaged: dict[bytes, int] = {}

    def tail(pack_hex: str) -> list[Entry]:
        pack_id = bytes.fromhex(pack_hex)
        return repo.read_pack_entries(pack_id, orphans[pack_id])

    found = repo.parallel(tail, [p.hex() for p in orphans],
                          on_error=lambda name, exc: damaged.__setitem__(bytes.fromhex(name), orphans[bytes.fromhex(name)]))
    for pack_hex, entries in found.items():
        info = PackInfo(bytes.fromhex(pack_hex), orphans[bytes.fromhex(pack_hex)], tuple(entries))
        packs[info.pack_id] = info
        index.add(info)
    repo.replace_index(index)   # reads below go through what was just listed and read
    return _State(index, packs, index_names, damaged, set(), 0, len(found) + stale)


def _mark(repo: Repository, state: _State) -> None:
    names = [n for n, _ in repo.target.list(BACKUPS)]
    manifests = repo.parallel(lambda n: repo.read_manifest(n[len(BACKUPS):]), names)
    state.backups = len(manifests)
    chunks: dict[bytes, tuple[ChunkRef, str]] = {}
    for name, (_info, refs) in manifests.items():
        for c in refs:
            chunks.setdefault(c.blob_id, (c, name))
    state.live.update(chunks)
    loaded = repo.parallel(lambda h: repo.load_chunk(*chunks[bytes.fromhex(h)]), [c.hex() for c in chunks])
    for records in loaded.values():
        for r in records:
            state.live.update(r.refs)
    for blob_id in state.live:
        if blob_id not in state.index.blobs:
            raise BlobMissing(blob=blob_id.hex(), target=repo.url,
                              context=" although a backup references it; run verify")


def _sweep(repo: Repository, state: _State, lock: Lock, dry_run: bool, fraction: float,
           meter: Meter) -> GCReport:
    report = GCReport(dry_run=dry_run, backups=state.backups, blobs_live=len(state.live))
    report.packs_before = len(state.packs) + len(state.damaged)
    report.bytes_before = sum(p.size for p in state.packs.values()) + sum(state.damaged.values())
    live_bytes: dict[bytes, int] = defaultdict(int)
    chosen: dict[bytes, list[Entry]] = defaultdict(list)
    for blob_id in state.live:
        pack_id, entry = state.index.blobs[blob_id]
        live_bytes[pack_id] += entry.stored_len
        chosen[pack_id].append(entry)
    keep, repack, dead = [], [], list(state.damaged)
    for pack_id, info in state.packs.items():
        blob_bytes = sum(e.stored_len for e in info.entries)   # not the pack's fixed overhead
        if live_bytes[pack_id] == 0:
            dead.append(pack_id)
        elif live_bytes[pack_id] < fraction * blob_bytes:
            repack.append(pack_id)
        else:
            keep.append(info)
    report.damaged_orphans = [pack_name(p) for p in state.damaged]
    report.packs_deleted = len(dead)
    report.packs_repacked = len(repack)
    if not (dead or repack or state.orphans):
        report.bytes_after = report.bytes_before
        report.incomplete_removed = 0 if dry_run else repo.target.sweep_incomplete(limits.incomplete_age_s)
        return report                   # nothing to free and the index is complete: no churn
    if dry_run:
        report.bytes_after = sum(i.size for i in keep) + sum(live_bytes[p] for p in repack)
        return report
    sink = PackSink(repo, meter)
    moving = [e.blob_id for pack_id in repack for e in chosen[pack_id]]
    # Ranged GETs of neighbouring live blobs, every blob verified before it is copied.
    for blob_id, kind, data in repo.read_blobs(moving, meter=meter):
        sink.add(blob_id, kind, data)
    sink.flush()
    new = sink.take_stored()
    report.packs_written = len(new)
    stay = keep + new
    report.bytes_after = sum(i.size for i in stay)
    groups: list[list[PackInfo]] = [[]]
    count = 0
    for info in stay:
        if count + len(info.entries) > limits.index_object_entries_max and groups[-1]:
            groups.append([])
            count = 0
        groups[-1].append(info)
        count += len(info.entries)
    written = {repo.write_index(g) for g in groups if g}
    report.index_objects_written = len(written)
    lock.check()
    old = [n for n in state.index_names if n not in written]
    repo.parallel(repo.target.delete, old)
    report.index_objects_deleted = len(old)
    repo.parallel(repo.target.delete, [pack_name(p) for p in dead + repack])
    report.incomplete_removed = repo.target.sweep_incomplete(limits.incomplete_age_s)
    meter.finish()
    return report
