"""Model-based test of snapshots and clones, in process (engine + VFS, no kernel).

A hypothesis state machine keeps a pure-Python model of every tree: each volume's live
tree, each of its snapshots, and each clone (a volume of its own, born from a snapshot).
Its rules: writes (whole and partial blocks, zeros as holes, content equal to other
blocks so that dedup shares them, within a volume and across its clones), truncates,
renames of files and directories, unlinks (also of files still open, which a snapshot
keeps as an orphan), mkdir, rmdir, snapshot create and delete, restore, clone, flatten,
clone delete, GC with a live fraction threshold of 0.999 (so it compacts nearly every
segment: the origin's pins must keep the clones' frames where they are), checkpoints and
reopens (journal replay of snapshot records).

After every step, for every volume:

* the live tree, read through the VFS (every block verified), is the model's;
* every snapshot, read through the VFS snapshot views (``.snapshots/<name>``), is the
  model's tree at its creation, with the same inode numbers; ``.snapshots`` is not in the
  root's readdir, and lists exactly the model's snapshots;
* ``check_engine`` (fsck) finds nothing: no leaked or missing block, no wrong refcount, no
  history version that no snapshot needs, a complete born index;
* a clone's blocks still read back from its origin's segments (fsck reads every frame);
* the step logged no WARNING (checked here, not only by the conftest after the whole run,
  so that hypothesis shrinks the case and prints its steps).

Some rules check more: snapshot delete frees exactly what ``freed_by_delete`` promised
(and ``used_bytes`` drops by it); diffs (snapshot to snapshot, snapshot to live) hold
exactly the model's created, deleted and renamed paths, and modified ones where the
model changed the inode; snapshot views refuse every change with ``ReadOnly``.

Budget: ``GALLEONFS_HYPOTHESIS_PROFILE=ci`` (the default) runs 200 examples of up to 60
steps: ~25 s on an idle 2-core VM, ~40 s under a load average of 4.5. ``thorough`` runs
1 500 of up to 100 steps (~8 min; it passed when this test was committed).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from galleonfs import limits
from galleonfs.engine import clones, snaplist, snapshots
from galleonfs.engine.engine import EXTERNAL, Engine
from galleonfs.engine.fsck import check_engine
from galleonfs.errors import AlreadyExists, Busy, FailedPrecondition, ReadOnly
from galleonfs.meta.schema import BlockLoc, Db
from galleonfs.vfs import views
from galleonfs.vfs.vfs import ROOT_CTX, SetAttr, Vfs

# --- settings --------------------------------------------------------------------------------
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
PROFILES = {
    "ci": settings(max_examples=200, stateful_step_count=60, **_COMMON),
    "thorough": settings(max_examples=1500, stateful_step_count=100, **_COMMON),
}
PROFILE_NAME = os.environ.get("GALLEONFS_HYPOTHESIS_PROFILE", "ci")

BS = 4096
VOLUME_SIZE = 64 << 20
FILE_SIZE_MAX = 4 * BS
# Every name a rule may use: three levels, so that directory renames move subtrees.
PATHS = ("a", "b", "d", "d/a", "d/b", "d/d", "d/d/a")
SNAP_NAMES = ("s0", "s1", "s2", "s3")
CLONES_MAX = 3
# A few block contents that writes reuse, so that equal blocks dedup (within a volume,
# between a snapshot and the live tree, and between a clone and its origin).
POOL = [random.Random(i).randbytes(BS) for i in range(4)]

Tree = dict[str, tuple[int, bytes | None]]        # path -> (inode, content or None: directory)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass
class Snap:
    tree: Tree
    seq: int                        # the volume's operation count when it was taken
    order: int = 0                  # creation order (several may share one ``seq``)
    holds: set[str] = field(default_factory=set)


@dataclass
class Vol:
    name: str
    dir: str
    engine: Engine
    vfs: Vfs
    tree: Tree
    snaps: dict[str, Snap] = field(default_factory=dict)
    # Inodes each operation changed (None: all of them, a restore), for diffs.
    log: list[frozenset[int] | None] = field(default_factory=list)
    origin: tuple[str, str] | None = None      # (volume, snapshot) until flattened
    held: list[int] = field(default_factory=list)   # unlinked files still open


def open_vfs(engine: Engine) -> Vfs:
    """A fresh VFS, as a new mount makes one: finish what unlinked-open files left."""
    vfs = Vfs(engine, atime=False)
    vfs.purge_orphans()
    return vfs


def read_view(vfs: Vfs, root: int) -> Tree:
    """The tree under ``root`` (a live or snapshot directory), every file read."""
    out: Tree = {}

    def walk(ino: int, prefix: str) -> None:
        for entry in vfs.readdir(ino, 0):
            if entry.name in (b".", b".."):
                continue
            path = prefix + entry.name.decode()
            local = views.split(entry.inode.ino)[1]
            if stat.S_ISDIR(entry.inode.mode):
                out[path] = (local, None)
                walk(entry.inode.ino, path + "/")
            else:
                out[path] = (local, vfs.read(entry.inode.ino, 0, entry.inode.size + 10))

    walk(root, "")
    return out


def snapshot_root(vfs: Vfs, name: str) -> int:
    """The FUSE inode of ``.snapshots/<name>``, looked up by name as the kernel would."""
    snapdir = vfs.lookup(1, views.SNAPDIR_NAME, ROOT_CTX)
    try:
        root = vfs.lookup(snapdir.ino, name.encode(), ROOT_CTX)
    finally:
        vfs.forget([(snapdir.ino, 1)])
    vfs.forget([(root.ino, 1)])
    return root.ino


def show(tree: Tree) -> str:
    return ", ".join(f"{p}#{ino}" + ("/" if d is None else f":{len(d)}") for p, (ino, d) in sorted(tree.items()))


class Loud(logging.Handler):
    """The WARNING (or worse) records of the engine since the last step's check."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class SnapshotModel(RuleBasedStateMachine):
    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(dir=base))
        self.vols: dict[str, Vol] = {}
        self.clone_names = (f"c{i}" for i in itertools.count())
        self.snap_order = itertools.count()
        self.steps = 0
        self.loud = Loud()
        logging.getLogger("galleonfs").addHandler(self.loud)
        path = str(self.base / "origin")
        Engine.create(path, size=VOLUME_SIZE, block_size=BS)
        engine = Engine.open(path)
        self.vols["origin"] = Vol("origin", path, engine, open_vfs(engine), {})

    # --- helpers -------------------------------------------------------------------------------
    def _vol(self, data: st.DataObject) -> Vol:
        return self.vols[data.draw(st.sampled_from(sorted(self.vols)), label="volume")]

    def _ino(self, vol: Vol, path: str) -> int:
        return 1 if path == "" else vol.tree[path][0]

    def _note(self, vol: Vol, *inodes: int) -> None:
        vol.log.append(frozenset(inodes))

    def _dependants(self, name: str, snap: str | None = None) -> list[str]:
        return sorted(v.name for v in self.vols.values()
                      if v.origin is not None and v.origin[0] == name and (snap is None or v.origin[1] == snap))

    def _free_paths(self, vol: Vol) -> list[str]:
        return [p for p in PATHS if p not in vol.tree
                and (parent_of(p) == "" or vol.tree.get(parent_of(p), (0, b""))[1] is None)]

    def _files(self, vol: Vol) -> list[str]:
        return sorted(p for p, (_, d) in vol.tree.items() if d is not None)

    def _content(self, data: st.DataObject, vol: Vol, length: int) -> bytes:
        kind = data.draw(st.sampled_from(["random", "pool", "zeros", "copy"]), label="content")
        if kind == "zeros":
            return bytes(length)
        if kind == "pool":
            block = data.draw(st.sampled_from(POOL), label="pool block")
            return (block * (length // BS + 1))[:length]
        if kind == "copy":
            files = [d for _, d in vol.tree.values() if d]
            if files:
                source = data.draw(st.sampled_from(files), label="copied file")
                return (source * (length // len(source) + 1))[:length]
        return random.Random(data.draw(st.integers(0, 2**32), label="seed")).randbytes(length)

    # --- the live tree -------------------------------------------------------------------------
    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        free = self._free_paths(vol)
        if not free:
            return
        path = data.draw(st.sampled_from(free), label="path")
        is_dir = data.draw(st.booleans(), label="mkdir")
        parent = self._ino(vol, parent_of(path))
        name = path.rpartition("/")[2].encode()
        if is_dir:
            inode = vol.vfs.mkdir(parent, name, 0o755, ROOT_CTX)
            vol.tree[path] = (inode.ino, None)
        else:
            inode = vol.vfs.create(parent, name, 0o644, ROOT_CTX)
            vol.vfs.release(inode.ino)
            vol.tree[path] = (inode.ino, b"")
        vol.vfs.forget([(inode.ino, 1)])
        self._note(vol, inode.ino, parent)

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        files = self._files(vol)
        if not files:
            return
        path = data.draw(st.sampled_from(files), label="path")
        ino, old = vol.tree[path]
        assert old is not None
        offset = data.draw(st.sampled_from([0, BS, len(old), min(len(old) + 100, FILE_SIZE_MAX - 1),
                                            data.draw(st.integers(0, FILE_SIZE_MAX - 1))]), label="offset")
        length = data.draw(st.sampled_from([1, 100, BS, BS + 1, 2 * BS, 3 * BS - 7]), label="length")
        length = min(length, FILE_SIZE_MAX - offset)
        content = self._content(data, vol, length)
        new = bytearray(old.ljust(offset, b"\0"))
        new[offset:offset + length] = content
        assert vol.vfs.write(ino, offset, content) == length
        vol.tree[path] = (ino, bytes(new))
        self._note(vol, ino)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        files = self._files(vol)
        if not files:
            return
        path = data.draw(st.sampled_from(files), label="path")
        ino, old = vol.tree[path]
        assert old is not None
        size = data.draw(st.sampled_from([0, 1, BS - 1, BS, BS + 1, len(old), len(old) // 2,
                                          min(len(old) + BS + 3, FILE_SIZE_MAX)]), label="size")
        vol.vfs.setattr(ino, SetAttr(size=size))
        vol.tree[path] = (ino, old[:size].ljust(size, b"\0"))
        self._note(vol, ino)

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        if not vol.tree:
            return
        src = data.draw(st.sampled_from(sorted(vol.tree)), label="from")
        src_ino, src_data = vol.tree[src]

        def valid(dst: str) -> bool:
            if dst == src or dst.startswith(src + "/"):
                return False
            head = parent_of(dst)
            if head and vol.tree.get(head, (0, b""))[1] is not None:
                return False
            if dst not in vol.tree:
                return True
            dst_data = vol.tree[dst][1]
            if (dst_data is None) != (src_data is None):
                return False
            return dst_data is not None or not any(p.startswith(dst + "/") for p in vol.tree)

        targets = [p for p in PATHS if valid(p)]
        if not targets:
            return
        dst = data.draw(st.sampled_from(targets), label="to")
        replaced = vol.tree.get(dst, (0, b""))[0]
        vol.vfs.rename(self._ino(vol, parent_of(src)), src.rpartition("/")[2].encode(),
                       self._ino(vol, parent_of(dst)), dst.rpartition("/")[2].encode(), 0, ROOT_CTX)
        touched = {src_ino, self._ino(vol, parent_of(src)), self._ino(vol, parent_of(dst))}
        if replaced:
            touched.add(replaced)
        moved = {p: v for p, v in vol.tree.items() if p == src or p.startswith(src + "/")}
        for p in moved:
            del vol.tree[p]
        for p, v in moved.items():
            vol.tree[dst + p[len(src):]] = v
        self._note(vol, *touched)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        """unlink a file (maybe while it is open: it becomes an orphan), or rmdir an empty dir."""
        vol = self._vol(data)
        leaves = [p for p in vol.tree if not any(q.startswith(p + "/") for q in vol.tree)]
        if not leaves:
            return
        path = data.draw(st.sampled_from(sorted(leaves)), label="path")
        ino, content = vol.tree[path]
        parent = self._ino(vol, parent_of(path))
        name = path.rpartition("/")[2].encode()
        if content is None:
            vol.vfs.rmdir(parent, name)
        else:
            if data.draw(st.booleans(), label="keep open"):
                vol.vfs.open(ino, True)
                vol.held.append(ino)
            vol.vfs.unlink(parent, name)
        del vol.tree[path]
        self._note(vol, ino, parent)

    @precondition(lambda self: any(v.held for v in self.vols.values()))
    @rule(data=st.data())
    def use_or_release_held(self, data: st.DataObject) -> None:
        """Write to an unlinked open file (invisible everywhere), or close it (deleted now)."""
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.held]), label="volume")
        ino = data.draw(st.sampled_from(vol.held), label="held inode")
        if data.draw(st.booleans(), label="write"):
            vol.vfs.write(ino, data.draw(st.integers(0, 2 * BS)), self._content(data, vol, BS))
        else:
            vol.held.remove(ino)
            vol.vfs.release(ino)
        self._note(vol, ino)

    def _close_held(self, vol: Vol) -> None:
        for ino in vol.held:
            vol.vfs.release(ino)
        vol.held.clear()

    # --- snapshots -------------------------------------------------------------------------------
    @rule(data=st.data())
    def snapshot_create(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        name = data.draw(st.sampled_from(SNAP_NAMES), label="snapshot")
        if name in vol.snaps:
            with pytest.raises(AlreadyExists, match=f"a snapshot named '{name}' already exists"):
                snapshots.create(vol.engine, name)
            return
        gen = vol.engine.generation
        snap = snapshots.create(vol.engine, name)
        assert snap.gen == gen and vol.engine.generation == gen + 1
        vol.snaps[name] = Snap(dict(vol.tree), len(vol.log), next(self.snap_order))
        vol.vfs.snapshots_changed()

    @precondition(lambda self: any(v.snaps for v in self.vols.values()))
    @rule(data=st.data())
    def snapshot_delete(self, data: st.DataObject) -> None:
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.snaps]), label="volume")
        name = data.draw(st.sampled_from(sorted(vol.snaps)), label="snapshot")
        holds = vol.snaps[name].holds
        if holds:
            with pytest.raises(Busy, match=f"snapshot {name} has dependent clones.*{sorted(holds)[0]}"):
                snapshots.delete(vol.engine, name)
            return
        promised = snapshots.freed_by_delete(vol.engine, snapshots.get(vol.engine, name))
        used = vol.engine.used_bytes
        freed = snapshots.delete(vol.engine, name)
        assert freed == promised, f"delete freed {freed} bytes, freed_by_delete promised {promised}"
        assert vol.engine.used_bytes == used - freed
        del vol.snaps[name]
        vol.vfs.snapshots_changed()

    @precondition(lambda self: any(v.snaps for v in self.vols.values()))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.snaps]), label="volume")
        name = data.draw(st.sampled_from(sorted(vol.snaps)), label="snapshot")
        self._close_held(vol)              # a restore needs the volume unmounted
        snapshots.restore(vol.engine, name)
        vol.vfs = open_vfs(vol.engine)
        vol.tree = dict(vol.snaps[name].tree)
        vol.log.append(None)

    @precondition(lambda self: any(v.snaps for v in self.vols.values()))
    @rule(data=st.data())
    def diff(self, data: st.DataObject) -> None:
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.snaps]), label="volume")
        names = sorted(vol.snaps, key=lambda n: vol.snaps[n].order)
        old = data.draw(st.sampled_from(names), label="old")
        later = names[names.index(old) + 1:]
        new = data.draw(st.sampled_from([None, *later]), label="new")
        a = vol.snaps[old]
        b_tree, b_seq = (vol.tree, len(vol.log)) if new is None else (vol.snaps[new].tree, vol.snaps[new].seq)
        # The engine names paths from the volume's root, like `zfs diff` ("/d/a").
        got = {(c.kind, c.path.removeprefix("/"), c.new_path.removeprefix("/"))
               for c in snapshots.diff(vol.engine, old, new)}
        assert all(c.path.startswith("/") for c in snapshots.diff(vol.engine, old, new))
        check_diff(got, a.tree, b_tree, vol.log[a.seq:b_seq])

    @precondition(lambda self: any(v.snaps for v in self.vols.values()))
    @rule(data=st.data())
    def snapshot_is_read_only(self, data: st.DataObject) -> None:
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.snaps]), label="volume")
        name = data.draw(st.sampled_from(sorted(vol.snaps)), label="snapshot")
        root = snapshot_root(vol.vfs, name)
        slot = views.split(root)[0]
        tree = vol.snaps[name].tree
        vfs = vol.vfs
        attempts = [lambda: vfs.mkdir(root, b"x", 0o755, ROOT_CTX),
                    lambda: vfs.create(root, b"x", 0o644, ROOT_CTX),
                    lambda: vfs.setattr(root, SetAttr(mode=0o700)),
                    lambda: vfs.setxattr(root, b"user.x", b"1"),
                    lambda: vfs.mkdir(views.SNAPDIR_INO, b"x", 0o755, ROOT_CTX),
                    lambda: vfs.rename(1, views.SNAPDIR_NAME, 1, b"x", 0, ROOT_CTX)]
        for path, (ino, content) in sorted(tree.items()):
            fino = views.join(slot, ino)
            parent = views.join(slot, self._ino_in(tree, parent_of(path)))
            leaf = path.rpartition("/")[2].encode()
            attempts.append(lambda p=parent, n=leaf: vfs.rename(p, n, 1, b"x", 0, ROOT_CTX))
            if content is None:
                attempts.append(lambda p=parent, n=leaf: vfs.rmdir(p, n))
            else:
                attempts += [lambda f=fino: vfs.write(f, 0, b"x"),
                             lambda f=fino: vfs.setattr(f, SetAttr(size=0)),
                             lambda f=fino: vfs.open(f, True),
                             lambda p=parent, n=leaf: vfs.unlink(p, n),
                             lambda f=fino: vfs.link(f, 1, b"x", ROOT_CTX)]
        for attempt in attempts:
            with pytest.raises(ReadOnly):
                attempt()

    @staticmethod
    def _ino_in(tree: Tree, path: str) -> int:
        return 1 if path == "" else tree[path][0]

    # --- clones ----------------------------------------------------------------------------------
    @precondition(lambda self: any(v.snaps for v in self.vols.values())
                  and len(self.vols) <= CLONES_MAX)
    @rule(data=st.data())
    def clone(self, data: st.DataObject) -> None:
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.snaps]), label="volume")
        snap = data.draw(st.sampled_from(sorted(vol.snaps)), label="snapshot")
        name = next(self.clone_names)
        path = str(self.base / name)
        try:
            clones.create(vol.engine, snap, path, clone_id=name, name=name)
        except FailedPrecondition as exc:
            # A clone's snapshot may share blocks with the clone's own origin: not supported.
            assert vol.origin is not None, exc
            assert "flatten the clone first" in str(exc)
            assert not os.path.exists(path)
            assert name not in snapshots.get(vol.engine, snap).holds
            return
        engine = Engine.open(path)
        tree = dict(vol.snaps[snap].tree)
        self.vols[name] = Vol(name, path, engine, open_vfs(engine), tree, origin=(vol.name, snap))
        vol.snaps[snap].holds.add(name)

    @precondition(lambda self: any(v.origin for v in self.vols.values()))
    @rule(data=st.data())
    def flatten(self, data: st.DataObject) -> None:
        vol = data.draw(st.sampled_from([v for _, v in sorted(self.vols.items()) if v.origin]), label="clone")
        assert vol.origin is not None
        shared = [BlockLoc.decode(v) for _, v in vol.engine.meta.scan(Db.BLOCKS)]
        shared_bytes = sum(loc.frame_len for loc in shared if loc.seg & EXTERNAL)
        origin, copied = clones.flatten(vol.engine)
        assert copied == shared_bytes, f"flatten copied {copied} bytes of {shared_bytes} shared"
        assert (origin.snapshot, os.path.abspath(origin.volume_dir)) == (vol.origin[1], self.vols[vol.origin[0]].dir)
        assert not any(BlockLoc.decode(v).seg & EXTERNAL for _, v in vol.engine.meta.scan(Db.BLOCKS))
        source = self.vols[vol.origin[0]]
        clones.release(source.engine, vol.origin[1], vol.name)
        source.snaps[vol.origin[1]].holds.discard(vol.name)
        vol.origin = None
        with pytest.raises(FailedPrecondition, match="not a clone, or it was flattened already"):
            clones.flatten(vol.engine)

    @precondition(lambda self: len(self.vols) > 1)
    @rule(data=st.data())
    def delete_clone(self, data: st.DataObject) -> None:
        """What `volume delete` does to a clone: only when nothing depends on it."""
        free = [n for n in sorted(self.vols) if n != "origin" and not self._dependants(n)]
        if not free:
            return
        vol = self.vols.pop(data.draw(st.sampled_from(free), label="clone"))
        vol.engine.close(checkpoint=False)
        shutil.rmtree(vol.dir)
        if vol.origin is not None:
            source = self.vols[vol.origin[0]]
            clones.release(source.engine, vol.origin[1], vol.name)
            source.snaps[vol.origin[1]].holds.discard(vol.name)

    # --- housekeeping ----------------------------------------------------------------------------
    @rule(data=st.data())
    def gc(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        pinned = snaplist.pinned_segment_max(vol.engine.meta)
        before = {s for s in vol.engine.segment_stats() if s <= pinned}
        vol.engine.gc(live_fraction_min=0.999)
        after = set(vol.engine.segment_stats())
        assert before <= after, f"GC removed pinned segments {sorted(before - after)} (pin {pinned})"

    @rule(data=st.data())
    def checkpoint_or_reopen(self, data: st.DataObject) -> None:
        vol = self._vol(data)
        how = data.draw(st.sampled_from(["checkpoint", "close", "close without checkpoint"]), label="how")
        if how == "checkpoint":
            vol.engine.checkpoint()
            return
        self._close_held(vol)              # an unmount closes everything
        vol.engine.close(checkpoint=how == "close")
        vol.engine = Engine.open(vol.dir)
        vol.vfs = open_vfs(vol.engine)

    # --- checks ------------------------------------------------------------------------------------
    @invariant()
    def nothing_logged_a_warning(self) -> None:
        loud, self.loud.records = self.loud.records, []
        assert not loud, "unexpected warnings: " + "; ".join(r.getMessage() for r in loud)

    @invariant()
    def every_tree_reads_back(self) -> None:
        self.steps += 1
        for vol in self.vols.values():
            got = read_view(vol.vfs, 1)
            assert got == vol.tree, f"{vol.name} live:\n got {show(got)}\nwant {show(vol.tree)}"
            names = [e.name for e in vol.vfs.readdir(1, 0)]
            assert views.SNAPDIR_NAME not in names
            listed = {e.name.decode() for e in vol.vfs.readdir(views.SNAPDIR_INO, 0)} - {".", ".."}
            assert listed == set(vol.snaps), f"{vol.name}: .snapshots lists {sorted(listed)}"
            for name, snap in vol.snaps.items():
                got = read_view(vol.vfs, snapshot_root(vol.vfs, name))
                assert got == snap.tree, f"{vol.name}@{name}:\n got {show(got)}\nwant {show(snap.tree)}"
                info = snapshots.get(vol.engine, name)
                assert sorted(info.holds) == sorted(snap.holds)
            report = check_engine(vol.engine)
            assert report.clean, f"{vol.name}: {report.render()}"

    def teardown(self) -> None:
        logging.getLogger("galleonfs").removeHandler(self.loud)
        for vol in self.vols.values():
            vol.engine.close()
        shutil.rmtree(self.base, ignore_errors=True)


def check_diff(got: set[tuple[str, str, str]], a: Tree, b: Tree,
               log: list[frozenset[int] | None]) -> None:
    """``got`` is exactly what changed from ``a`` to ``b``, given the inodes each operation
    in between changed: created (+) and deleted (-) paths, renamed (R) inodes that changed,
    and modified (M) ones: required where the inode changed (its ctime moved), allowed
    where a restore rewrote records."""
    restored = any(entry is None for entry in log)
    # A restore puts records back as they were, so only what changed after the last one
    # surely differs (its ctime moved); earlier changes may or may not have been undone.
    last_restore = max((i for i, entry in enumerate(log) if entry is None), default=-1)
    touched: set[int] = set().union(*(e for e in log[last_restore + 1:] if e is not None))
    by_ino_a = {ino: p for p, (ino, _) in a.items()}
    by_ino_b = {ino: p for p, (ino, _) in b.items()}
    must: set[tuple[str, str, str]] = set()
    may: set[tuple[str, str, str]] = set()
    for ino, path in by_ino_b.items():
        if ino not in by_ino_a:
            must.add(("+", path, ""))
    for ino, path in by_ino_a.items():
        if ino not in by_ino_b:
            must.add(("-", path, ""))
            continue
        pb = by_ino_b[ino]
        entry = ("R", path, pb) if pb != path else ("M", path, "")
        if ino in touched or (restored and a[path][1] != b[pb][1]):
            must.add(entry)
        elif restored:
            may.add(entry)
    assert must <= got, f"diff lacks {sorted(must - got)}; got {sorted(got)}"
    assert got <= must | may, f"diff has extra {sorted(got - must - may)}; expected {sorted(must)}"


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small segments and journal files, so that a short run rolls both and GC has work."""
    monkeypatch.setattr(limits, "segment_size_max_bytes", 24 * 1024)
    monkeypatch.setattr(limits, "journal_file_size_max_bytes", 16 * 1024)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_snapshot_model(tmp_path: Path, small_files: None) -> None:
    if PROFILE_NAME not in PROFILES:
        pytest.fail(f"GALLEONFS_HYPOTHESIS_PROFILE={PROFILE_NAME!r}: known profiles are "
                    f"{', '.join(sorted(PROFILES))}")
    started = time.monotonic()
    run_state_machine_as_test(lambda: SnapshotModel(tmp_path), settings=PROFILES[PROFILE_NAME])
    print(f"snapshot model: {time.monotonic() - started:.1f} s")
