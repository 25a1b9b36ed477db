"""The volume-operations contract: a mounted volume (its worker) and an unmounted one (a
helper) answer every operation alike, replies and errors (class and sentence) the same.

Each test does the same to two new volumes, one served by a real mount worker reached over
its control socket, one reached through the offline helper, and compares. The fields that
must differ are named and checked for what they must be (``mounted``, the worker's pid);
so are the operations that need the volume to themselves (restore, rekey) and QoS, which
only a worker enforces.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import trio

from galleonfs.crypto.keys import KeySpec
from galleonfs.errors import Busy, FailedPrecondition, InvalidArgument
from galleonfs.qos.policy import WorkerRates
from galleonfs.volops import messages as m
from galleonfs.volops.offline import OfflineOps
from galleonfs.volops.online import OnlineOps
from volops.conftest import Offline, Online

FILES = {"a": b"alpha" * 30000, "b": os.urandom(200_000), "c": b""}


def same_stats(stats: m.VolumeStats) -> m.VolumeStats:
    """What must agree; what is the setting's own (counters, rates, who serves) is zeroed."""
    return dataclasses.replace(stats, mounted=False, pid=0, counters={}, fuse_errors={}, commits=0,
                               rates={}, space=m.SpaceState())


def same_snapshot(info: m.SnapshotInfo) -> m.SnapshotInfo:
    return dataclasses.replace(info, id="", created_ns=0)


def test_stats_agree_and_say_who_serves(pair: tuple[Online, Offline]) -> None:
    online = pair[0]
    fresh = [s.run(m.Stats()) for s in pair]
    assert same_stats(fresh[0]) == same_stats(fresh[1])
    assert (fresh[0].size, fresh[0].used_bytes, fresh[0].inodes_used) == (64 << 20, 0, 1)
    assert fresh[0].inodes_total == 65536 and fresh[0].failsafe == "" and not fresh[0].read_only
    assert fresh[0].mounted and fresh[0].pid == online.proc.pid
    assert not fresh[1].mounted and fresh[1].pid == 0

    for subject in pair:
        subject.write(FILES)
    written = [same_stats(s.run(m.Stats())) for s in pair]
    assert written[0] == written[1]
    assert written[0].inodes_used == 1 + len(FILES)
    assert written[0].used_bytes >= sum(len(d) for d in FILES.values())


def test_space_and_ping_agree(pair: tuple[Online, Offline]) -> None:
    online = pair[0]
    spaces = [s.run(m.Space()) for s in pair]
    assert [(x.full, x.enospc_total, x.reserve_released) for x in spaces] == [("", 0, False)] * 2
    pings = [s.run(m.Ping()) for s in pair]
    assert pings[0].mountpoint == str(online.mountpoint) and pings[1].mountpoint == ""
    assert all(p.volume_id for p in pings)


def test_snapshots_agree(pair: tuple[Online, Offline]) -> None:
    for subject in pair:
        subject.write(FILES)
    created = [same_snapshot(s.run(m.SnapshotCreate("s1"))) for s in pair]
    assert created[0] == created[1]
    assert created[0].name == "s1" and created[0].inodes == 1 + len(FILES) and created[0].holds == ()

    for subject in pair:
        subject.write({"d": b"new after s1", "a": b"changed"})
    listed = [tuple(same_snapshot(i) for i in s.run(m.SnapshotList()).snapshots) for s in pair]
    assert listed[0] == listed[1] and [i.name for i in listed[0]] == ["s1"]

    diffs = [s.run(m.SnapshotDiff("s1")) for s in pair]
    assert diffs[0] == diffs[1]
    assert {(c.kind, c.path) for c in diffs[0].changes} == {("+", "/d"), ("M", "/a")}

    freed = [s.run(m.SnapshotDelete("s1")) for s in pair]
    assert freed[0] == freed[1] and freed[0].freed_bytes > 0    # "a" was rewritten: its old blocks go
    assert [s.run(m.SnapshotList()) for s in pair] == [m.Snapshots(())] * 2


@pytest.mark.parametrize("request_", [
    m.SnapshotCreate("../escape"), m.SnapshotCreate(""), m.SnapshotDelete("missing"),
    m.SnapshotDiff("missing"), m.SnapshotDiff("missing", "other"), m.Resize(1 << 20), m.Flatten(),
    m.Clone("missing", "/nonexistent/clone", "cid", "c", 0),
], ids=lambda r: type(r).__name__)
def test_errors_agree(pair: tuple[Online, Offline], request_: m.VolumeRequest[object]) -> None:
    """Each is refused, by both, with the same class and the same sentence."""
    online, offline = pair
    got = online.outcome(request_)
    assert got[0] != "ok", got
    assert got == offline.outcome(request_)


def test_a_taken_snapshot_name_is_refused_alike(pair: tuple[Online, Offline]) -> None:
    online, offline = pair
    for subject in pair:
        subject.run(m.SnapshotCreate("s1"))
    got = online.outcome(m.SnapshotCreate("s1"))
    assert got[0] == "AlreadyExists" and got == offline.outcome(m.SnapshotCreate("s1"))


