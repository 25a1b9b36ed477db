"""Cluster mode end to end: a real etcd and three real galleond daemons joining it.

What a user relies on: ``cluster status`` lists every node with its zone, capacity and
state; cordon, drain and uncordon show at once; a killed node shows DOWN within the node
lease (6 s); ``volume create --replicas N`` records a placement on N distinct nodes and
says honestly that only the primary holds data; too few nodes is a one-line refusal that
changes nothing. The single-node default is untouched: no etcd, and replicas > 1 refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node.util import finish

from galleonfs.cluster import keys
from galleonfs.testing.cluster import RunningCluster
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.etcd import RunningEtcd, free_port

pytestmark = pytest.mark.usefixtures("fuse_ok")
ZONES = {"n1": "a", "n2": "b", "n3": "c"}


@pytest.fixture(scope="module")
def nodes(etcd: RunningEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningDaemon]]:
    cluster = RunningCluster(tmp_path_factory.mktemp("cluster"), ZONES, etcd=etcd)
    try:
        cluster.start()
        yield cluster.nodes
    finally:
        for d in cluster.nodes.values():
            if d.proc is not None:
                finish(d, check_logs=False)       # a clean stop, then fsck of every volume
        cluster.cleanup()


def _status(d: RunningDaemon) -> dict[str, dict[str, object]]:
    done = d.ctl("cluster", "status", "-o", "json", check=True)
    return {n["name"]: n for n in json.loads(done.stdout)["nodes"]}


def _states(d: RunningDaemon) -> dict[str, object]:
    return {name: n["state"] for name, n in _status(d).items()}


def test_every_node_joins_with_zone_capacity_and_address(nodes: dict[str, RunningDaemon]) -> None:
    for asked in nodes.values():          # any node answers for the whole cluster
        status = _status(asked)
        assert sorted(status) == ["n1", "n2", "n3"]
        for name, n in status.items():
            assert n["state"] == "ready" and n["zone"] == ZONES[name] and n["rack"] == "r1"
            assert int(str(n["capacity_bytes"])) > 0 and 0 < int(str(n["free_bytes"])) <= int(str(n["capacity_bytes"]))
            assert str(n["address"]).startswith("127.0.0.1:")
    table = nodes["n1"].ctl("cluster", "status", check=True).stdout
    assert "3 nodes, 3 ready" in table
    assert [line.split()[:3] for line in table.splitlines()[2:]] == [
        ["n1", "READY", "a"], ["n2", "READY", "b"], ["n3", "READY", "c"]]


def test_cordon_drain_uncordon(nodes: dict[str, RunningDaemon]) -> None:
    n1 = nodes["n1"]
    done = n1.ctl("node", "cordon", "n2", check=True)
    assert done.stdout == "node n2 is cordoned: it takes no new replicas and keeps what it has\n"
    done = n1.ctl("node", "drain", "n3", check=True)
    assert done.stdout.startswith("node n3 is draining: it takes no new replicas")
    assert "nothing moves today" in done.stdout
    assert _states(nodes["n2"]) == {"n1": "ready", "n2": "cordoned", "n3": "draining"}
    # A cordoned or draining node takes no new volume: one ready node is not enough for two.
    refused = n1.ctl("volume", "create", "two", "--size", "16M", "--replicas", "2")
    assert refused.returncode == 2
    assert refused.stderr == ("galleonctl: error: 2 replicas need 2 ready nodes with 16777216 bytes "
                              "free, and the cluster has 1: add or uncordon nodes, ask for fewer "
                              "replicas, or create it degraded (--allow-degraded)\n")
    for name in ("n2", "n3"):
        assert n1.ctl("node", "uncordon", name, check=True).stdout == f"node {name} is ready: it takes new replicas again\n"
    assert set(_states(n1).values()) == {"ready"}
    audit = json.loads(n1.ctl("audit", "list", "-o", "json", check=True).stdout)
    methods = [r["method"] for r in audit]
    assert "galleonfs.v1.ClusterService/Cordon" in methods and "galleonfs.v1.ClusterService/Drain" in methods


def test_a_second_node_with_a_taken_name_is_refused(nodes: dict[str, RunningDaemon], tmp_path: Path) -> None:
    """The name n1 is held by a live node: an impostor waits one lease TTL for it to go, then
    exits 4 in one line, and the live n1's record is untouched."""
    etcd_url = nodes["n1"].args[nodes["n1"].args.index("--cluster") + 1]
    started = time.monotonic()
    done = _galleond(tmp_path, "--cluster", etcd_url, "--node-name", "n1", "--peer-listen",
                     "127.0.0.1:1", "--zone", "z")
    assert (done.returncode, done.stderr) == (4, (
        "galleond: error: node name n1 is in use by another live node (its lease keeps being "
        "renewed); give this node its own --node-name, or stop the other one\n"))
    assert time.monotonic() - started >= 6
    status = _status(nodes["n2"])
    assert status["n1"]["state"] == "ready" and status["n1"]["zone"] == "a"


