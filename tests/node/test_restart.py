"""What survives a daemon that dies, a daemon that stops, and a mount worker that dies.

* ``kill -9`` of galleond: the mount workers keep serving; the next daemon adopts them, and
  volumes, data and mount points are all there; new writes work.
* SIGTERM: exit 0 with nothing left mounted; the next start mounts again what was mounted.
* ``kill -9`` of a mount worker: the daemon checks the volume, starts a new worker and
  binds the mount points again, within a bound; nothing written and fsynced is lost.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from galleonfs.engine.engine import NEEDS_CHECK_FILE
from galleonfs.managers.volumes import RESTARTS_MAX
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1.types_pb2 import READ_WRITE_MANY

from .util import (
    api,
    assert_only_expected_loud,
    ctl_json,
    ctl_ok,
    is_mount,
    mounts_under,
    statvfs_size,
    user_error,
    wait_until,
    write_synced,
)

MiB = 1024 * 1024


def setup_volumes(d: RunningDaemon, tmp_path: Path) -> dict[str, bytes]:
    """``keep`` (RWO) on rw/ and ro/ (read-only), ``many`` (RWX) on x/ and y/, ``idle`` unmounted."""
    api(d, "create_volume", "keep", 32 * MiB, labels={"role": "db"})
    api(d, "create_volume", "many", 16 * MiB, access_modes=[READ_WRITE_MANY])
    api(d, "create_volume", "idle", 8 * MiB)
    api(d, "mount_volume", "keep", str(tmp_path / "rw"))
    api(d, "mount_volume", "keep", str(tmp_path / "ro"), read_only=True)
    api(d, "mount_volume", "many", str(tmp_path / "x"))
    api(d, "mount_volume", "many", str(tmp_path / "y"))
    data = {"keep": os.urandom(2 * MiB + 7), "many": os.urandom(300_000)}
    write_synced(tmp_path / "rw" / "data", data["keep"])
    write_synced(tmp_path / "x" / "data", data["many"])
    return data


def check_serving(tmp_path: Path, data: dict[str, bytes]) -> None:
    assert (tmp_path / "rw" / "data").read_bytes() == data["keep"]
    assert (tmp_path / "ro" / "data").read_bytes() == data["keep"]
    assert (tmp_path / "x" / "data").read_bytes() == data["many"]
    assert (tmp_path / "y" / "data").read_bytes() == data["many"]


def worker_pid(d: RunningDaemon, name: str) -> int:
    return int(api(d, "volume_stats", name)["worker_pid"])


def worker_pids(d: RunningDaemon) -> dict[str, int]:
    return {name: worker_pid(d, name) for name in ("keep", "many")}


def without_times(volumes: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in x.items() if k != "updated_at"} for x in volumes]


def node_ready(d: RunningDaemon, workers: int = 2) -> bool:
    n = api(d, "node_status")
    return bool(n["ready"]) and n["mount_workers_up"] == n["mount_workers_expected"] == workers


def test_daemon_kill9_then_restart(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    data = setup_volumes(d, tmp_path)
    before = ctl_json(d, "volume", "list")
    pids = worker_pids(d)

    d.kill()
    # no daemon: the mounts keep serving, writes still land; galleonctl says what is wrong
    check_serving(tmp_path, data)
    write_synced(tmp_path / "rw" / "while-down", b"written with no daemon")
    user_error(d.ctl("volume", "list"), 9, "cannot reach galleond", "is it running")

    d.start()
    assert ctl_json(d, "volume", "list") == before
    assert worker_pids(d) == pids                 # adopted, not restarted
    check_serving(tmp_path, data)
    assert (tmp_path / "ro" / "while-down").read_bytes() == b"written with no daemon"
    write_synced(tmp_path / "rw" / "after", b"written after the restart")
    assert (tmp_path / "ro" / "after").read_bytes() == b"written after the restart"
    (tmp_path / "y" / "after").write_bytes(b"rwx after the restart")
    assert (tmp_path / "x" / "after").read_bytes() == b"rwx after the restart"
    assert node_ready(d)

    # the adopted workers are managed as before: expand online, mount more, unmount
    ctl_ok(d, "volume", "expand", "keep", "--size", "48M")
    assert statvfs_size(tmp_path / "rw") == 48 * MiB
    api(d, "mount_volume", "idle", str(tmp_path / "idle"))
    for name in ("keep", "many", "idle"):
        api(d, "unmount_volume", name)
    assert mounts_under(tmp_path) == []
    assert_only_expected_loud(d)


@pytest.mark.allow_warnings   # the dead worker is reported, and its volume checked
def test_worker_died_while_daemon_was_down(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    data = setup_volumes(d, tmp_path)
    pids = worker_pids(d)
    d.kill()
    os.kill(pids["keep"], signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pids['keep']}"), "the worker is gone")

    d.start()
    check_serving(tmp_path, data)
    new = worker_pids(d)
    assert new["many"] == pids["many"] and new["keep"] not in (0, pids["keep"])
    v = api(d, "get_volume", "keep")
    assert v["state"] == "MOUNTED"
    assert node_ready(d)
    assert not (d.data_dir / "volumes" / v["id"] / NEEDS_CHECK_FILE).exists()
    write_synced(tmp_path / "rw" / "after", b"new worker writes")
    assert (tmp_path / "ro" / "after").read_bytes() == b"new worker writes"
    for name in ("keep", "many"):
        api(d, "unmount_volume", name)
    assert_only_expected_loud(
        d, r"WARNING .*volume keep: its mount worker died while the daemon was down",
        r"WARNING galleonfs.worker.* was marked for check \(its mount worker died while the daemon "
        r"was down\); the check found it clean")


def test_sigterm_then_start_mounts_again(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    data = setup_volumes(d, tmp_path)
    before = ctl_json(d, "volume", "list")
    pids = worker_pids(d)

    assert d.stop() == 0
    assert mounts_under(tmp_path) == []           # mount points and workers' staging mounts
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived a clean stop"
    assert not (tmp_path / "rw" / "data").exists()

    d.start()
    check_serving(tmp_path, data)
    assert without_times(ctl_json(d, "volume", "list")) == without_times(before)
    assert all(is_mount(tmp_path / p) for p in ("rw", "ro", "x", "y"))
    # ... with the same read-only flags as before
    with pytest.raises(OSError) as info:
        (tmp_path / "ro" / "nope").write_bytes(b"")
    assert info.value.errno == errno.EROFS
    write_synced(tmp_path / "rw" / "after", b"after a clean restart")
    assert (tmp_path / "ro" / "after").read_bytes() == b"after a clean restart"
    assert node_ready(d)
    for name in ("keep", "many"):
        api(d, "unmount_volume", name)


def test_sigterm_while_restoring_mounts(daemon: RunningDaemon, tmp_path: Path) -> None:
    """A SIGTERM that arrives while a starting daemon brings the mounts back still stops
    everything: no worker and no mount point is left behind."""
    d = daemon
    data = setup_volumes(d, tmp_path)
    for name in ("one", "two"):
        api(d, "create_volume", name, 8 * MiB)
        api(d, "mount_volume", name, str(tmp_path / name))
    assert d.stop() == 0

    offset = d.log_path.stat().st_size
    d.start(wait=False)

    def this_run() -> str:
        with open(d.log_path, errors="replace") as f:
            f.seek(offset)
            return f.read()

    # SIGTERM once the first of four workers is up: the others are still to come (a worker
    # takes ~0.2 s to start, so poll faster than wait_until does)
    deadline = time.monotonic() + 30
    while "mount worker" not in this_run():
        assert time.monotonic() < deadline, "the daemon did not restore its first mount"
        time.sleep(0.005)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=120) == 0, this_run()
    d.proc = None
    assert "received SIGTERM" in this_run() and "galleond ready" not in this_run(), "too late to test"
    assert mounts_under(tmp_path) == []
    assert d.worker_pids() == []

    d.start()
    check_serving(tmp_path, data)
    assert node_ready(d, workers=4)
    for name in ("keep", "many", "one", "two"):
        api(d, "unmount_volume", name)


@pytest.mark.allow_warnings   # the dead worker is reported, and its volume checked
def test_mount_worker_killed_is_restarted(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    data = setup_volumes(d, tmp_path)
    # as the issue has it: the pid from `galleonctl volume stats NAME -o json`
    pid = ctl_json(d, "volume", "stats", "keep")["worker_pid"]
    many_pid = worker_pid(d, "many")
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        return (worker_pid(d, "keep") not in (0, pid)
                and (tmp_path / "rw" / "data").read_bytes() == data["keep"])

    wait_until(back, "the volume is served again by a new worker")
    check_serving(tmp_path, data)
    assert worker_pid(d, "many") == many_pid
    write_synced(tmp_path / "rw" / "after", b"new worker writes")
    assert (tmp_path / "ro" / "after").read_bytes() == b"new worker writes"
    wait_until(lambda: node_ready(d), "node status shows every worker up")
    status = ctl_json(d, "node", "status")
    assert status["ready"] and status["mount_workers_up"] == 2 and status["problems"] == []
    v = api(d, "get_volume", "keep")
    assert v["state"] == "MOUNTED"
    assert not (d.data_dir / "volumes" / v["id"] / NEEDS_CHECK_FILE).exists()
    for name in ("keep", "many"):
        api(d, "unmount_volume", name)
    killed = rf"mount worker {pid} was killed by signal SIGKILL while serving the volume"
    assert_only_expected_loud(
        d, rf"ERROR galleonfs.workers.supervisor: volume {v['id']}: {killed}",
        rf"WARNING .*restarting the mount worker of volume keep \({killed}\)",
        rf"WARNING galleonfs.worker.* was marked for check \({killed}\); the check found it clean")


@pytest.mark.allow_warnings   # every death is reported; the last one fails the volume
def test_worker_crash_loop_fails_the_volume(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    api(d, "create_volume", "loop", 8 * MiB)
    mnt = tmp_path / "m"
    api(d, "mount_volume", "loop", str(mnt))
    write_synced(mnt / "data", b"survives the loop")

    def restarted(pid: int) -> bool:
        return worker_pid(d, "loop") not in (0, pid) and (mnt / "data").read_bytes() == b"survives the loop"

    for _ in range(RESTARTS_MAX):
        pid = worker_pid(d, "loop")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda pid=pid: restarted(pid), "restarted")
    os.kill(worker_pid(d, "loop"), signal.SIGKILL)
    wait_until(lambda: api(d, "get_volume", "loop")["state"] == "FAILED", "the volume is failed")
    v = ctl_json(d, "volume", "get", "loop")
    assert v["state"] == "FAILED"
    assert f"gave up after {RESTARTS_MAX} restarts in a row" in v["message"]
    assert api(d, "node_status")["problems"] == ["failed volumes: loop"]
    with pytest.raises(OSError) as info:          # dead, not silently an empty directory
        (mnt / "data").read_bytes()
    assert info.value.errno == errno.ENOTCONN

    # the operator unmounts, and a new mount starts afresh (the volume is checked first)
    ctl_ok(d, "volume", "unmount", "loop")
    v = api(d, "get_volume", "loop")
    assert v["state"] == "AVAILABLE" and v["message"] == "" and v["mount_points"] == []
    api(d, "mount_volume", "loop", str(mnt))
    assert (mnt / "data").read_bytes() == b"survives the loop"
    pid = worker_pid(d, "loop")
    os.kill(pid, signal.SIGKILL)                  # the count started over: restarted again
    wait_until(lambda: restarted(pid), "restarted after a fresh mount")
    api(d, "unmount_volume", "loop")
