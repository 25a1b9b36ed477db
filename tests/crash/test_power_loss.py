"""Power loss, in process: break one step, cut the power, reopen, and check (the borg habit).

The engine runs on ``FaultyStorage``, which remembers what a real disk would still hold
after a power cut. A random workload of VFS operations (creates, writes of whole and
partial blocks, overwrites, zeros, repeats, truncations, renames, unlinks of closed and of
open files, commits, commits that overlap later requests as the trio committer's do,
checkpoints, GC, steps of the paced reclaimer) runs against a model, with small journal
files and segments so that both roll. A named crash point stops it at an exact step
(``SimulatedCrash``); the power is cut (unsynced appends lost, or kept in part with holes
and a garbage tail; unsynced directory entries lost or kept at random), sometimes a second
time while the recovery checkpoints; the volume is reopened and must be

* consistent: fsck clean, every file readable (a frame that fails its checksum would be
  an error, never data);
* durable: the journal is replayed in order and stops at the torn tail, so the volume
  holds exactly the model's state after some operation between the last completed commit
  and the crash. Nothing from before the last commit is missing, nothing is half applied.
  With a clean power cut (nothing unsynced survives) it is exactly the committed state.

Then the workload goes on on the recovered volume (writing after a recovery is where
leftovers of the crash bite), crashes again, and finally closes cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from galleonfs import limits
from galleonfs.engine import crashpoints
from galleonfs.engine.crashpoints import SimulatedCrash
from galleonfs.engine.engine import Engine, ReclaimReport
from galleonfs.engine.fsck import check_engine, fsck
from galleonfs.meta import schema
from galleonfs.meta.schema import Db
from galleonfs.testing.faulty import FaultyStorage, copy_volume
from galleonfs.vfs import orphans
from galleonfs.vfs.vfs import ROOT_CTX, SetAttr, Vfs

BS = 4096
ENGINE_DIR = Path(__file__).resolve().parents[2] / "galleonfs" / "engine"
CRASH_POINTS = [
    "journal.after_append_before_sync",
    "segment.after_append",
    "commit.after_data_sync_before_journal_sync",
    "checkpoint.before_meta_commit",
    "checkpoint.after_meta_commit",
]
# nth hits to crash at, per point: small and large, so the crash comes early (little on
# disk, first journal file) and late (after rolls, checkpoints, GC).
NTH = {
    "journal.after_append_before_sync": (1, 2, 9, 40, 150),
    "segment.after_append": (1, 3, 20, 70),
    "commit.after_data_sync_before_journal_sync": (1, 2, 5, 12),
    "checkpoint.before_meta_commit": (1, 2, 4),
    "checkpoint.after_meta_commit": (1, 2, 4),
}
# Hit only while a volume recovers (the workload never gets there).
RECOVERY_ONLY_POINTS = ["recovery.after_restoring_inline_frames"]
RECOVERY_CRASH_POINTS = [
    *RECOVERY_ONLY_POINTS,
    "commit.after_data_sync_before_journal_sync",
    "checkpoint.before_meta_commit",
    "checkpoint.after_meta_commit",
]
FILES = [f"f{i}" for i in range(8)] + [f"d/g{i}" for i in range(4)]
FILE_SIZE_MAX = 6 * BS
OPS_MAX = 500
SEEDS_PER_CASE = 3

State = frozenset[tuple[str, int, str]]


def digest(files: dict[str, bytes], dirs: set[str]) -> State:
    out = {(name, len(data), hashlib.sha1(data).hexdigest()) for name, data in files.items()}
    return frozenset(out | {(name, -1, "dir") for name in dirs})


def describe(state: State) -> str:
    return ", ".join(f"{n}:{'dir' if size < 0 else size}" for n, size, _ in sorted(state))


def test_every_crash_point_is_tested() -> None:
    """A crash point added to the engine must be added here too."""
    found = set()
    for path in ENGINE_DIR.glob("*.py"):
        found |= set(re.findall(r'crashpoints\.hit\("([^"]+)"\)', path.read_text()))
    assert found == set(CRASH_POINTS) | set(RECOVERY_ONLY_POINTS)


class Workload:
    """Random VFS operations, each checked against a model of the file tree.

    ``states`` holds the model's state after each completed operation and ``durable`` the
    index of the one the last completed commit made durable.
    """

    def __init__(self, engine: Engine, rng: random.Random, files: dict[str, bytes],
                 dirs: set[str]) -> None:
        self.engine = engine
        self.vfs = Vfs(engine, atime=False)
        self.rng = rng
        self.files = dict(files)
        self.dirs = set(dirs)
        self.states = [digest(self.files, self.dirs)]
        self.durable = 0
        self.maybe_synced = 0                # the last state a sync may have covered
        self.pending = self.states[0]        # the state if the current operation completes
        self.ops = 0
        self.trace: list[str] = []
        self.held: list[int] = []            # unlinked files still open (orphans)

    # --- helpers -----------------------------------------------------------------------------
    def _parent(self, path: str) -> tuple[int, bytes]:
        head, _, name = path.rpartition("/")
        if not head:
            return 1, name.encode()
        inode = self.vfs.lookup(1, head.encode())
        self.vfs.forget([(inode.ino, 1)])
        return inode.ino, name.encode()

    def _ino(self, path: str) -> int:
        parent, name = self._parent(path)
        raw = self.vfs.meta.get(Db.DIRENTS, schema.dirent_key(parent, name))
        assert raw is not None, path
        return schema.decode_dirent(raw)[0]

    def _do(self, what: str, files: dict[str, bytes], dirs: set[str], action: Callable[[], None]) -> None:
        """Run one operation; on success the model becomes ``files``/``dirs``.

        If it crashes, its record may or may not have reached the journal: the caller
        adds the would-be state to the acceptable outcomes.
        """
        self.trace.append(what)
        self.pending = digest(files, dirs)
        action()
        self.files, self.dirs = files, dirs
        self.states.append(self.pending)

    def _committed(self) -> None:
        self.durable = self.maybe_synced = len(self.states) - 1

    def _overlapped_commit(self) -> None:
        """A commit as the trio ``Committer`` runs it: requests go on while it syncs.

        It makes durable what was appended when it began; the sync may cover more (the
        files it syncs were appended to since), but need not.
        """
        self.trace.append("commit (overlapped)")
        covered = len(self.states) - 1
        batch = self.engine.begin_commit()
        for _ in range(self.rng.randrange(1, 4)):
            if self.files:
                self._write(self.rng.choice(sorted(self.files)))
        self.trace.append("commit (overlapped) syncs")
        self.pending = self.states[-1]
        self.maybe_synced = len(self.states) - 1
        batch.run()
        self.engine.end_commit(batch)
        self.durable = max(self.durable, covered)

    # --- operations --------------------------------------------------------------------------
    def step(self) -> None:
        self.ops += 1
        rng = self.rng
        if "d" not in self.dirs:
            self._mkdir()
            return
        existing = sorted(self.files)
        roll = rng.random()
        if not existing or (roll < 0.15 and len(existing) < len(FILES)):
            self._create(rng.choice([f for f in FILES if f not in self.files]))
        elif roll < 0.50:
            self._write(rng.choice(existing))
        elif roll < 0.58:
            self._truncate(rng.choice(existing))
        elif roll < 0.66:
            self._rename(rng.choice(existing), rng.choice(FILES))
        elif roll < 0.69:
            self._unlink(rng.choice(existing), keep_open=False)
        elif roll < 0.72:
            self._unlink(rng.choice(existing), keep_open=True)
        elif roll < 0.74 and self.held:
            self._release_held()
        elif roll < 0.76 and self.held:
            self._write_held()
        elif roll < 0.81:
            self._overlapped_commit()
        elif roll < 0.86:
            self.trace.append("commit")
            self.pending = self.states[-1]
            if rng.random() < 0.5:
                self.engine.commit()                   # blocking: segments synced too
            else:
                batch = self.engine.begin_commit()      # an fsync's: inline frames not synced
                batch.run()
                self.engine.end_commit(batch)
            self._committed()
        elif roll < 0.95:
            self.trace.append("checkpoint")
            self.pending = self.states[-1]
            self.engine.commit()
            self._committed()
            self.engine.checkpoint()
        elif self.ops % 2:          # GC or reclaim by parity: same rng draws up to here
            self.trace.append("gc")
            self.pending = self.states[-1]
            self.engine.commit()
            self._committed()
            self.engine.gc()
        else:
            self._reclaim()

    def _reclaim(self) -> None:
        """The paced reclaimer as the mount worker runs it: a few steps (all dead bytes are
        fair game here), interleaved with the next operations, not committed first."""
        self.trace.append("reclaim steps")
        self.pending = self.states[-1]
        report = ReclaimReport()
        for _ in range(self.rng.randrange(1, 6)):
            if not (self.engine.reclaimer.in_progress or self.engine.reclaimer.needed(0.0, 0)):
                break
            self.engine.reclaimer.step(report, budget_bytes=self.rng.choice([4 * BS, 16 * BS]))

    def _mkdir(self) -> None:
        def action() -> None:
            self.vfs.forget([(self.vfs.mkdir(1, b"d", 0o755, ROOT_CTX).ino, 1)])

        self._do("mkdir d", dict(self.files), self.dirs | {"d"}, action)

    def _create(self, path: str) -> None:
        def action() -> None:
            parent, name = self._parent(path)
            ino = self.vfs.create(parent, name, 0o644, ROOT_CTX).ino
            self.vfs.release(ino)
            self.vfs.forget([(ino, 1)])

        self._do(f"create {path}", {**self.files, path: b""}, set(self.dirs), action)

    def _write(self, path: str) -> None:
        rng = self.rng
        old = self.files[path]
        offset = rng.choice([0, len(old), rng.randrange(0, len(old) + 1),
                             len(old) + rng.randrange(1, 2 * BS)])
        offset = min(offset, FILE_SIZE_MAX - 1)
        length = min(rng.choice([1, 100, BS, BS + 1, 3 * BS - 7, rng.randrange(1, 3 * BS)]),
                     FILE_SIZE_MAX - offset)
        if rng.random() < 0.15:
            data = bytes(length)                        # zeros: stored as a hole
        elif rng.random() < 0.15 and old:
            data = (old * (length // len(old) + 1))[:length]   # repeats: dedup
        else:
            data = rng.randbytes(length)
        new = bytearray(old.ljust(offset, b"\0"))
        new[offset:offset + length] = data

        def action() -> None:
            self.vfs.write(self._ino(path), offset, data)

        self._do(f"write {path} {offset}+{length}", {**self.files, path: bytes(new)},
                 set(self.dirs), action)

    def _truncate(self, path: str) -> None:
        old = self.files[path]
        size = self.rng.randrange(0, min(len(old) + BS, FILE_SIZE_MAX) + 1)
        new = old[:size].ljust(size, b"\0")

        def action() -> None:
            self.vfs.setattr(self._ino(path), SetAttr(size=size))

        self._do(f"truncate {path} {size}", {**self.files, path: new}, set(self.dirs), action)

    def _rename(self, src: str, dst: str) -> None:
        if src == dst:
            return
        files = dict(self.files)
        files[dst] = files.pop(src)

        def action() -> None:
            sp, sn = self._parent(src)
            dp, dn = self._parent(dst)
            self.vfs.rename(sp, sn, dp, dn, 0)

        self._do(f"rename {src} {dst}", files, set(self.dirs), action)

    def _unlink(self, path: str, keep_open: bool) -> None:
        """Unlink; with ``keep_open`` the file stays open, an orphan until released."""
        files = dict(self.files)
        del files[path]

        def action() -> None:
            if keep_open:
                ino = self._ino(path)
                self.vfs.open(ino, True)
                self.held.append(ino)
            parent, name = self._parent(path)
            self.vfs.unlink(parent, name)

        self._do(f"unlink {path}{' (open)' if keep_open else ''}", files, set(self.dirs), action)

    def _release_held(self) -> None:
        """Close an unlinked file: its blocks are freed now (or at the next mount)."""
        ino = self.held.pop(self.rng.randrange(len(self.held)))
        self._do(f"release orphan {ino}", dict(self.files), set(self.dirs),
                 lambda: self.vfs.release(ino))

    def _write_held(self) -> None:
        """Write to an unlinked, still open file: invisible in the tree, but stored."""
        ino = self.held[self.rng.randrange(len(self.held))]
        data = self.rng.randbytes(self.rng.randrange(1, 2 * BS))
        offset = self.rng.randrange(0, FILE_SIZE_MAX - len(data))
        self._do(f"write orphan {ino}", dict(self.files), set(self.dirs),
                 lambda: self.vfs.write(ino, offset, data))


def read_tree(engine: Engine) -> tuple[dict[str, bytes], set[str]]:
    """Everything the volume holds, read through the VFS (every block verified)."""
    vfs = Vfs(engine, atime=False)
    files: dict[str, bytes] = {}
    dirs: set[str] = set()

    def walk(ino: int, prefix: str) -> None:
        for entry in vfs.readdir(ino, 0):
            if entry.name in (b".", b".."):
                continue
            path = prefix + entry.name.decode()
            if stat.S_ISDIR(entry.inode.mode):
                dirs.add(path)
                walk(entry.inode.ino, path + "/")
            else:
                files[path] = vfs.read(entry.inode.ino, 0, entry.inode.size)

    walk(1, "")
    return files, dirs


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small journal files and segments, so that a short workload rolls both and GC has work;
    deletions and truncations in chunks of two blocks, so that they take several records
    (and a crash can leave them half done, for the next mount to finish)."""
    monkeypatch.setattr(limits, "journal_file_size_max_bytes", 8 * 1024)
    monkeypatch.setattr(limits, "segment_size_max_bytes", 48 * 1024)
    monkeypatch.setattr(orphans, "PURGE_CHUNK", 2)