def test_bad_node_names_are_one_line(nodes: dict[str, RunningDaemon]) -> None:
    n1 = nodes["n1"]
    done = n1.ctl("node", "cordon", "n9")
    assert (done.returncode, done.stderr) == (3, "galleonctl: error: node n9 (see `galleonctl cluster status`) does not exist\n")
    done = n1.ctl("node", "drain", "../etc")
    assert done.returncode == 2 and done.stderr.startswith("galleonctl: error: invalid node name '../etc': use at most 63")
    assert set(_states(n1).values()) == {"ready"}


def test_create_with_replicas_records_placement_honestly(nodes: dict[str, RunningDaemon], etcd: RunningEtcd) -> None:
    n2 = nodes["n2"]
    done = n2.ctl("volume", "create", "db", "--size", "32M", "--replicas", "3", check=True)
    line = done.stdout.strip()
    assert line.startswith("volume db created (32M, local, id ")
    assert line.endswith("only n2 holds the data: replication is not built yet, so n1, n3 are "
                         "planned, not copies") or line.endswith(
        "only n2 holds the data: replication is not built yet, so n3, n1 are planned, not copies")
    record = etcd.client().get(keys.volume("db", "placement"))
    assert record is not None
    assert record.value["nodes"][0] == "n2" and sorted(record.value["nodes"]) == ["n1", "n2", "n3"]
    assert record.value["replicas"] == 3 and record.value["missing"] == 0
    for asked in nodes.values():             # any node answers, not only the one with the data
        shown = json.loads(asked.ctl("cluster", "placement", "db", "-o", "json", check=True).stdout)
        assert shown["nodes"] == record.value["nodes"] and shown["primary"] == "n2"
        assert shown["epoch"] == "0"          # no primary lease taken yet (mounts do not, yet)
        assert shown["note"] == ("only the primary holds the data: replication is not built yet, so "
                                 "the other nodes are planned, not copies")
    missing = nodes["n1"].ctl("cluster", "placement", "nosuch")
    assert (missing.returncode, missing.stderr) == (3, "galleonctl: error: volume 'nosuch' does not exist (see `galleonctl volume list`)\n")
    # The data is on n2 only: the other nodes do not have the volume.
    assert "db" in n2.ctl("volume", "list", check=True).stdout
    assert "db" not in nodes["n1"].ctl("volume", "list", check=True).stdout
    # The name is taken cluster-wide.
    again = nodes["n1"].ctl("volume", "create", "db", "--size", "32M")
    assert again.returncode == 4 and "volume 'db' (in the cluster: another node has it) already exists" in again.stderr
    n2.ctl("volume", "delete", "db", check=True)
    assert etcd.client().get(keys.volume("db", "placement")) is None


def test_ephemeral_volume_leaves_no_placement_behind(nodes: dict[str, RunningDaemon], etcd: RunningEtcd,
                                                     tmp_path: Path) -> None:
    n1 = nodes["n1"]
    n1.ctl("volume", "create", "scratch", "--size", "16M", "--type", "ephemeral", check=True)
    assert etcd.client().get(keys.volume("scratch", "placement")) is not None
    n1.ctl("volume", "mount", "scratch", str(tmp_path / "m"), check=True)
    (tmp_path / "m" / "f").write_bytes(b"x")
    done = n1.ctl("volume", "unmount", "scratch", check=True)
    assert "it was ephemeral and has been deleted" in done.stdout
    assert etcd.client().get(keys.volume("scratch", "placement")) is None


