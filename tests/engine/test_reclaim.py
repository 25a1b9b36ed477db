"""The paced reclaimer (``engine/reclaim.py``): deleted data's space comes back, in bounded
steps, and nothing live is lost, not even by a power cut in the middle of it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from test_engine import make_volume, tree, write_file

from galleonfs import limits
from galleonfs.crypto.keys import KeySpec
from galleonfs.engine import clones, crashpoints, segments, snapshots
from galleonfs.engine.crashpoints import SimulatedCrash
from galleonfs.engine.engine import Engine, ReclaimReport
from galleonfs.engine.fsck import check_engine, fsck
from galleonfs.engine.reclaim import Pacer
from galleonfs.testing.faulty import FaultyStorage
from galleonfs.vfs.vfs import Vfs

BS = 16 * 1024
SEG = 256 * 1024            # small segments: a few files fill one
STEP = 48 * 1024            # a step reads a part of a segment: several steps per segment


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "segment_size_max_bytes", SEG)
    monkeypatch.setattr(limits, "reclaim_step_bytes", STEP)
    monkeypatch.setattr(limits, "reclaim_slack_bytes", 0)


def segment_bytes(engine: Engine) -> int:
    """What the data directory holds on the host, by file size."""
    return sum(os.path.getsize(engine.segments.path(s))
               for s in segments.list_segments(engine.storage, engine.data_dir))


def fill(vfs: Vfs, rng: random.Random, count: int) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {}
    for i in range(count):
        data = rng.randbytes(3 * BS + rng.randrange(BS))
        write_file(vfs, f"f{i:03d}", data)
        files[f"f{i:03d}"] = data
    return files


def delete_most(vfs: Vfs, files: dict[str, bytes | None], keep_every: int) -> dict[str, bytes | None]:
    kept = {}
    for i, name in enumerate(sorted(files)):
        if i % keep_every == 0:
            kept[name] = files[name]
        else:
            vfs.unlink(1, name.encode())
    return kept


def test_reclaim_brings_the_data_directory_within_the_bound_and_keeps_every_byte(
        tmp_path: Path, small: None) -> None:
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, random.Random(1), 90)
    engine.checkpoint()
    before = segment_bytes(engine)
    kept = delete_most(vfs, files, keep_every=3)       # each segment keeps about a third
    live = engine.reclaimer.usage().live
    assert engine.reclaimer.needed()

    report = engine.reclaim()

    assert report.skipped is None
    assert report.segments_emptied >= 10
    assert report.bytes_copied > 0
    assert not engine.reclaimer.needed()
    # Every copy is a live frame: about the third of the volume that stayed.
    assert report.bytes_copied <= live
    after = segment_bytes(engine)
    assert after <= 1.2 * live + SEG, (before, after, live)    # + the segment being written
    assert after < before / 2
    assert tree(vfs) == kept
    engine.close()
    assert fsck(vol).clean
    engine = Engine.open(vol)                 # no block cache: read from the new frames
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


def test_deleting_everything_gives_back_the_segment_being_written_too(
        tmp_path: Path, small: None) -> None:
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, random.Random(5), 20)
    assert segment_bytes(engine) > 4 * SEG
    for name in files:
        vfs.unlink(1, name.encode())
    assert engine.reclaim().bytes_copied == 0
    assert segment_bytes(engine) == 0
    assert tree(vfs) == {}
    engine.close()
    assert fsck(vol).clean


def test_an_encrypted_volume_reclaims_and_reads_back_through_its_keys(
        tmp_path: Path, small: None) -> None:
    """Frames move byte for byte: the AEAD binds the family and the block id, not the place."""
    spec = KeySpec(key_file=str(tmp_path / "kek"))
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=256 << 20, block_size=BS, keys=spec.manager())
    engine = Engine.open(vol, keys=spec.manager())
    vfs = Vfs(engine, atime=False)
    kept = delete_most(vfs, fill(vfs, random.Random(6), 40), keep_every=4)
    report = engine.reclaim()
    assert report.bytes_copied > 0 and report.skipped is None
    engine.close()
    assert fsck(vol, keys=spec.manager()).clean
    engine = Engine.open(vol, keys=spec.manager())
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


def test_a_snapshot_keeps_its_blocks_through_a_reclaim(tmp_path: Path, small: None) -> None:
    """Files deleted after a snapshot are still the snapshot's: their frames are live and are
    moved, not dropped; deleting the snapshot then lets the reclaimer give them back."""
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, random.Random(7), 40)
    snapshots.create(engine, "before")
    kept = delete_most(vfs, files, keep_every=4)
    assert not engine.reclaimer.needed()             # nothing died: the snapshot holds it all
    engine.reclaim(slack=0, ratio=0.0)
    assert check_engine(engine).clean
    assert tree(vfs) == kept
    snapshots.delete(engine, "before")
    assert engine.reclaimer.needed()
    engine.reclaim()
    assert segment_bytes(engine) <= 1.2 * engine.reclaimer.usage().live + SEG
    engine.close()
    assert fsck(vol).clean
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


def test_a_clone_made_between_two_steps_pins_the_half_read_segment(
        tmp_path: Path, small: None) -> None:
    """The clone reads the origin's frames where they were at clone time: the reclaimer must
    not empty (and the checkpoint delete) a segment it had begun before the clone."""
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    kept = delete_most(vfs, fill(vfs, random.Random(8), 40), keep_every=2)
    assert engine.reclaimer.step(ReclaimReport(), budget_bytes=BS)
    assert engine.reclaimer.in_progress                 # half way through a segment
    snapshots.create(engine, "base")
    clones.create(engine, "base", str(tmp_path / "clone"))
    before = set(segments.list_segments(engine.storage, engine.data_dir))
    engine.reclaim(ratio=0.0, slack=0)
    engine.checkpoint()
    pinned = {s for s in before if s <= max(x.pin_seg for x in snapshots.snapshots(engine))}
    assert pinned <= set(segments.list_segments(engine.storage, engine.data_dir))
    assert tree(vfs) == kept
    engine.close()
    clone = Engine.open(str(tmp_path / "clone"))
    assert tree(Vfs(clone, atime=False)) == kept
    clone.close()
    assert fsck(str(tmp_path / "clone")).clean
    assert fsck(vol).clean


def test_a_step_reads_at_most_its_budget_and_copies_only_live_frames(
        tmp_path: Path, small: None) -> None:
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, random.Random(2), 40)
    kept = delete_most(vfs, files, keep_every=2)
    frame_max = BS + 64
    while engine.reclaimer.in_progress or engine.reclaimer.needed():
        report = ReclaimReport()
        assert engine.reclaimer.step(report)
        assert report.bytes_scanned <= STEP + frame_max
        assert report.bytes_copied <= report.bytes_scanned
    engine.checkpoint()
    assert tree(vfs) == kept
    engine.close()
    assert fsck(vol).clean


def test_nothing_to_reclaim_below_the_rule(tmp_path: Path, small: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, random.Random(3), 30)
    vfs.unlink(1, b"f000")                   # one file of thirty: far below 0.2 x live
    assert not engine.reclaimer.needed()
    monkeypatch.setattr(limits, "reclaim_slack_bytes", 64 << 20)
    for name in list(files)[1:20]:
        vfs.unlink(1, name.encode())
    assert not engine.reclaimer.needed()     # the slack covers it
    assert engine.reclaim().steps == 0
    engine.close()


def test_steps_interleaved_with_writes_and_deletes_lose_nothing(tmp_path: Path, small: None) -> None:
    """Between two steps anything happens: frames in the half-read segment die, GC runs,
    files are rewritten with the same content (dedup onto frames about to move)."""
    rng = random.Random(4)
    vol = make_volume(tmp_path, block_size=BS)
    engine = Engine.open(vol)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, rng, 60)
    model = delete_most(vfs, files, keep_every=2)
    for round_ in range(300):
        report = ReclaimReport()
        if engine.reclaimer.in_progress or engine.reclaimer.needed():
            engine.reclaimer.step(report)
            assert report.skipped is None
        roll = rng.random()
        name = f"f{rng.randrange(80):03d}"
        if roll < 0.35:
            data = rng.choice([rng.randbytes(rng.randrange(1, 4 * BS)),
                               *[v for v in model.values() if v is not None][:3]])
            if name in model:
                vfs.unlink(1, name.encode())
            write_file(vfs, name, data)
            model[name] = data
        elif roll < 0.6 and name in model:
            vfs.unlink(1, name.encode())
            del model[name]
        elif roll < 0.65:
            engine.gc()
        elif roll < 0.75:
            engine.checkpoint()
        if round_ % 50 == 0:
            assert tree(vfs) == model
    engine.reclaim()
    assert tree(vfs) == model
    assert check_engine(engine).clean
    engine.close()
    assert fsck(vol).clean
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == model
    engine.close()


# --- power loss in the middle of a reclaim ---------------------------------------------------------
RECLAIM_CRASHES = [
    ("segment.after_append", 1), ("segment.after_append", 4), ("segment.after_append", 15),
    ("journal.after_append_before_sync", 1), ("journal.after_append_before_sync", 9),
    ("commit.after_data_sync_before_journal_sync", 2),
    ("checkpoint.before_meta_commit", 1), ("checkpoint.after_meta_commit", 1),
]


@pytest.mark.parametrize(("point", "nth"), RECLAIM_CRASHES)
@pytest.mark.parametrize("clean_cut", [True, False])
def test_power_cut_in_the_middle_of_a_reclaim_loses_nothing(
        tmp_path: Path, small: None, point: str, nth: int, clean_cut: bool) -> None:
    """The deletes are committed; the reclaim's copies, records and checkpoint are cut at a
    named point, then the power goes (unsynced appends lost or torn). Every surviving file
    reads back byte for byte, fsck is clean, and the next reclaim finishes the job."""
    rng = random.Random(hash((point, nth, clean_cut)) & 0xFFFF)
    vol = make_volume(tmp_path, block_size=BS)
    storage = FaultyStorage()
    storage.snapshot_meta(vol)
    engine = Engine.open(vol, storage=storage)
    vfs = Vfs(engine, atime=False)
    files = fill(vfs, rng, 60)
    engine.checkpoint()
    kept = delete_most(vfs, files, keep_every=3)
    engine.commit()                           # the deletes are durable; the reclaim is not
    crashpoints.arm(point, nth)
    try:
        steps = 0
        while engine.reclaimer.in_progress or engine.reclaimer.needed():
            engine.reclaimer.step(ReclaimReport())
            steps += 1
            if steps % 7 == 0:
                engine.commit()              # some of the reclaim is durable, some not
        engine.checkpoint()
    except SimulatedCrash:
        pass
    else:
        pytest.fail(f"{point} was not hit {nth} times during the reclaim")
    finally:
        crashpoints.disarm_all()
    engine.close(checkpoint=False)
    lost = storage.power_cut(None if clean_cut else rng)

    engine = Engine.open(vol, storage=storage)
    report = check_engine(engine)
    assert report.clean, report.render() + f"\npower cut lost: {lost}"
    assert tree(Vfs(engine, atime=False)) == kept, f"power cut lost: {lost}"
    engine.reclaim()
    assert not engine.reclaimer.needed()
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()
    assert fsck(vol).clean
    engine = Engine.open(vol)
    assert tree(Vfs(engine, atime=False)) == kept
    engine.close()


def test_the_pacer_takes_a_tenth_of_a_busy_loop_and_all_of_an_idle_one() -> None:
    pacer = Pacer(share=0.1, hold_s=0.5)
    assert pacer.step_bytes(10.0) == limits.reclaim_step_bytes
    assert pacer.wait_after(0.004, 1 << 20, now=10.0) == 0.0            # idle: step on at once
    pacer.saw_foreground(10.0)
    assert pacer.step_bytes(10.1) == limits.reclaim_busy_step_bytes
    assert pacer.wait_after(0.004, 0, now=10.1) == pytest.approx(0.036)   # 4 ms of 40
    rate = limits.reclaim_busy_bytes_per_s                                # and the disk's share
    assert pacer.wait_after(0.001, rate // 10, now=10.2) == pytest.approx(0.1)
    assert pacer.busy(10.49)
    assert pacer.wait_after(0.004, 1 << 20, now=10.6) == 0.0            # quiet for hold_s: idle