def new_volume(tmp_path: Path) -> tuple[str, FaultyStorage]:
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=64 << 20, block_size=BS)
    storage = FaultyStorage()
    storage.snapshot_meta(vol)
    return vol, storage


def recover_and_check(vol: str, storage: FaultyStorage, work: Workload, crashed: bool,
                      seed: int, clean_cut: bool) -> tuple[Engine, dict[str, bytes], set[str]]:
    """Cut the power, reopen, check consistency and durability; return the open engine."""
    candidates = work.states[work.durable:]
    if crashed:
        candidates = [*candidates, work.pending]
    rng = random.Random(seed)
    lost = storage.power_cut(None if clean_cut else rng)
    if rng.random() < 0.4:
        # The power goes again while the recovery checkpoints what it replayed: the next
        # recovery must come to the same state.
        crashpoints.arm(rng.choice(RECOVERY_CRASH_POINTS))
        with contextlib.suppress(SimulatedCrash):        # no crash if nothing to replay
            Engine.open(vol, storage=storage).close(checkpoint=False)
        crashpoints.disarm_all()
        lost += ["(power cut during recovery)", *storage.power_cut(rng)]
    engine = Engine.open(vol, storage=storage)
    context = (f"seed {seed}, {len(work.trace)} operations, last ones: {work.trace[-8:]}\n"
               f"replay: {engine.replay}\npower cut lost: {lost}")
    report = check_engine(engine)
    assert report.clean, report.render() + "\n" + context
    files, dirs = read_tree(engine)
    state = digest(files, dirs)
    if clean_cut:
        # Nothing unsynced survives, and only a commit syncs the journal: exactly the
        # state of the last completed commit (or one its sync may have covered).
        candidates = work.states[work.durable:max(work.durable, work.maybe_synced) + 1]
    assert state in candidates, (
        f"recovered {describe(state)}\ncommitted {describe(work.states[work.durable])}\n{context}")
    # What a mount does next: finish deleting the files that were open when the power went.
    Vfs(engine).purge_orphans()
    assert engine.meta.count(Db.ORPHANS) == 0
    report = check_engine(engine)
    assert report.clean, report.render() + "\n" + context
    assert digest(*read_tree(engine)) == state
    return engine, files, dirs


