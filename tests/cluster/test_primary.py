"""The primary lease of a read-write mount, end to end: a real etcd, two real galleond
daemons in cluster mode, real FUSE mounts.

What a user relies on: a read-write mount makes its node the volume's primary with a new
epoch, and unmount gives that up; another node's read-write mount is refused with one line
naming the holder while the lease lives; a node cut off from etcd stops acknowledging
writes (EIO) before its lease could pass to anyone, keeps what it acknowledged before, and
stays fenced until remounted; a node killed with kill -9 leaves its lease to expire in
etcd, and the volume then takes a new primary with epoch + 1.

The tests of this module run in order on one volume (each starts from the last one's
state, as a user's day would): about 45 s in all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node.util import finish, user_error

from galleonfs.cluster import certs, keys
from galleonfs.cluster import limits as cluster_limits
from galleonfs.testing.cluster import RunningCluster
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.etcd import RunningEtcd, free_port

pytestmark = [pytest.mark.usefixtures("fuse_ok"), pytest.mark.allow_warnings]
TTL_S = cluster_limits.primary_lease_ttl_s
FENCE_AFTER_S = cluster_limits.primary_fence_after_s
SLACK_S = 3.0          # a loaded 2-core machine: galleonctl runs, renew interval, polling


@pytest.fixture(scope="module")
def cluster(etcd: RunningEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = RunningCluster(tmp_path_factory.mktemp("primary"), {"n1": "a", "n2": "b"}, etcd=etcd)
    try:
        running.start()
        yield running
    finally:
        for d in running.nodes.values():
            if d.proc is not None:
                finish(d, check_logs=False)       # a clean stop, then fsck of every volume
        running.cleanup()


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mounts")


def _primary(etcd: RunningEtcd) -> tuple[str, int] | None:
    kv = etcd.client().get(keys.volume("db", "primary"))
    return (str(kv.value["node"]), int(kv.value["epoch"])) if kv else None


def _epoch(d: RunningDaemon) -> int:
    return int(json.loads(d.ctl("cluster", "placement", "db", "-o", "json", check=True).stdout)["epoch"])


def _holder(d: RunningDaemon) -> str:
    return str(json.loads(d.ctl("cluster", "placement", "db", "-o", "json", check=True).stdout)
               .get("lease_holder", ""))


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _serving(mnt: Path) -> bool:
    """Bound and answering (a dead FUSE mount answers ENOTCONN or ECONNABORTED)."""
    try:
        return os.path.ismount(mnt) and (mnt / "epoch3").is_file()
    except OSError:
        return False


def test_a_read_write_mount_takes_the_lease_and_another_node_is_refused(
        cluster: RunningCluster, etcd: RunningEtcd, where: Path) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    n1.ctl("volume", "create", "db", "--size", "32M", check=True)
    assert _primary(etcd) is None and _epoch(n1) == 0          # created, not yet mounted
    n1.ctl("volume", "mount", "db", str(where / "n1"), check=True)
    assert _primary(etcd) == ("n1", 1) and _epoch(n2) == 1 and _holder(n2) == "n1"
    assert "lease:          held by n1 (mounted read-write there)" in n2.ctl(
        "cluster", "placement", "db", check=True).stdout
    _write(where / "n1" / "before", b"acknowledged at epoch 1\n")

    done = n2.ctl("volume", "mount", "db", str(where / "n2"))
    user_error(done, 5, "volume db has a primary on node n1 (epoch 1) while its lease lives",
               "unmount it there")
    assert _primary(etcd) == ("n1", 1) and not os.path.ismount(where / "n2")   # nothing changed
    # A read-only mount point on the primary's node takes no second lease.
    n1.ctl("volume", "mount", "db", str(where / "n1-ro"), "--read-only", check=True)
    n1.ctl("volume", "unmount", str(where / "n1-ro"), check=True)
    assert _primary(etcd) == ("n1", 1)

    n1.ctl("volume", "unmount", "db", check=True)
    assert _primary(etcd) is None and _epoch(n1) == 1          # released at once; epoch kept
    assert _holder(n2) == ""
    # n2 has no copy (replication is not built yet): refused, and no epoch is spent on it.
    done = n2.ctl("volume", "mount", "db", str(where / "n2"))
    user_error(done, 3, "volume 'db' is not on this node: its data is on node n1")
    assert _primary(etcd) is None and _epoch(n1) == 1

    n1.ctl("volume", "mount", "db", str(where / "n1"), check=True)
    assert _primary(etcd) == ("n1", 2)
    assert (where / "n1" / "before").read_bytes() == b"acknowledged at epoch 1\n"


def test_cut_off_from_etcd_the_mount_fences_itself_with_eio_and_stays_fenced(
        cluster: RunningCluster, etcd: RunningEtcd, where: Path) -> None:
    n1 = cluster.nodes["n1"]
    mnt = where / "n1"
    assert _primary(etcd) == ("n1", 2)
    held_fd = os.open(mnt / "before", os.O_RDWR)   # opened for writing before the fence
    etcd.pause()
    paused = time.monotonic()
    try:
        # Until the fence deadline the mount keeps serving (a short etcd outage is survived).
        _write(mnt / "during", b"acknowledged while etcd was stopped\n")
        assert time.monotonic() - paused < FENCE_AFTER_S - TTL_S / 3, "the first write came too late to count"
        failure = None
        i = 0
        while failure is None:
            assert time.monotonic() - paused < FENCE_AFTER_S + SLACK_S, "still acknowledging writes"
            i += 1
            try:
                _write(mnt / f"late-{i}", b"x" * 4096)
            except OSError as exc:
                failure = exc
                print(f"fenced {time.monotonic() - paused:.2f} s after etcd was stopped")
            time.sleep(0.2)
        fenced_after = time.monotonic() - paused
        assert failure.errno == errno.EIO, failure
        # Fenced well before etcd could hand the lease to anyone (TTL after the last renewal).
        assert fenced_after < TTL_S, fenced_after
        # Opening for writing is refused, like on a read-only file system, but with EIO.
        with pytest.raises(OSError) as caught:
            os.open(mnt / "before", os.O_RDWR)
        assert caught.value.errno == errno.EIO
        # A file opened before: its write lands in the kernel's writeback cache, and fsync
        # reports that the worker refused it.
        os.write(held_fd, b"changed")
        with pytest.raises(OSError) as caught:
            os.fsync(held_fd)
        assert caught.value.errno == errno.EIO
        assert (mnt / "during").read_bytes() == b"acknowledged while etcd was stopped\n"   # reads go on
    finally:
        etcd.resume()
        with contextlib.suppress(OSError):  # the refused write-back, reported once more
            os.close(held_fd)
    # etcd is back: the mount stays fenced (the safe choice) until it is mounted again.
    time.sleep(TTL_S / 3 + 0.5)
    with pytest.raises(OSError) as caught:
        _write(mnt / "after-resume", b"no")
    assert caught.value.errno == errno.EIO
    n1.ctl("volume", "unmount", "db", check=True)
    n1.ctl("volume", "mount", "db", str(mnt), check=True)
    held = _primary(etcd)
    assert held is not None and held[0] == "n1" and held[1] == 3
    assert (mnt / "before").read_bytes() == b"acknowledged at epoch 1\n"
    assert (mnt / "during").read_bytes() == b"acknowledged while etcd was stopped\n"
    assert not (mnt / "after-resume").exists()
    _write(mnt / "epoch3", b"serving again\n")


def test_a_killed_daemon_cannot_keep_its_worker_acknowledging(
        cluster: RunningCluster, etcd: RunningEtcd, where: Path) -> None:
    n1 = cluster.nodes["n1"]
    mnt = where / "n1"
    assert _primary(etcd) == ("n1", 3)
    (worker,) = n1.worker_pids()
    n1.kill()                                  # the worker lives on, and no deadline arrives
    killed = time.monotonic()
    failure = None
    while failure is None:
        assert time.monotonic() - killed < FENCE_AFTER_S + SLACK_S, "still acknowledging writes"
        try:
            _write(mnt / "unheard", b"x")
        except OSError as exc:
            failure = exc
        time.sleep(0.2)
    assert failure.errno == errno.EIO and time.monotonic() - killed < TTL_S
    # The restarted daemon adopts the fenced worker, replaces it under a new term.
    n1.start()
    # Epoch 4 went to the adopted worker, which refused it (fenced); its successor has 5.
    assert _primary(etcd) == ("n1", 5)
    assert worker not in n1.worker_pids()
    assert (mnt / "epoch3").read_bytes() == b"serving again\n"
    _write(mnt / "epoch4", b"new worker\n")


def test_kill_9_of_the_primary_lets_its_lease_expire_and_a_new_term_has_epoch_plus_1(
        cluster: RunningCluster, etcd: RunningEtcd, where: Path) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    assert _primary(etcd) == ("n1", 5)
    # A worker that dies alone is restarted under the lease its daemon still holds.
    (worker,) = n1.worker_pids()
    os.kill(worker, signal.SIGKILL)
    restarted = time.monotonic()
    # Bound again (not the bare directory under it, seen while the dead bind is cleared).
    while not _serving(where / "n1"):
        assert time.monotonic() - restarted < 15, "the worker was not restarted"
        time.sleep(0.2)
    _write(where / "n1" / "after-restart", b"same term\n")
    assert _primary(etcd) == ("n1", 5)
    workers = n1.worker_pids()
    assert workers and worker not in workers
    n1.kill()
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    # While the dead node's lease lives, nobody else may take the volume.
    user_error(n2.ctl("volume", "mount", "db", str(where / "n2")), 5, "primary on node n1 (epoch 5)")
    while _primary(etcd) is not None:
        assert time.monotonic() - killed < TTL_S + SLACK_S, "the dead primary's lease outlived its TTL"
        time.sleep(0.2)
    # Free now; n2 still has no copy, so it says where the data is.
    user_error(n2.ctl("volume", "mount", "db", str(where / "n2")), 3, "its data is on node n1")
    n1.start()                          # restores its mount: a new term
    assert _primary(etcd) == ("n1", 6)
    assert (where / "n1" / "epoch3").read_bytes() == b"serving again\n"
    assert (where / "n1" / "after-restart").read_bytes() == b"same term\n"
    _write(where / "n1" / "epoch4", b"ok\n")
    n1.ctl("volume", "unmount", "db", check=True)
    assert _primary(etcd) is None
    n1.ctl("volume", "delete", "db", check=True)
    assert etcd.client().get(keys.volume("db", "epoch")) is None


def test_a_volume_made_before_the_node_joined_stays_local_and_takes_no_lease(
        etcd: RunningEtcd, tmp_path: Path) -> None:
    (tmp_path / "n9").mkdir()
    d = RunningDaemon(tmp_path / "n9")
    try:
        d.start()
        d.ctl("volume", "create", "solo", "--size", "16M", check=True)
        d.stop()
        ca = tmp_path / "ca"
        certs.init_ca(ca)
        certs.issue(ca, "n9", tmp_path / "peer", hosts=("127.0.0.1",))
        peer = tmp_path / "peer"
        d.args = ["--cluster", f"etcd={etcd.url}", "--node-name", "n9",
                  "--peer-listen", f"127.0.0.1:{free_port()}",
                  "--peer-cert", str(peer / certs.NODE_CERT), "--peer-key", str(peer / certs.NODE_KEY),
                  "--peer-ca", str(peer / certs.CA_CERT)]
        d.start()
        d.ctl("volume", "mount", "solo", str(tmp_path / "m"), check=True)
        assert etcd.client().get(keys.volume("solo", "primary")) is None
        assert etcd.client().get(keys.volume("solo", "epoch")) is None
        _write(tmp_path / "m" / "f", b"local\n")
        d.ctl("volume", "unmount", "solo", check=True)
    finally:
        finish(d, check_logs=False)
