"""QoS end to end: a real galleond, the real galleonctl, a real FUSE mount of a real worker.

Writes are O_DIRECT 4 KiB ``pwrite``s: each is exactly one FUSE WRITE request, so the QoS
counters of ``volume stats`` must move by exact amounts. Time is checked only from below,
with the bucket arithmetic (a 50 IOPS bucket holds 5 tokens, so 100 requests cannot take
less than 95 / 50 = 1.9 s); never from above, since CI machines are busy.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from metrics.util import scrape, value
from node.util import api, ctl_json, ctl_ok, finish, user_error, wait_until

from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import qos_pb2

BLOCK = 4096


def direct_writes(path: Path, count: int, first_block: int = 0, fill: bytes = b"q") -> None:
    """``count`` O_DIRECT 4 KiB writes; each must be accepted whole (none may fail)."""
    buf = mmap.mmap(-1, BLOCK)                 # page-aligned, as O_DIRECT needs
    buf.write(fill * BLOCK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        for i in range(count):
            assert os.pwritev(fd, [buf], (first_block + i) * BLOCK) == BLOCK
    finally:
        os.close(fd)


def qos_counters(daemon: RunningDaemon, volume: str) -> dict[str, int]:
    counters = api(daemon, "volume_stats", volume)["counters"]
    return {k: int(v) for k, v in counters.items() if k.startswith("qos_")}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def test_a_limit_throttles_a_mounted_volume_and_changes_apply_without_remount(
        shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    mnt = tmp_path / "m"
    ctl_ok(d, "volume", "create", "qos-a", "--size", "64M")
    ctl_ok(d, "volume", "mount", "qos-a", str(mnt))
    assert ctl_ok(d, "qos", "create", "slow", "--iops-limit", "50") == "QoS policy slow created\n"
    assert ctl_ok(d, "qos", "assign", "slow", "qos-a") == "volume qos-a now has QoS policy slow\n"
    assert ctl_json(d, "qos", "get", "slow")["volumes"] == ["qos-a"]

    before = qos_counters(d, "qos-a")
    started = time.monotonic()
    direct_writes(mnt / "f", 100)
    elapsed = time.monotonic() - started
    moved = delta(qos_counters(d, "qos-a"), before)
    assert moved["qos_requests"] == 100
    assert moved["qos_bytes"] == 100 * BLOCK
    assert moved["qos_waits"] > 0 and moved["qos_throttled_us"] > 0
    assert elapsed >= (100 - 5) / 50 - 0.01, f"100 writes at 50 IOPS took only {elapsed:.2f} s"
    # Prometheus has the same waits (the worker flushes its counters once a second).
    waited_s = qos_counters(d, "qos-a")["qos_throttled_us"] / 1e6
    wait_until(lambda: value(scrape(d), "galleonfs_qos_throttled_seconds_total", volume="qos-a")
               == pytest.approx(waited_s, abs=1e-6), "the throttled time is exported")

    # New numbers, same mount: a 100k IOPS bucket holds 10,000 tokens, so nothing waits.
    assert ctl_ok(d, "qos", "update", "slow", "--iops-limit", "100000") == (
        "QoS policy slow updated; applied to qos-a\n")
    before = qos_counters(d, "qos-a")
    assert before["qos_iops_limit"] == 100000
    direct_writes(mnt / "f", 100, first_block=100, fill=b"r")
    moved = delta(qos_counters(d, "qos-a"), before)
    assert (moved["qos_requests"], moved["qos_waits"]) == (100, 0)

    # Another policy, same mount.
    ctl_ok(d, "qos", "create", "fast", "--throughput-limit-mbps", "1000")
    assert ctl_ok(d, "qos", "assign", "fast", "qos-a") == "volume qos-a now has QoS policy fast (instead of slow)\n"
    now = qos_counters(d, "qos-a")
    assert (now["qos_iops_limit"], now["qos_bytes_per_s_limit"]) == (0, 1_000_000_000)

    # No policy: requests are no longer charged at all.
    assert ctl_ok(d, "qos", "unassign", "qos-a") == "volume qos-a no longer has QoS policy fast\n"
    before = qos_counters(d, "qos-a")
    direct_writes(mnt / "f", 20, first_block=200, fill=b"s")
    after = qos_counters(d, "qos-a")
    assert delta(after, before)["qos_requests"] == 0
    assert (after["qos_iops_limit"], after["qos_bytes_per_s_limit"]) == (0, 0)
    assert ctl_ok(d, "qos", "unassign", "qos-a") == "volume qos-a had no QoS policy\n"

    assert (mnt / "f").read_bytes() == b"q" * 100 * BLOCK + b"r" * 100 * BLOCK + b"s" * 20 * BLOCK
    assert ctl_json(d, "qos", "get", "slow")["volumes"] == []
    ctl_ok(d, "volume", "unmount", "qos-a")
    ctl_ok(d, "volume", "delete", "qos-a")
    ctl_ok(d, "qos", "delete", "slow")
    ctl_ok(d, "qos", "delete", "fast")


def test_bad_input_gets_one_sentence_and_changes_nothing(shared_daemon: RunningDaemon) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "qos-b", "--size", "8M")
    ctl_ok(d, "qos", "create", "gold", "--iops-limit", "500", "--throughput-limit-mbps", "20",
           "--iops-guarantee", "200", "--burst-duration", "30", "--burst-iops-multiplier", "2")
    ctl_ok(d, "qos", "assign", "gold", "qos-b")
    listed = ctl_json(d, "qos", "list")

    user_error(d.ctl("qos", "create", "neg", "--iops-limit", "-5"), 2, "the IOPS limit cannot be negative (-5)")
    user_error(d.ctl("qos", "create", "neg", "--throughput-guarantee-mbps", "-1"), 2,
               "the throughput guarantee cannot be negative")
    user_error(d.ctl("qos", "create", "m", "--iops-limit", "100", "--burst-duration", "3",
                     "--burst-iops-multiplier", "0.5"), 2, "the burst IOPS multiplier must be at least 1")
    user_error(d.ctl("qos", "create", "m", "--iops-limit", "100", "--iops-guarantee", "200"), 2,
               "the IOPS guarantee (200) cannot exceed the IOPS limit (100)")
    user_error(d.ctl("qos", "create", "Bad_Name"), 2, "invalid QoS policy name 'Bad_Name'")
    user_error(d.ctl("qos", "create", "gold"), 4, "QoS policy 'gold' already exists")
    user_error(d.ctl("qos", "assign", "nope", "qos-b"), 3, "QoS policy 'nope' does not exist")
    user_error(d.ctl("qos", "assign", "gold", "no-such-volume"), 3, "volume 'no-such-volume' does not exist")
    user_error(d.ctl("qos", "get", "nope"), 3, "QoS policy 'nope' does not exist")
    user_error(d.ctl("qos", "delete", "gold"), 5, "QoS policy gold is assigned to qos-b", "unassign it first")
    user_error(d.ctl("qos", "update", "nope", "--iops-limit", "5"), 3, "QoS policy 'nope' does not exist")
    user_error(d.ctl("qos", "update", "gold", "--burst-iops-multiplier", "0.5"), 2,
               "the burst IOPS multiplier must be at least 1")
    user_error(d.ctl("qos", "update", "gold", "--iops-limit", "100"), 2,
               "the IOPS guarantee (200) cannot exceed the IOPS limit (100)")

    assert ctl_json(d, "qos", "list") == listed            # nothing stored was harmed
    [gold] = listed
    assert gold["limits"] == {"iops": 500.0, "throughput_mbps": 20.0}
    assert gold["guarantees"] == {"iops": 200.0, "throughput_mbps": 0.0}
    assert gold["burstable"] == {"enabled": True, "duration_seconds": 30.0, "iops_multiplier": 2.0,
                                 "throughput_multiplier": 1.0}
    assert gold["volumes"] == ["qos-b"]
    assert yaml.safe_load(ctl_ok(d, "qos", "get", "gold", "-o", "yaml"))["name"] == "gold"
    table = ctl_ok(d, "qos", "list").splitlines()
    assert table[0].split() == ["NAME", "IOPS", "LIMIT", "MB/S", "LIMIT", "IOPS", "FLOOR", "MB/S", "FLOOR",
                                "BURST", "VOLUMES"]
    assert table[1].split() == ["gold", "500", "20", "200", "-", "30s", "x2", "IOPS", "x1", "MB/s", "qos-b"]

    assert ctl_ok(d, "qos", "update", "gold", "--no-burst") == "QoS policy gold updated; applied to qos-b\n"
    updated = ctl_json(d, "qos", "get", "gold")
    assert updated["burstable"] == {"enabled": False, "duration_seconds": 0.0, "iops_multiplier": 1.0,
                                    "throughput_multiplier": 1.0}
    assert (updated["limits"], updated["guarantees"]) == (gold["limits"], gold["guarantees"])

    # Deleting the volume lets the policy go.
    ctl_ok(d, "volume", "delete", "qos-b")
    assert ctl_ok(d, "qos", "delete", "gold") == "QoS policy gold deleted\n"
    assert ctl_ok(d, "qos", "list") == "no QoS policies\n"
    assert json.loads(ctl_ok(d, "qos", "list", "-o", "json")) == []


def _charged_write(daemon: RunningDaemon, mnt: Path, volume: str) -> int | None:
    """One O_DIRECT write; the worker's pid if the worker charged it to QoS."""
    stats = api(daemon, "volume_stats", volume)
    before = int(stats["counters"].get("qos_requests", 0))
    direct_writes(mnt / "probe", 1)
    after = api(daemon, "volume_stats", volume)
    charged = int(after["counters"].get("qos_requests", 0)) > before
    return int(after["worker_pid"]) if charged and after["worker_pid"] == stats["worker_pid"] else None


