"""Power loss in the middle of snapshot create, snapshot delete and clone (in process).

The volume runs on ``FaultyStorage`` (what a disk keeps after a power cut); a named crash
point stops the operation at its nth hit (every journal record, every sync, every
checkpoint step it makes), the power is cut (cleanly, or keeping a random part of what was
not synced), and the volume is reopened. It must hold either the state before the
operation or the state after it, nothing in between:

* every snapshot that is there reads back exactly the tree it was taken of, and the live
  tree is unchanged (a snapshot operation never changes it);
* a delete cut short is either not there (the snapshot intact) or finished at the next
  open (``resume``), never a half-deleted snapshot; once its commit returned, it is gone;
* a create whose commit returned is there;
* a clone's hold on the snapshot never names a clone that is not complete;
* fsck is clean (no leaked or missing block, no refcount error, no history version that
  no snapshot needs), and the volume takes new snapshots and deletes after the recovery.

Half the cases cut the power a second time while the next open recovers (replay, the
resumed delete, the checkpoint), as ``test_power_loss`` does.

Deletes run in chunks of two history versions (``snapshots.CHUNK``), so that one delete
takes many journal records and the cut can fall between any two of them.
"""

from __future__ import annotations

import logging
import random
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from galleonfs.engine import clones, crashpoints, snapshots
from galleonfs.engine.crashpoints import SimulatedCrash
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import check_engine, fsck
from galleonfs.errors import NotFound
from galleonfs.testing.faulty import FaultyStorage, copy_volume
from galleonfs.vfs import views
from galleonfs.vfs.vfs import ROOT_CTX, SetAttr, Vfs

BS = 4096
POINTS = (
    "journal.after_append_before_sync",
    "segment.after_append",
    "commit.after_data_sync_before_journal_sync",
    "checkpoint.before_meta_commit",
    "checkpoint.after_meta_commit",
)
NTH_MAX = 40                     # no operation here hits one point more often
RECOVERY_POINTS = ("journal.after_append_before_sync", "commit.after_data_sync_before_journal_sync",
                   "checkpoint.before_meta_commit", "checkpoint.after_meta_commit")
recovery_crashes: list[str] = []   # volumes whose recovery a second power cut interrupted

Tree = dict[str, bytes | None]   # path -> content (None: a directory)


# --- building the volume ---------------------------------------------------------------------------
class Builder:
    def __init__(self, engine: Engine, rng: random.Random) -> None:
        self.engine, self.rng = engine, rng
        self.vfs = Vfs(engine, atime=False)

    def _parent(self, path: str) -> tuple[int, bytes]:
        head, _, name = path.rpartition("/")
        if not head:
            return 1, name.encode()
        inode = self.vfs.lookup(1, head.encode())
        self.vfs.forget([(inode.ino, 1)])
        return inode.ino, name.encode()

    def _ino(self, path: str) -> int:
        inode = self.vfs.lookup(*self._parent(path))
        self.vfs.forget([(inode.ino, 1)])
        return inode.ino

    def mkdir(self, path: str) -> None:
        self.vfs.forget([(self.vfs.mkdir(*self._parent(path), 0o755, ROOT_CTX).ino, 1)])

    def write(self, path: str, blocks: int, offset: int = 0) -> None:
        try:
            ino = self._ino(path)
        except NotFound:
            inode = self.vfs.create(*self._parent(path), 0o644, ROOT_CTX)
            self.vfs.release(inode.ino)
            self.vfs.forget([(inode.ino, 1)])
            ino = inode.ino
        self.vfs.write(ino, offset, self.rng.randbytes(blocks * BS - self.rng.randrange(0, 100)))

    def truncate(self, path: str, size: int) -> None:
        self.vfs.setattr(self._ino(path), SetAttr(size=size))

    def unlink(self, path: str) -> None:
        self.vfs.unlink(*self._parent(path))

    def rename(self, src: str, dst: str) -> None:
        self.vfs.rename(*self._parent(src), *self._parent(dst), 0, ROOT_CTX)


def read_tree(vfs: Vfs, root: int = 1) -> Tree:
    """The tree under ``root`` (live, or a snapshot's view), every block read and verified."""
    out: Tree = {}

    def walk(ino: int, prefix: str) -> None:
        for entry in vfs.readdir(ino, 0):
            if entry.name in (b".", b".."):
                continue
            path = prefix + entry.name.decode()
            if stat.S_ISDIR(entry.inode.mode):
                out[path] = None
                walk(entry.inode.ino, path + "/")
            else:
                out[path] = vfs.read(entry.inode.ino, 0, entry.inode.size + 1)

    walk(root, "")
    return out