def test_too_few_nodes_refused_or_degraded_when_asked(nodes: dict[str, RunningDaemon], etcd: RunningEtcd) -> None:
    n1 = nodes["n1"]
    done = n1.ctl("volume", "create", "big", "--size", "16M", "--replicas", "4")
    assert done.returncode == 2
    assert done.stderr.startswith("galleonctl: error: 4 replicas need 4 ready nodes with 16777216 bytes free, "
                                  "and the cluster has 3")
    assert "big" not in n1.ctl("volume", "list", check=True).stdout           # nothing changed
    assert etcd.client().get(keys.volume("big", "placement")) is None
    done = n1.ctl("volume", "create", "big", "--size", "16M", "--replicas", "4", "--allow-degraded", check=True)
    assert "DEGRADED: 1 of 4 replicas have no node" in done.stdout
    record = etcd.client().get(keys.volume("big", "placement"))
    assert record is not None and record.value["missing"] == 1 and len(record.value["nodes"]) == 3
    n1.ctl("volume", "delete", "big", check=True)


def test_killed_node_shows_down_within_the_lease_and_back_on_restart(nodes: dict[str, RunningDaemon]) -> None:
    n3 = nodes["n3"]
    n3.kill()
    killed = time.monotonic()
    while _states(nodes["n1"])["n3"] != "down":
        assert time.monotonic() - killed < 6 + 4, "n3 is still shown alive 10 s after kill -9"
        time.sleep(0.3)
    assert time.monotonic() - killed > 1.0, "shown down before its lease could have expired"
    assert _states(nodes["n1"]) == {"n1": "ready", "n2": "ready", "n3": "down"}
    n3.start()                                   # same name: it rejoins
    assert _states(nodes["n2"])["n3"] == "ready"
    n3.stop()                                    # a clean stop shows down at once
    assert _states(nodes["n1"])["n3"] == "down"


def test_single_node_default_needs_no_etcd_and_refuses_replicas(tmp_path: Path) -> None:
    d = RunningDaemon(tmp_path)
    try:
        d.start()
        done = d.ctl("volume", "create", "v", "--size", "16M", "--replicas", "2")
        assert (done.returncode, done.stderr) == (1, (
            "galleonctl: error: 2 replicas need cluster mode, and this node runs alone; create the "
            "volume with one replica, or start galleond with --cluster etcd=URL on every node\n"))
        done = d.ctl("cluster", "status")
        assert (done.returncode, done.stderr) == (1, (
            "galleonctl: error: this node is not in cluster mode; start galleond with --cluster "
            "etcd=URL --node-name NAME --peer-listen HOST:PORT\n"))
        assert "v" not in d.ctl("volume", "list", check=True).stdout.split()
        d.ctl("volume", "create", "v", "--size", "16M", check=True)
    finally:
        finish(d, check_logs=True)


def _galleond(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "--data-dir", str(tmp_path / "d"),
                           "--listen", f"unix:{tmp_path}/s.sock", "--config", "/dev/null", *args],
                          capture_output=True, text=True, timeout=60)


def test_galleond_refuses_bad_cluster_settings_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"          # nothing listens there
    done = _galleond(tmp_path, "--cluster", f"etcd={url}", "--node-name", "n1", "--peer-listen", "127.0.0.1:7101")
    assert done.returncode == 9
    assert done.stderr == (
        f"galleond: error: etcd at {url} does not answer (a lease grant): check "
        f"that etcd runs there and that --cluster etcd=URL names its client URL\n")
    done = _galleond(tmp_path, "--cluster", f"etcd={url}", "--peer-listen", "127.0.0.1:7101")
    assert (done.returncode, done.stderr) == (2, (
        "galleond: error: cluster mode needs --node-name (setting node_name): every node is known "
        "by a unique name and a peer address\n"))
    done = _galleond(tmp_path, "--zone", "a")
    assert (done.returncode, done.stderr) == (2, (
        "galleond: error: zone is a cluster setting: give --cluster etcd=URL too, or leave it out "
        "for the single-node default\n"))
    done = _galleond(tmp_path, "--cluster", "zk=h:1", "--node-name", "n1", "--peer-listen", "127.0.0.1:1")
    assert (done.returncode, done.stderr) == (2, (
        "galleond: error: bad value for --cluster: 'zk=h:1' does not say where the cluster is: use "
        "etcd=http://HOST:PORT\n"))