def run_until_crash(work: Workload) -> bool:
    """Run operations until the armed point fires (True) or the budget is spent."""
    try:
        while work.ops < OPS_MAX:
            work.step()
    except SimulatedCrash:
        return True
    return False


def crash_cases() -> list[tuple[str, int, int]]:
    cases = []
    seed = 1
    for point in CRASH_POINTS:
        for nth in NTH[point]:
            for _ in range(SEEDS_PER_CASE):
                cases.append((point, nth, seed))
                seed += 1
    return cases


@pytest.mark.parametrize(("point", "nth", "seed"), crash_cases())
def test_crash_point_then_power_cut(tmp_path: Path, small_files: None, point: str, nth: int,
                                   seed: int) -> None:
    vol, storage = new_volume(tmp_path)
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    engine = Engine.open(vol, storage=storage)
    for round_ in range(2):
        work = Workload(engine, rng, files, dirs)
        crashpoints.arm(point, nth if round_ == 0 else rng.randrange(1, nth + 2))
        crashed = run_until_crash(work)
        crashpoints.disarm_all()
        assert crashed, f"{point} was not hit {nth} times in {OPS_MAX} operations"
        engine.close(checkpoint=False)
        clean_cut = seed % 3 == 0
        engine, files, dirs = recover_and_check(vol, storage, work, crashed, seed * 10 + round_,
                                                clean_cut)
    # Last round: no crash, a clean close, and everything is there.
    work = Workload(engine, rng, files, dirs)
    for _ in range(30):
        work.step()
    engine.close()
    report = fsck(vol)
    assert report.clean, report.render()
    engine = Engine.open(vol, storage=storage)
    assert digest(*read_tree(engine)) == work.states[-1]
    engine.close()