def snapshot_trees(engine: Engine) -> dict[str, Tree]:
    """Every snapshot the volume shows, read through ``.snapshots/<name>`` as a user would."""
    vfs = Vfs(engine, atime=False)
    names = sorted(e.name.decode() for e in vfs.readdir(views.SNAPDIR_INO, 0))
    names = [n for n in names if n not in (".", "..")]
    assert names == sorted(s.name for s in snapshots.snapshots(engine))
    out = {}
    for name in names:
        root = vfs.lookup(views.SNAPDIR_INO, name.encode(), ROOT_CTX)
        out[name] = read_tree(vfs, root.ino)
        vfs.forget([(root.ino, 1)])
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Tree, dict[str, Tree]]:
    """A volume with snapshots ``old`` and ``mid`` and changes after each: files created,
    overwritten, truncated, renamed and deleted, several blocks each, so that deleting a
    snapshot drops many history versions and releases blocks."""
    path = str(tmp_path_factory.mktemp("snapshot-crash") / "base")
    Engine.create(path, size=64 << 20, block_size=BS)
    engine = Engine.open(path)
    b = Builder(engine, random.Random(4))
    b.mkdir("d")
    for i in range(5):
        b.write(f"f{i}", 1 + i % 3)
    b.write("d/g", 2)
    engine.end_op()
    snapshots.create(engine, "old")
    b.write("f0", 2)
    b.unlink("f1")
    b.truncate("f2", 10)
    b.rename("f3", "d/f3")
    for i in range(5, 9):
        b.write(f"f{i}", 3)
    snapshots.create(engine, "mid")
    for i in range(5, 9):
        b.write(f"f{i}", 2, offset=BS)            # versions only mid needs ...
    b.unlink("f5")
    b.unlink("f6")                                 # ... and blocks only mid holds
    b.write("f4", 1)
    b.write("new", 2)
    live = read_tree(b.vfs)
    trees = snapshot_trees(engine)
    assert sorted(trees) == ["mid", "old"]
    engine.close()
    assert fsck(path).clean
    return path, live, trees


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "CHUNK", 2)


Op = Callable[[Engine], None]


def crash_run(base_dir: str, work: str, op: Op, point: str, nth: int,
              rng: random.Random) -> tuple[bool, bool]:
    """Copy the base volume, run ``op`` with ``point`` armed at its nth hit, cut the power.

    Returns (crashed, completed): ``completed`` when ``op`` returned (its commit with it).
    """
    copy_volume(base_dir, work)
    storage = FaultyStorage()
    storage.snapshot_meta(work)
    engine = Engine.open(work, storage=storage)
    crashpoints.arm(point, nth)
    try:
        op(engine)
        crashed = False
    except SimulatedCrash:
        crashed = True
    finally:
        crashpoints.disarm_all()
    engine.close(checkpoint=False)
    storage.power_cut(rng if rng.random() < 0.7 else None)
    if rng.random() < 0.5:
        # The power goes again while the next open recovers (replays, finishes a delete,
        # checkpoints): the open after that must come to an allowed state all the same.
        # Mostly at a journal append: the resumed delete's records are the ones to cut.
        point = RECOVERY_POINTS[0] if rng.random() < 0.7 else rng.choice(RECOVERY_POINTS[1:])
        crashpoints.arm(point, rng.randrange(1, 3))
        try:
            Engine.open(work, storage=storage).close(checkpoint=False)
        except SimulatedCrash:
            recovery_crashes.append(work)
        finally:
            crashpoints.disarm_all()
        storage.power_cut(rng if rng.random() < 0.7 else None)
    return crashed, not crashed


def snapshots_named(engine: Engine) -> set[str]:
    return {s.name for s in snapshots.snapshots(engine)}


def check_recovered(work: str, live: Tree, trees: dict[str, Tree], allowed: list[set[str]],
                    context: str) -> Engine:
    engine = Engine.open(work)
    report = check_engine(engine)
    assert report.clean, f"{context}\n{report.render()}"
    # fsck accepts a snapshot marked "deleting" (a state resume finishes); after an open
    # none may be left
    left = [s.name for s in snapshots.all_snapshots(engine.meta) if s.state != "ready"]
    assert not left, f"{context}: the open left {left} half deleted"
    got = snapshot_trees(engine)
    assert set(got) in allowed, f"{context}: snapshots {sorted(got)}, allowed {allowed}"
    for name, tree in got.items():
        assert tree == trees[name], f"{context}: snapshot {name} does not read back as taken"
    assert read_tree(Vfs(engine, atime=False)) == live, f"{context}: the live tree changed"
    return engine


def then_more_snapshot_work(engine: Engine, context: str) -> None:
    """After a recovery the volume goes on: writes (which must not show in any snapshot), a
    new snapshot, then every snapshot deleted."""
    taken = snapshot_trees(engine)
    b = Builder(engine, random.Random(context))
    b.write("f0", 3)
    b.write("later", 1)
    engine.end_op()
    live = read_tree(b.vfs)
    assert snapshot_trees(engine) == taken, f"{context}: a write after the recovery shows in a snapshot"
    snapshots.create(engine, "after")
    for snap in snapshots.snapshots(engine):
        if not snap.holds:
            snapshots.delete(engine, snap.name)
    report = check_engine(engine)
    assert report.clean, f"{context} (after more work)\n{report.render()}"
    assert read_tree(Vfs(engine, atime=False)) == live
    engine.close()