@pytest.mark.allow_warnings      # the outage is logged (ERROR once), as it should be
def test_etcd_outage_keeps_the_node_serving_and_it_recovers(tmp_path: Path) -> None:
    """etcd stopped: the node keeps serving its own volumes, cluster calls fail in one line
    (exit 9); etcd back (same data): the node is ready again without a restart."""
    own = RunningEtcd(tmp_path / "etcd")
    (tmp_path / "etcd").mkdir()
    (tmp_path / "n1").mkdir()
    own.start()
    d = RunningDaemon(tmp_path / "n1", args=["--cluster", f"etcd={own.url}", "--node-name", "n1",
                                             "--peer-listen", "127.0.0.1:7101", "--zone", "a"])
    try:
        d.start()
        d.ctl("volume", "create", "before", "--size", "16M", check=True)
        own.stop()
        done = d.ctl("cluster", "status")
        assert (done.returncode, done.stderr) == (9, (
            f"galleonctl: error: etcd at {own.url} does not answer (list /galleonfs/v1/nodes/): "
            f"check that etcd runs there and that --cluster etcd=URL names its client URL\n"))
        # A new volume needs its placement recorded: refused while etcd is away, nothing made.
        done = d.ctl("volume", "create", "during", "--size", "16M")
        assert done.returncode == 9 and "does not answer (get /galleonfs/v1/volumes/during/placement)" in done.stderr
        listed = d.ctl("volume", "list", check=True).stdout
        assert "before" in listed and "during" not in listed
        time.sleep(3)                                # a few keep-alives fail meanwhile
        assert d.proc is not None and d.proc.poll() is None, "galleond died with etcd away"
        own.start()
        deadline = time.monotonic() + 15
        while True:
            done = d.ctl("cluster", "status", "-o", "json")
            recovered = "cluster membership: etcd answers again" in d.log()   # its keep-alive works
            if done.returncode == 0 and json.loads(done.stdout)["nodes"][0]["state"] == "ready" and recovered:
                break
            assert time.monotonic() < deadline, f"n1 not ready again 15 s after etcd came back: {done}"
            time.sleep(0.5)
    finally:
        finish(d, check_logs=False)
        own.stop()


def test_who_may_see_and_steer_the_cluster(nodes: dict[str, RunningDaemon]) -> None:
    """Through the real access table: a viewer sees the cluster but cannot cordon; a
    tenant's operator sees neither the cluster nor another tenant's placement."""
    n1 = nodes["n1"]
    viewer = n1.ctl("token", "create", "cluster-viewer", "--role", "viewer", "--expires", "10m",
                    check=True).stdout.strip()
    n1.ctl("tenant", "create", "acme", check=True)
    tenant_op = n1.ctl("token", "create", "acme-op", "--role", "operator", "--tenant", "acme",
                       "--expires", "10m", check=True).stdout.strip()
    n1.ctl("volume", "create", "ours", "--size", "16M", check=True)          # no tenant's

    def as_(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", n1.address,
                               *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "GALLEONFS_TOKEN": token})

    try:
        assert as_(viewer, "cluster", "status").returncode == 0
        done = as_(viewer, "node", "cordon", "n2")
        assert done.returncode == 8 and "token cluster-viewer is a viewer; ClusterService/Cordon needs admin" in done.stderr
        done = as_(tenant_op, "cluster", "status")
        assert done.returncode == 8 and "is bound to a tenant" in done.stderr
        done = as_(tenant_op, "cluster", "placement", "ours")
        assert (done.returncode, done.stderr) == (3, "galleonctl: error: volume 'ours' does not exist "
                                                     "(see `galleonctl volume list`)\n")
        assert _states(n1)["n2"] == "ready"
    finally:
        n1.ctl("volume", "delete", "ours", check=True)
        n1.ctl("tenant", "delete", "acme")


def test_a_start_that_fails_after_joining_leaves_the_cluster_at_once(etcd: RunningEtcd, tmp_path: Path) -> None:
    """Joined, then the metrics port is taken: galleond exits with one line, and its alive
    key is gone at once (not shown ready for the rest of its lease)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "galleonfs.node.daemon", "--data-dir", str(tmp_path / "d"),
             "--listen", f"unix:{tmp_path}/s.sock", "--config", "/dev/null", "--log-format", "text",
             "--cluster", f"etcd={etcd.url}", "--node-name", "n-fails", "--peer-listen", "127.0.0.1:1"],
            capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "GALLEONFS_METRICS_LISTEN": f"127.0.0.1:{port}"})
    assert done.returncode != 0
    assert done.stderr.splitlines()[-1] == (f"galleond: error: cannot serve metrics on 127.0.0.1:{port} "
                                            f"(metrics_listen): Address already in use")
    assert "node n-fails joined the cluster" in done.stderr
    assert etcd.client().get(keys.node("n-fails", "alive")) is None
    assert etcd.client().get(keys.node("n-fails", "info")) is not None        # a member, down