def test_resize_commit_checkpoint_release_agree(pair: tuple[Online, Offline]) -> None:
    assert [s.run(m.Resize(128 << 20)) for s in pair] == [m.Resized(128 << 20)] * 2
    assert [s.run(m.Stats()).size for s in pair] == [128 << 20] * 2
    assert [s.run(m.SnapshotRelease("nothing", "nobody")) for s in pair] == [m.Done()] * 2
    for subject in pair:
        committed = subject.run(m.Commit())
        checkpointed = subject.run(m.Checkpoint())
        assert checkpointed.applied_lsn >= committed.durable_lsn >= 0, subject.kind


def test_clones_agree(pair: tuple[Online, Offline]) -> None:
    """A clone made by the worker and one made by the helper are the same volume."""
    described = []
    for subject in pair:
        subject.write(FILES)
        subject.run(m.SnapshotCreate("base"))
        target = subject.base / "clone"
        assert subject.run(m.Clone("base", str(target), "clone-1", "c1", 0)).volume_id
        assert subject.run(m.SnapshotList()).snapshots[0].holds == ("clone-1",), subject.kind
        clone = OfflineOps(str(target), KeySpec())
        described.append(dataclasses.replace(trio.run(clone.run, m.Describe()), volume_id="", created_ns=0,
                                             origin_volume_dir=""))
        flattened = trio.run(clone.run, m.Flatten())
        assert flattened.origin_snapshot == "base" and flattened.copied_bytes > 0, subject.kind
        assert subject.run(m.SnapshotRelease("base", "clone-1")) == m.Done()
        assert subject.run(m.SnapshotList()).snapshots[0].holds == (), subject.kind
    assert described[0] == described[1]
    assert (described[0].name, described[0].origin_snapshot, described[0].size) == ("c1", "base", 64 << 20)


def test_describe_agrees(pair: tuple[Online, Offline]) -> None:
    described = [s.run(m.Describe()) for s in pair]
    assert described[0].volume_id != described[1].volume_id
    plain = [dataclasses.replace(d, volume_id="", created_ns=0) for d in described]
    assert plain[0] == plain[1]
    assert (plain[0].size, plain[0].block_size, plain[0].encrypted) == (64 << 20, 64 << 10, False)


def test_what_only_one_side_can_do(pair: tuple[Online, Offline]) -> None:
    """A restore and a rekey need the volume to themselves: a worker refuses them (Busy),
    the helper runs them. QoS rates are a worker's to enforce: the helper refuses them."""
    online, offline = pair
    for subject in pair:
        subject.write(FILES)
        subject.run(m.SnapshotCreate("s1"))
        subject.write({"later": b"x"})
    assert online.outcome(m.SnapshotRestore("s1")) == (
        Busy.__name__, "the volume is mounted; unmount it before a restore")
    assert offline.run(m.SnapshotRestore("s1")).changed > 0
    assert online.outcome(m.Rekey()) == (
        Busy.__name__, "the volume is mounted; unmount it before a rekey (online rekey is not supported yet)")
    assert offline.outcome(m.Rekey())[0] == FailedPrecondition.__name__      # not encrypted

    rates = WorkerRates(iops=500.0)
    state = online.run(m.SetQos(rates))
    assert state.rates == rates and state.requests >= 0
    assert online.run(m.SetQos(None)).rates == WorkerRates()
    assert offline.outcome(m.SetQos(rates)) == (
        FailedPrecondition.__name__,
        "QoS rates are enforced by a volume's mount worker, and this volume is not mounted")


# --- bytes that are not a request --------------------------------------------------------------
BAD = {
    "wrong type": (b'{"op": "resize", "args": {"size": "big"}}', "Expected `int`, got `str` - at `$.size`"),
    "missing field": (b'{"op": "snapshot_create", "args": {}}', "missing required field `name`"),
    "unknown op": (b'{"op": "format_disk"}', "unknown operation 'format_disk'"),
    "not json": (b"stats please", "JSON is malformed"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_bytes_are_a_bad_request_on_both_channels(pair: tuple[Online, Offline], what: str) -> None:
    online, offline = pair
    line, reason = BAD[what]
    assert isinstance(online.ops, OnlineOps)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(online.ops.address)
        sock.sendall(line + b"\n")
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["ok"] is False and answer["class"] == InvalidArgument.__name__, answer
    assert answer["error"].startswith("bad control request: ") and reason in answer["error"], answer
    assert online.run(m.Ping()).pid == online.proc.pid

    setting = json.dumps({"volume_dir": str(offline.volume_dir), "keys": {}, "parent": os.getpid()})
    done = subprocess.run([sys.executable, "-m", "galleonfs.volops.helper"], input=setting.encode() + b"\n" + line
                          + b"\n", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["class"] == InvalidArgument.__name__, answer
    assert answer["error"].startswith("bad helper request: ") and reason in answer["error"], answer