def each_crash(base_dir: str, tmp_path: Path, op: Op,
               check: Callable[[str, bool, bool, str], None]) -> int:
    """Crash ``op`` at every hit of every point (and once not at all); return the cases."""
    cases = 0
    rng = random.Random(7)
    for point in POINTS:
        for nth in range(1, NTH_MAX + 1):
            work = str(tmp_path / f"{point}-{nth}")
            crashed, completed = crash_run(base_dir, work, op, point, nth, rng)
            check(work, crashed, completed, f"{point} #{nth}")
            shutil.rmtree(work)
            cases += 1
            if not crashed:
                break                          # the point is hit fewer than nth times
        else:
            pytest.fail(f"{point} was hit more than {NTH_MAX} times")
    return cases


# --- the tests ---------------------------------------------------------------------------------------
def test_power_loss_during_snapshot_create(base: tuple[str, Tree, dict[str, Tree]],
                                           tmp_path: Path) -> None:
    base_dir, live, trees = base
    trees = {**trees, "new": live}
    outcomes: set[bool] = set()

    def op(engine: Engine) -> None:
        snapshots.create(engine, "new")
        engine.commit()                        # what the mount worker does before answering

    def check(work: str, crashed: bool, completed: bool, context: str) -> None:
        allowed = [{"old", "mid", "new"}] if completed else [{"old", "mid"}, {"old", "mid", "new"}]
        engine = check_recovered(work, live, trees, allowed, context)
        outcomes.add("new" in snapshots_named(engine))
        then_more_snapshot_work(engine, context)

    assert each_crash(base_dir, tmp_path, op, check) >= len(POINTS)
    assert outcomes == {False, True}, "the cuts should leave both the old and the new state"


@pytest.mark.parametrize("victim", ["old", "mid"])
def test_power_loss_during_snapshot_delete(base: tuple[str, Tree, dict[str, Tree]], tmp_path: Path,
                                           small_chunks: None, victim: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    base_dir, live, trees = base
    keep = {"old", "mid"} - {victim}
    records = []

    def op(engine: Engine) -> None:
        before = engine.appended_lsn
        snapshots.delete(engine, victim)
        engine.commit()
        records.append(engine.appended_lsn - before)

    def check(work: str, crashed: bool, completed: bool, context: str) -> None:
        allowed = [keep] if completed else [keep, keep | {victim}]
        then_more_snapshot_work(check_recovered(work, live, trees, allowed, context), context)

    recovery_crashes.clear()
    with caplog.at_level(logging.INFO, logger="galleonfs.engine.engine"):
        each_crash(base_dir, tmp_path, op, check)
    assert records and records[0] >= 4, f"the delete took {records} journal records: too few to cut"
    resumed = [r for r in caplog.records if f"finished deleting snapshot {victim}" in r.getMessage()]
    assert resumed, "no case recovered a delete cut in the middle (resume never ran)"
    assert recovery_crashes, "no case cut the power while a resumed delete ran"


def test_power_loss_during_clone(base: tuple[str, Tree, dict[str, Tree]], tmp_path: Path) -> None:
    """The clone's own volume is written with real syncs (no power model); the origin's
    state around it is what the cut may lose. A hold that survives names a whole clone."""
    base_dir, live, trees = base
    outcomes: set[bool] = set()

    def op(engine: Engine) -> None:
        clones.create(engine, "mid", engine.dir + "-clone", clone_id="c1", name="c1")

    def check(work: str, crashed: bool, completed: bool, context: str) -> None:
        target = work + "-clone"
        engine = check_recovered(work, live, trees, [{"old", "mid"}], context)
        holds = snapshots.get(engine, "mid").holds
        outcomes.add(bool(holds))
        assert holds in ([], ["c1"]), f"{context}: holds {holds}"
        if completed:
            assert holds == ["c1"], f"{context}: a clone that returned has no hold"
        if holds:
            clone = Engine.open(target)
            assert read_tree(Vfs(clone, atime=False)) == trees["mid"], f"{context}: the clone"
            assert check_engine(clone).clean, context
            clone.close()
        else:
            shutil.rmtree(target, ignore_errors=True)
            clones.create(engine, "mid", target, clone_id="c1", name="c1")     # a retry works
        clone = Engine.open(target)
        clones.flatten(clone)
        clone.close()
        clones.release(engine, "mid", "c1")
        then_more_snapshot_work(engine, context)
        clone = Engine.open(target)
        assert read_tree(Vfs(clone, atime=False)) == trees["mid"], f"{context}: flattened clone"
        assert check_engine(clone).clean
        clone.close()
        shutil.rmtree(target)

    each_crash(base_dir, tmp_path, op, check)
    assert outcomes == {False, True}, "the cuts should leave clones with and without a hold"