@pytest.mark.parametrize("seed", range(1000, 1016))
def test_power_cut_without_a_crash_point(tmp_path: Path, small_files: None, seed: int) -> None:
    """The power goes at a random moment between operations; twice in a row."""
    vol, storage = new_volume(tmp_path)
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    engine = Engine.open(vol, storage=storage)
    for round_ in range(2):
        work = Workload(engine, rng, files, dirs)
        for _ in range(rng.randrange(1, 120)):
            work.step()
        engine.close(checkpoint=False)
        engine, files, dirs = recover_and_check(vol, storage, work, False, seed * 10 + round_,
                                                clean_cut=seed % 2 == 0)
    engine.close()
    report = fsck(vol)
    assert report.clean, report.render()


def test_rename_over_a_big_file_is_consistent_after_every_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 after each record of a rename that replaces a big file (deleted in chunks).

    Every record must leave a consistent volume: the rename done or not, the old target
    an orphan the next mount finishes deleting. (The first chunk's record used to be
    written from inside the rename, after the target's entry was gone and before the
    source's new one existed: fsck found an index entry without a name.)
    """
    monkeypatch.setattr(orphans, "PURGE_CHUNK", 2)
    base = str(tmp_path / "base")
    Engine.create(base, size=64 << 20, block_size=BS)
    engine = Engine.open(base)
    vfs = Vfs(engine, atime=False)
    big, small = random.Random(1).randbytes(6 * BS), b"small"
    for name, data in ((b"big", big), (b"small", small)):
        ino = vfs.create(1, name, 0o644, ROOT_CTX).ino
        vfs.write(ino, 0, data)
        vfs.release(ino)
        vfs.forget([(ino, 1)])
    engine.close()
    before = digest({"big": big, "small": small}, set())
    after = digest({"big": small}, set())
    for nth in range(1, 10):
        vol = str(tmp_path / f"crash{nth}")
        copy_volume(base, vol)
        engine = Engine.open(vol)
        crashpoints.arm("journal.after_append_before_sync", nth)
        try:
            Vfs(engine, atime=False).rename(1, b"small", 1, b"big", 0)
            crashed = False
        except SimulatedCrash:
            crashed = True
        crashpoints.disarm_all()
        engine.close(checkpoint=False)          # as kill -9 leaves it: every write() is there
        engine = Engine.open(vol)
        report = check_engine(engine)
        assert report.clean, f"crash after record {nth} of the rename:\n{report.render()}"
        assert digest(*read_tree(engine)) in (before, after)
        Vfs(engine).purge_orphans()
        report = check_engine(engine)
        assert report.clean, report.render()
        engine.close()
        if not crashed:
            break
