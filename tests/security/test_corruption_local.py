"""Corruption stays local (issue 9, finding 6): what a bad disk does to one volume's metadata,
or to the node catalog, against a real galleond.

* Damaged pages in one unmounted volume's ``meta.lmdb`` (the tail of the file lost, so the
  trees lie past its end: SIGBUS for whoever maps them; or garbage pages: MDB_CORRUPTED).
  ``volume stats`` of it answers one sentence naming the damage and the way out, the volume
  becomes FAILED, the daemon keeps its pid, and another volume mounts, serves and unmounts.
* A damaged or empty (0-byte) node catalog: galleond refuses to start, with one sentence
  and exit 7, rather than die of SIGBUS or come up as an empty node beside orphaned volume
  directories; ``galleond recover-catalog`` then brings every volume back (labels and
  classes from the backup, a volume the backup never saw from its own super record).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from node.util import api, ctl_json, ctl_ok, finish, user_error, wait_until, write_synced

from galleonfs.errors import ExitCode
from galleonfs.testing import damage
from galleonfs.testing.daemon import RunningDaemon

DAMAGE: dict[str, Callable[[Path], None]] = {
    "tail lost (SIGBUS)": lambda lmdb_dir: damage.truncate_lmdb(lmdb_dir),
    "garbage pages": lambda lmdb_dir: damage.scribble_lmdb(lmdb_dir),
}


def volume_dir(daemon: RunningDaemon, name: str) -> Path:
    return daemon.data_dir / "volumes" / api(daemon, "get_volume", name)["id"]


@pytest.mark.allow_warnings      # the daemon logs the dead helper as an ERROR
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_volume_with_damaged_metadata_fails_alone(daemon: RunningDaemon, tmp_path: Path, how: str) -> None:
    ctl_ok(daemon, "volume", "create", "bad", "--size", "64M")
    ctl_ok(daemon, "volume", "create", "good", "--size", "64M")
    bad_dir = volume_dir(daemon, "bad")
    shutil.copytree(bad_dir, tmp_path / "bad-before")       # what a repair would bring back
    DAMAGE[how](bad_dir / "meta.lmdb")
    try:
        check_failed_alone(daemon, tmp_path, bad_dir, how)
    finally:
        repair(bad_dir, tmp_path / "bad-before")     # the fixture's fsck must not map the damage
    # The operator repaired it (here: the metadata as it was); the next stats finds it whole.
    assert ctl_json(daemon, "volume", "stats", "bad")["mounted"] is False
    assert api(daemon, "get_volume", "bad")["state"] == "AVAILABLE"


def repair(bad_dir: Path, before: Path) -> None:
    shutil.rmtree(bad_dir / "meta.lmdb")
    shutil.copytree(before / "meta.lmdb", bad_dir / "meta.lmdb")


def check_failed_alone(daemon: RunningDaemon, tmp_path: Path, bad_dir: Path, how: str) -> None:
    pid = daemon.pid
    message = user_error(daemon.ctl("volume", "stats", "bad"), ExitCode.CORRUPT,
                         "volume bad is failed: its metadata is damaged",
                         f"run `galleonfs fsck --repair {bad_dir}`", "the other volumes are not affected")
    assert ("died of SIGBUS" in message) == (how == "tail lost (SIGBUS)"), message
    assert daemon.proc is not None and daemon.proc.poll() is None and daemon.pid == pid
    failed = wait_until(lambda: (v := api(daemon, "get_volume", "bad"))["state"] == "FAILED" and v,
                        "the damaged volume is FAILED")
    assert failed["message"].startswith("its metadata is damaged"), failed["message"]
    assert "volume bad failed: its metadata is damaged" in daemon.log()

    # Every other volume goes on: mounted, written, read back, stats, unmounted.
    mnt = tmp_path / "mnt"
    ctl_ok(daemon, "volume", "mount", "good", str(mnt))
    write_synced(mnt / "file", b"still here" * 1000)
    assert (mnt / "file").read_bytes() == b"still here" * 1000
    assert ctl_json(daemon, "volume", "stats", "good")["mounted"] is True
    ctl_ok(daemon, "volume", "unmount", "good")
    assert api(daemon, "get_volume", "good")["state"] == "AVAILABLE"
    assert (mnt / "file").exists() is False
    # A FAILED volume is refused what needs it healthy, with a sentence.
    user_error(daemon.ctl("volume", "mount", "bad", str(tmp_path / "mnt2")), ExitCode.ERROR,
               "volume bad is failed; it cannot be mounted now")
    assert daemon.pid == pid and daemon.proc.poll() is None


@pytest.mark.allow_warnings
def test_a_damaged_volume_left_failed_can_be_deleted(daemon: RunningDaemon) -> None:
    ctl_ok(daemon, "volume", "create", "bad", "--size", "64M")
    bad_dir = volume_dir(daemon, "bad")
    damage.truncate_lmdb(bad_dir / "meta.lmdb")
    try:
        user_error(daemon.ctl("snapshot", "create", "bad@one"), ExitCode.CORRUPT, "volume bad is failed")
        wait_until(lambda: api(daemon, "get_volume", "bad")["state"] == "FAILED", "bad is FAILED")
        ctl_ok(daemon, "volume", "delete", "bad")
    finally:
        shutil.rmtree(bad_dir, ignore_errors=True)   # the fixture's fsck must not map the damage
    assert not bad_dir.exists()
    assert api(daemon, "list_volumes") == []


# --- the node catalog -----------------------------------------------------------------------------------
CATALOG_DAMAGE: dict[str, Callable[[Path], None]] = {
    "tail lost (SIGBUS)": lambda d: damage.truncate_lmdb(d / "node.lmdb"),
    "garbage pages": lambda d: damage.scribble_lmdb(d / "node.lmdb"),
    "empty (0 bytes)": lambda d: os.truncate(d / "node.lmdb" / "data.mdb", 0),
}


def start_refused(daemon: RunningDaemon) -> str:
    """Start galleond and expect it to refuse: exit 7, one error line; returns the line."""
    daemon.start(wait=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(timeout=60)
    daemon.proc = None
    log = daemon.log()
    assert code == ExitCode.CORRUPT, f"galleond exited {code}:\n{log}"
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if line.startswith("galleond: error: ")]
    assert len(errors) == 1, log
    return errors[0]


def recover_catalog(daemon: RunningDaemon) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "recover-catalog",
                           "--data-dir", str(daemon.data_dir), "--config", os.devnull],
                          capture_output=True, text=True, timeout=300, env=daemon.env)


@pytest.mark.allow_warnings
@pytest.mark.parametrize("how", sorted(CATALOG_DAMAGE))
def test_a_damaged_catalog_refuses_to_start_and_recover_catalog_brings_the_volumes_back(
        tmp_path: Path, fuse_ok: None, how: str) -> None:
    d = RunningDaemon(tmp_path)
    try:
        d.start()
        spec = tmp_path / "small.json"
        spec.write_text(json.dumps({"name": "small", "parameters": {"block_size": "4K"}}))
        ctl_ok(d, "storage-class", "create", str(spec))
        ctl_ok(d, "volume", "create", "alpha", "--size", "64M", "--label", "team=a", "--access-mode", "RWX")
        ctl_ok(d, "volume", "create", "gamma", "--size", "32M", "--class", "small")
        mnt = tmp_path / "mnt"
        ctl_ok(d, "volume", "mount", "alpha", str(mnt))
        write_synced(mnt / "data", b"kept" * 4096)
        ctl_ok(d, "volume", "unmount", "alpha")
        ids = {v["name"]: v["id"] for v in api(d, "list_volumes")}
        assert d.stop() == 0                      # a clean stop backs the catalog up
        backup = d.data_dir / "node.lmdb.backup"
        kept_backup = backup.read_bytes()
        d.start()
        ctl_ok(d, "volume", "create", "delta", "--size", "16M", "--label", "team=d")
        ctl_ok(d, "volume", "expand", "alpha", "--size", "128M")
        ids["delta"] = api(d, "get_volume", "delta")["id"]
        assert d.stop() == 0
        backup.write_bytes(kept_backup)           # the backup from before delta and the expand

        CATALOG_DAMAGE[how](d.data_dir)
        line = start_refused(d)
        assert "the node catalog" in line and "recover-catalog --data-dir" in line, line
        if how == "empty (0 bytes)":
            assert "is empty (0 bytes), but 3 volume directories exist" in line, line
        else:
            assert "is damaged" in line, line
        if how == "tail lost (SIGBUS)":
            assert "SIGBUS" in line, line

        done = recover_catalog(d)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert f"recovered volume alpha ({ids['alpha']}) from the backup and its own records" in out, out
        assert f"recovered volume gamma ({ids['gamma']}) from the backup and its own records" in out, out
        assert (f"recovered volume delta ({ids['delta']}) from its own records only (class local, "
                f"ReadWriteOnce, no labels)") in out, out
        assert "the old catalog is kept in" in out and list(d.data_dir.glob("node.lmdb.damaged-*"))

        d.start()
        volumes = {v["name"]: v for v in api(d, "list_volumes")}
        assert set(volumes) == {"alpha", "gamma", "delta"}
        alpha, gamma, delta = volumes["alpha"], volumes["gamma"], volumes["delta"]
        assert (alpha["id"], alpha["labels"], alpha["access_modes"]) == (ids["alpha"], {"team": "a"},
                                                                         ["READ_WRITE_MANY"])
        assert alpha["size_bytes"] == str(128 << 20)          # the expand the backup missed
        assert (gamma["storage_class"], gamma["block_size_bytes"]) == ("small", 4096)
        assert (delta["id"], delta["size_bytes"], delta["labels"], delta["storage_class"]) == (
            ids["delta"], str(16 << 20), {}, "local")
        assert all(v["state"] == "AVAILABLE" for v in volumes.values())
        ctl_ok(d, "volume", "mount", "alpha", str(mnt))
        assert (mnt / "data").read_bytes() == b"kept" * 4096
        ctl_ok(d, "volume", "unmount", "alpha")
        ctl_ok(d, "volume", "create", "after", "--size", "16M", "--class", "small")   # the class is back
    finally:
        finish(d, check_logs=False)


@pytest.mark.allow_warnings
def test_recover_catalog_without_a_backup_uses_the_volumes_own_records(tmp_path: Path, fuse_ok: None) -> None:
    d = RunningDaemon(tmp_path)
    try:
        d.start()
        ctl_ok(d, "volume", "create", "solo", "--size", "16M")
        solo = api(d, "get_volume", "solo")["id"]
        assert d.stop() == 0
        (d.data_dir / "node.lmdb.backup").unlink()
        shutil.rmtree(d.data_dir / "node.lmdb")
        line = start_refused(d)
        assert "the node catalog" in line and "is missing, but 1 volume directories exist" in line, line
        done = recover_catalog(d)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"recovered volume solo ({solo}) from its own records only" in done.stdout
        assert "no usable backup" in done.stdout and "does not exist" in done.stdout
        d.start()
        assert [(v["name"], v["id"]) for v in api(d, "list_volumes")] == [("solo", solo)]
        ctl_ok(d, "volume", "create", "more", "--size", "16M")   # the built-in classes came back
    finally:
        finish(d, check_logs=False)
