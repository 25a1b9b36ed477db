"""kill -9 of a real mount worker loses nothing that reached it (DESIGN §3, guarantee 1).

A workload runs in a child process on the mount and logs, outside the mount, what it is
about to do and what the kernel confirmed (``kill9_workload.py``). The worker is killed,
at a random moment or at an exact named step (``GALLEONFS_CRASHPOINT``); then

* fsck of the unmounted volume is clean (it replays the journal, read-only);
* after a remount, every file the log says was closed or fsynced is there with that
  content, every confirmed rename and unlink happened, and what was in flight is either
  way but readable; nothing unexpected appeared.

With the kernel's writeback cache, bytes still in the page cache when the worker dies
are lost, but ``close()`` and ``fsync()`` push them to the worker first, so a confirmed
close or fsync is a promise the volume must keep.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from galleonfs.engine.fsck import fsck
from galleonfs.errors import ExitCode
from galleonfs.testing.mount import MountedVolume, MountError

WORKLOAD = Path(__file__).with_name("kill9_workload.py")
WARNING_WORDS = (" WARNING ", " ERROR ", " CRITICAL ")
CHILD_TIMEOUT_S = 60.0


@dataclass
class Expect:
    sha: str | None = None         # None: any content
    size: int | None = None
    prefix: bool = False           # only the first ``size`` bytes are known
    may_be_absent: bool = False

    def check(self, path: str, data: bytes) -> None:
        if self.sha is None:
            return
        assert self.size is not None
        if self.prefix:
            assert len(data) >= self.size, f"{path}: {len(data)} bytes, fsynced {self.size}"
            data = data[: self.size]
        assert len(data) == self.size, f"{path}: {len(data)} bytes, expected {self.size}"
        assert hashlib.sha256(data).hexdigest() == self.sha, f"{path}: content differs"


class Expectations:
    """What the volume must hold, built from the workload logs."""

    def __init__(self) -> None:
        self.files: dict[str, Expect] = {}
        self.absent: set[str] = set()
        self.renaming: list[tuple[str, str, Expect]] = []   # in flight: either name
        self.confirmed = 0                                  # closes and fsyncs logged

    def apply_log(self, log: Path) -> None:
        pending: tuple[str, str, Expect] | None = None
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            op = rec["op"]
            if op == "creating":
                self.files[rec["path"]] = Expect(may_be_absent=True)
            elif op in ("closed", "fsynced"):
                self.files[rec["path"]] = Expect(rec["sha"], rec["size"], prefix=op == "fsynced")
                self.confirmed += 1
            elif op == "modifying":
                self.files[rec["path"]] = Expect()
            elif op == "renaming":
                pending = (rec["src"], rec["dst"], self.files.pop(rec["src"]))
            elif op == "renamed":
                assert pending is not None and pending[:2] == (rec["src"], rec["dst"])
                self.files[rec["dst"]] = pending[2]
                self.absent.add(rec["src"])
                pending = None
            elif op == "unlinking":
                self.files[rec["path"]].may_be_absent = True
            elif op == "unlinked":
                del self.files[rec["path"]]
                self.absent.add(rec["path"])
            else:
                assert op in ("error", "done"), rec
        if pending is not None:
            self.renaming.append(pending)

    def verify(self, root: Path) -> None:
        """Check the mounted tree; then expect exactly what is there from now on."""
        found: dict[str, bytes] = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.relpath(os.path.join(dirpath, name), root)
                found[path] = Path(dirpath, name).read_bytes()      # EIO would raise here
        for path, expect in self.files.items():
            if path not in found:
                assert expect.may_be_absent, f"{path} is missing"
                continue
            expect.check(path, found[path])
        for src, dst, expect in self.renaming:
            there = [p for p in (src, dst) if p in found]
            if not there:
                assert expect.may_be_absent, f"{src} (being renamed to {dst}) is missing"
            assert len(there) <= 1, f"{src} and {dst} both exist after an interrupted rename"
            for p in there:
                expect.check(p, found[p])
        for path in self.absent:
            assert path not in found, f"{path} was renamed or unlinked, but is back"
        known = set(self.files) | {p for r in self.renaming for p in r[:2]}
        unexpected = set(found) - known
        assert not unexpected, f"files nobody created: {sorted(unexpected)}"
        # From now on the recovered state is the durable one: nothing may change it.
        self.files = {p: Expect(hashlib.sha256(d).hexdigest(), len(d)) for p, d in found.items()}
        self.absent |= known - set(found)
        self.renaming = []


def start_workload(root: Path, log: Path, seed: int, prefix: str, ops_max: int) -> subprocess.Popen[bytes]:
    with open(log.with_suffix(".out"), "wb") as out:      # the child gets its own descriptor
        return subprocess.Popen([sys.executable, str(WORKLOAD), str(root), str(log), str(seed), prefix,
                                 str(ops_max)], stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def wait_child(child: subprocess.Popen[bytes], log: Path) -> None:
    try:
        code = child.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        pytest.fail("the workload hung after the mount died")
    assert code == 0, f"workload failed:\n{log.with_suffix('.out').read_text()}"


def kill9(vol: MountedVolume, child: subprocess.Popen[bytes], log: Path) -> None:
    """``kill -9`` the worker; clear the dead mount only once the workload has seen it die.

    (``MountedVolume.kill`` clears it at once, and a workload between two calls could then
    go on in the empty directory underneath.)
    """
    assert vol.proc is not None
    vol.proc.send_signal(signal.SIGKILL)
    wait_child(child, log)
    assert vol.wait_exit() == -signal.SIGKILL


def assert_clean(vol: MountedVolume) -> None:
    report = fsck(str(vol.volume_dir))
    assert report.clean, report.render()


def assert_quiet(vol: MountedVolume) -> None:
    loud = [line for line in vol.log().splitlines() if any(w in line for w in WARNING_WORDS)]
    assert not loud, "the mount worker logged warnings:\n" + "\n".join(loud)


def cleanup(vol: MountedVolume, child: subprocess.Popen[bytes] | None) -> None:
    """After a failure: stop what this test started, leave no mount behind."""
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()
    if vol.proc is not None:
        if vol.proc.poll() is None:
            vol.unmount()
        else:
            vol.wait_exit()


def test_kill9_at_random_moments(tmp_path: Path, fuse_ok: None) -> None:
    rng = random.Random(20240917)
    expect = Expectations()
    vol = MountedVolume.create(tmp_path)
    child = None
    try:
        for round_ in range(5):
            log = tmp_path / f"round{round_}.log"
            child = start_workload(vol.mountpoint, log, rng.randrange(1 << 30), f"r{round_}", 100_000)
            time.sleep(rng.uniform(0.3, 1.5))
            kill9(vol, child, log)
            assert json.loads(log.read_text().splitlines()[-1])["op"] == "error", \
                "the workload ended before the kill"
            expect.apply_log(log)
            assert_clean(vol)
            vol.mount()
            expect.verify(vol.mountpoint)
        assert vol.unmount() == 0
    finally:
        cleanup(vol, child)
    assert expect.confirmed >= 10, "the workload confirmed too little to prove anything"
    assert_clean(vol)
    assert_quiet(vol)


CRASH_CASES = [
    ("journal.after_append_before_sync", 1),
    ("journal.after_append_before_sync", 45),
    ("segment.after_append", 1),
    ("segment.after_append", 17),
    ("commit.after_data_sync_before_journal_sync", 1),   # at the first fsync
    ("commit.after_data_sync_before_journal_sync", 3),
    ("checkpoint.before_meta_commit", 1),                # at the unmount's checkpoint
    ("checkpoint.after_meta_commit", 1),
]


@pytest.mark.parametrize(("point", "nth"), CRASH_CASES)
def test_kill9_at_a_named_step(tmp_path: Path, fuse_ok: None, point: str, nth: int) -> None:
    expect = Expectations()
    vol = MountedVolume.create(tmp_path, env={"GALLEONFS_CRASHPOINT": f"{point}:{nth}"})
    log = tmp_path / "workload.log"
    child = None
    try:
        child = start_workload(vol.mountpoint, log, nth * 7919 + len(point), "w", 40)
        assert vol.proc is not None
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while child.poll() is None and vol.proc.poll() is None:
            assert time.monotonic() < deadline, "neither the workload nor the worker ended"
            time.sleep(0.05)
        wait_child(child, log)          # done, or stopped by the dead mount
        # If the workload finished first, the point comes in the unmount's commit/checkpoint.
        code = vol.unmount() if vol.proc.poll() is None else vol.wait_exit()
        assert code == -signal.SIGKILL, f"{point}:{nth} did not kill the worker (exit {code})\n{vol.log()}"
        expect.apply_log(log)
        assert_clean(vol)
        vol.env = None
        vol.mount()
        expect.verify(vol.mountpoint)
        assert vol.unmount() == 0
    finally:
        cleanup(vol, child)
    assert_clean(vol)
    assert_quiet(vol)


def test_a_misspelt_crash_point_refuses_the_mount_by_name(tmp_path: Path, fuse_ok: None) -> None:
    """A kill -9 test armed with a name the engine does not have would test nothing."""
    with pytest.raises(MountError, match=r"unknown crash point 'journal\.after_apend'") as info:
        MountedVolume.create(tmp_path, env={"GALLEONFS_CRASHPOINT": "journal.after_apend:1"})
    assert info.value.code == ExitCode.USAGE