@pytest.mark.allow_warnings    # the killed worker is logged as an error, and restarted
def test_an_assigned_policy_survives_a_restart_and_reaches_every_new_worker(
        daemon: RunningDaemon, tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    ctl_ok(daemon, "volume", "create", "qos-c", "--size", "16M")
    ctl_ok(daemon, "volume", "mount", "qos-c", str(mnt))
    ctl_ok(daemon, "qos", "create", "slow", "--iops-limit", "200")
    ctl_ok(daemon, "qos", "assign", "slow", "qos-c")
    first = _charged_write(daemon, mnt, "qos-c")
    assert first is not None

    assert daemon.stop() == 0
    daemon.start()                     # mounts restored by a new worker
    assert ctl_json(daemon, "qos", "get", "slow")["volumes"] == ["qos-c"]
    second = wait_until(lambda: _charged_write(daemon, mnt, "qos-c"), "the new worker charges QoS")
    assert second != first

    os.kill(second, signal.SIGKILL)    # the supervisor restarts it; the daemon re-sends the rates

    def charged_by_a_new_worker() -> int | None:
        pid = _charged_write(daemon, mnt, "qos-c")
        return pid if pid not in (None, second) else None

    third = wait_until(charged_by_a_new_worker, "the restarted worker charges QoS")
    assert third != first
    ctl_ok(daemon, "volume", "unmount", "qos-c")


def test_a_node_budget_gives_each_volume_its_floor_then_a_fair_share(tmp_path: Path, fuse_ok: None) -> None:
    """qos_node_iops = 1000; A is guaranteed 600, B 200, C is limited to 50: floors first,
    the other 200 halved between A and B once C has its 50 (docs/design.md, "QoS")."""
    d = RunningDaemon(tmp_path, env={"GALLEONFS_QOS_NODE_IOPS": "1000"})
    try:
        d.start()
        for name, limit, floor in (("qa", 0, 600), ("qb", 0, 200), ("qc", 50, 0)):
            api(d, "create_volume", name, 8 << 20)
            api(d, "mount_volume", name, str(tmp_path / name))
            api(d, "create_qos_policy", qos_pb2.QosPolicy(name=f"p-{name}", limits=qos_pb2.QosRates(iops=limit),
                                                          guarantees=qos_pb2.QosRates(iops=floor)))
            api(d, "assign_qos_policy", f"p-{name}", name)

        def limits() -> dict[str, int]:
            return {n: qos_counters(d, n)["qos_iops_limit"] for n in ("qa", "qb", "qc")}

        wait_until(lambda: limits() == {"qa": 675, "qb": 275, "qc": 50}, "the budget is split")
        assert qos_counters(d, "qa")["qos_bytes_per_s_limit"] == 0    # no throughput budget
        # C goes away: its share goes back to A and B (1000 - 800, halved).
        ctl_ok(d, "volume", "unmount", "qc")
        wait_until(lambda: {n: qos_counters(d, n)["qos_iops_limit"] for n in ("qa", "qb")}
                   == {"qa": 700, "qb": 300}, "the budget is split again")
        for name in ("qa", "qb"):
            api(d, "unmount_volume", name)
    except BaseException:
        d.cleanup()
        raise
    finish(d, check_logs=True)
