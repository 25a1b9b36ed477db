"""``/metrics``, ``/healthz``, ``/readyz``, ``volume stats`` and ``top`` against a real galleond
with a real mount: after a known workload the counters hold exactly what the workload did,
and readiness follows the mount workers.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from node.util import ctl_json, ctl_ok, user_error, wait_until

from galleonfs.testing.daemon import RunningDaemon

from .util import Samples, get, scrape, value

pytestmark = pytest.mark.mount
MiB = 1 << 20


def _workload(mnt: Path) -> bytes:
    """Write 3 MiB (fsync once), read it back from the worker, look up a missing name."""
    data = os.urandom(3 * MiB)
    with open(mnt / "data", "wb") as f:
        for i in range(3):
            f.write(data[i * MiB:(i + 1) * MiB])
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(mnt / "data", os.O_RDONLY)
    try:
        # Drop the (clean) pages so the read reaches the worker instead of the page cache.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        back = b"".join(iter(lambda: os.read(fd, MiB), b""))
    finally:
        os.close(fd)
    assert back == data
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "missing")
    return data


def _op(samples: Samples, name: str, op: str) -> float:
    return value(samples, name, volume="m1", op=op) or 0.0


def test_counters_after_a_known_workload(daemon: RunningDaemon, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    ctl_ok(daemon, "volume", "create", "m1", "--size", "64M")
    ctl_ok(daemon, "volume", "mount", "m1", str(mnt))
    _workload(mnt)
    # The worker flushes its counts once a second; the ENOENT of the last step comes last.
    def flushed() -> Samples | None:
        s = scrape(daemon)
        done = (value(s, "galleonfs_fuse_errors_total", volume="m1", errno="ENOENT") == 2
                and value(s, "galleonfs_read_bytes_total", volume="m1") == 3 * MiB)
        return s if done else None

    s = wait_until(flushed, "the workload's counts on /metrics")

    assert value(s, "galleonfs_written_bytes_total", volume="m1") == 3 * MiB
    assert value(s, "galleonfs_read_bytes_total", volume="m1") == 3 * MiB
    # Two names that did not exist: "data" (the LOOKUP before CREATE) and "missing".
    assert value(s, "galleonfs_fuse_errors_total", volume="m1", errno="ENOENT") == 2
    assert _op(s, "galleonfs_fuse_requests_total", "create") == 1
    assert _op(s, "galleonfs_fuse_requests_total", "fsync") == 1
    assert _op(s, "galleonfs_fuse_requests_total", "write") >= 3       # at most 1 MiB each
    assert _op(s, "galleonfs_fuse_requests_total", "read") >= 3
    ops = {dict(labels)["op"] for (name, labels) in s if name == "galleonfs_fuse_requests_total"}
    assert {"lookup", "create", "write", "read", "fsync", "release"} <= ops
    for op in ops:       # the histogram saw every request, in exactly one bucket
        count = _op(s, "galleonfs_fuse_requests_total", op)
        assert _op(s, "galleonfs_fuse_request_duration_seconds_count", op) == count, op
        assert value(s, "galleonfs_fuse_request_duration_seconds_bucket", volume="m1", op=op,
                     le="+Inf") == count, op
    blocks = (value(s, "galleonfs_block_cache_hits_total", volume="m1") or 0) + (
        value(s, "galleonfs_block_cache_misses_total", volume="m1") or 0)
    assert blocks >= 48                              # 3 MiB of 64 KiB blocks, each read
    assert value(s, "galleonfs_volume_used_bytes", volume="m1") == 3 * MiB
    assert value(s, "galleonfs_volume_size_bytes", volume="m1") == 64 * MiB
    assert value(s, "galleonfs_volume_failsafe", volume="m1") == 0
    assert value(s, "galleonfs_journal_bytes_total", volume="m1") > 0
    assert value(s, "galleonfs_commit_duration_seconds_count", volume="m1") >= 1
    assert value(s, "galleonfs_qos_throttled_seconds_total", volume="m1") in (None, 0)
    assert value(s, "galleonfs_fuse_requests_in_flight", volume="m1") == 0
    assert value(s, "galleonfs_mount_workers_up") == 1
    assert value(s, "galleonfs_mount_workers_expected") == 1
    assert value(s, "galleonfs_volumes", state="mounted") == 1
    assert value(s, "galleonfs_node_ready") == 1
    assert value(s, "galleonfs_node_capacity_bytes") > value(s, "galleonfs_node_used_bytes") > 0
    assert get(daemon, "/healthz") == (200, "ok\n")
    assert get(daemon, "/readyz") == (200, "ready\n")
    assert get(daemon, "/nope")[0] == 404

    stats = ctl_json(daemon, "volume", "stats", "m1")
    rates = stats["rates"]
    assert (int(rates["written_bytes_total"]), int(rates["read_bytes_total"])) == (3 * MiB, 3 * MiB)
    assert rates["requests_per_second"] > 0 and rates["write_ops_per_second"] > 0
    assert 0 < rates["latency_p50_seconds"] <= rates["latency_p99_seconds"] <= 10
    total = int(rates["requests_total"])
    wait_until(lambda: sum(v for (name, labels), v in scrape(daemon).items()
                           if name == "galleonfs_fuse_requests_total") == total,
               "volume stats and /metrics count the same requests")
    table = ctl_ok(daemon, "volume", "stats", "m1")
    assert "IOPS" in table and "latency:" in table and "p99" in table

    rows = json.loads(ctl_ok(daemon, "top", "--once", "-o", "json"))
    assert [(r["name"], r["state"], r["used_bytes"]) for r in rows] == [("m1", "mounted", 3 * MiB)]
    assert rows[0]["rates"]["written_bytes_total"] == 3 * MiB
    frames = ctl_ok(daemon, "top", "--iterations", "2", "--interval", "0.1")
    assert frames.count("VOLUME") == 2
    assert [line.split()[:2] for line in frames.splitlines() if line.startswith("m1 ")] == [["m1", "mounted"]] * 2
    assert "metrics:       http://127.0.0.1:" in ctl_ok(daemon, "node", "status")
    ctl_ok(daemon, "volume", "unmount", "m1")
    assert value(scrape(daemon), "galleonfs_written_bytes_total", volume="m1") == 3 * MiB
    ctl_ok(daemon, "volume", "delete", "m1")
    left = [name for (name, labels) in scrape(daemon) if ("volume", "m1") in labels]
    assert left == [], "a deleted volume's series are still exported"


@pytest.mark.allow_warnings   # the dead worker is reported, and its volume checked
def test_readyz_follows_a_killed_worker(daemon: RunningDaemon, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    ctl_ok(daemon, "volume", "create", "m1", "--size", "64M")
    ctl_ok(daemon, "volume", "mount", "m1", str(mnt))
    with open(mnt / "f", "wb") as f:
        f.write(b"x" * MiB)
        f.flush()
        os.fsync(f.fileno())
    wait_until(lambda: value(scrape(daemon), "galleonfs_written_bytes_total", volume="m1") == MiB,
               "the write on /metrics")
    assert get(daemon, "/readyz") == (200, "ready\n")
    pid = int(ctl_json(daemon, "volume", "stats", "m1")["worker_pid"])

    os.kill(pid, signal.SIGKILL)
    _, body = wait_until(lambda: (r := get(daemon, "/readyz"))[0] == 503 and r, "/readyz 503",
                         timeout_s=10)
    assert body == "not ready\n1 of 1 mount workers are not running\n"
    assert get(daemon, "/healthz") == (200, "ok\n")          # alive all along
    wait_until(lambda: get(daemon, "/readyz") == (200, "ready\n"), "/readyz 200 after the restart")

    assert int(ctl_json(daemon, "volume", "stats", "m1")["worker_pid"]) != pid
    assert (mnt / "f").read_bytes() == b"x" * MiB
    s = scrape(daemon)
    assert value(s, "galleonfs_mount_workers_up") == 1
    # The dead worker's counts stay in the sums: counters do not go backwards on a restart.
    assert value(s, "galleonfs_written_bytes_total", volume="m1") == MiB
    assert ctl_json(daemon, "node", "status")["ready"] is True
    ctl_ok(daemon, "volume", "unmount", "m1")


def _galleond(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "--config", os.devnull,
                           "--data-dir", str(tmp_path / "data"), "--listen", f"unix:{tmp_path}/s.sock"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_metrics_listen_refused_in_one_line(tmp_path: Path) -> None:
    done = _galleond(tmp_path, GALLEONFS_METRICS_LISTEN="localhost")
    user_error(done, 2, "GALLEONFS_METRICS_LISTEN", "host:port", prog="galleond")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = _galleond(tmp_path, GALLEONFS_METRICS_LISTEN=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    # galleond logs on stderr too; the error is its last line, and no traceback.
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"galleond: error: cannot serve metrics on 127.0.0.1:{port} (metrics_listen): "
        f"Address already in use")


def test_a_throttled_volume_shows_waiting_requests_and_throttled_time(
        daemon: RunningDaemon, tmp_path: Path) -> None:
    """QoS waits show on /metrics: requests in flight while they wait, and the time waited."""
    mnt = tmp_path / "mnt"
    ctl_ok(daemon, "volume", "create", "m1", "--size", "64M")
    ctl_ok(daemon, "volume", "mount", "m1", str(mnt))
    ctl_ok(daemon, "qos", "create", "slow", "--iops-limit", "5")
    ctl_ok(daemon, "qos", "assign", "slow", "m1")
    buf = mmap.mmap(-1, 4096)                   # page-aligned, as O_DIRECT wants
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    writer = threading.Thread(target=lambda: [os.pwrite(fd, buf, i * 4096) for i in range(15)])
    writer.start()
    try:
        s = wait_until(lambda: (s := scrape(daemon))
                       and value(s, "galleonfs_fuse_requests_in_flight", volume="m1") == 1 and s,
                       "a write waiting for its QoS token, in flight")
        assert value(s, "galleonfs_qos_throttled_seconds_total", volume="m1") > 0
    finally:
        writer.join()
        os.close(fd)
    # 15 writes at 5 IOPS from a bucket holding 0.1 s: about 3 s of waiting, in all.
    s = wait_until(lambda: (s := scrape(daemon))
                   and value(s, "galleonfs_fuse_requests_in_flight", volume="m1") == 0 and s,
                   "no request in flight once the writes returned")
    assert 1.5 < value(s, "galleonfs_qos_throttled_seconds_total", volume="m1") < 10
    ctl_ok(daemon, "volume", "unmount", "m1")
