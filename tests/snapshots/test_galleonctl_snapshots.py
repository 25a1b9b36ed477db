"""Snapshots and clones as users drive them: a real galleond, real mounts, real galleonctl.

What each test holds a user to:

* a snapshot of a mounted volume taken while a writer runs holds every write that had
  returned before ``snapshot create`` was called, and nothing written after it returned;
* ``.snapshots/<name>/`` shows the old tree, is not in the root's listing, and every change
  there fails with EROFS; ``snapshot mount`` mounts one snapshot read-only;
* ``snapshot restore`` is refused while mounted (one line naming the mount point and
  ``--force``), rolls back with ``--force`` and offline;
* ``snapshot diff`` prints created, modified, deleted and renamed paths, A to B and A to live;
* clones are independent both ways; a snapshot with clones cannot be deleted (the message
  names them) until ``volume flatten``;
* list and get show creation time, generation, logical size and the bytes a delete frees;
  ``-o json`` parses; bad input gets one line and the stable exit code;
* a snapshot policy with a seconds-field cron schedule snapshots its volumes and keeps
  ``retention`` of them.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from node.util import api, ctl_json, ctl_ok, is_mount, user_error, wait_until, write_synced

from galleonfs.testing.daemon import RunningDaemon

MiB = 1024 * 1024
RECORD = 4096


def expect_errno(code: int, call: object, *args: object) -> None:
    with pytest.raises(OSError) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.errno == code, info.value


def seconds(text: str) -> float:
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToNanoseconds() / 1e9


def new_volume(d: RunningDaemon, name: str, mount: Path | None, **labels: str) -> None:
    """Set the scene through the API (a galleonctl process costs ~0.5 s on a busy machine)."""
    api(d, "create_volume", name, 64 * MiB, labels=labels)
    if mount is not None:
        api(d, "mount_volume", name, str(mount))


def drop_volume(d: RunningDaemon, name: str, mounted: bool = True) -> None:
    if mounted:
        api(d, "unmount_volume", name=name)
    api(d, "delete_volume", name)


# --- acknowledged writes ------------------------------------------------------------------------
# Appends numbered 4 KiB records; after each write(2) returns, logs "n started returned"
# (CLOCK_MONOTONIC, the same clock in every process) to a file outside the volume.
WRITER = """
import os, sys, time
path, log_path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
with open(log_path, "w", buffering=1) as log:
    n = 0
    while not os.path.exists(log_path + ".stop"):
        record = (b"%08d" % n) * (4096 // 8)
        started = time.monotonic()
        assert os.write(fd, record) == 4096
        log.write(f"{n} {started} {time.monotonic()}\\n")
        n += 1
        time.sleep(0.001)
os.close(fd)
"""


def read_log(path: Path) -> list[tuple[int, float, float]]:
    out = []
    for line in path.read_text().splitlines():
        n, started, returned = line.split()
        out.append((int(n), float(started), float(returned)))
    return out


def test_snapshot_during_writes_holds_exactly_the_returned_writes(
        shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    mnt, log = tmp_path / "mnt", tmp_path / "writer.log"
    new_volume(d, "busy", mnt)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt / "records"), str(log)])
    try:
        wait_until(lambda: log.exists() and len(read_log(log)) >= 100, "the writer got going")
        requested = time.monotonic()
        ctl_ok(d, "snapshot", "create", "busy@mid")
        returned = time.monotonic()
        wait_until(lambda: read_log(log)[-1][1] > returned + 0.2, "the writer went on")
    finally:
        (tmp_path / "writer.log.stop").touch()
        assert writer.wait(timeout=30) == 0
    records = read_log(log)
    acked_before = [n for n, _, ret in records if ret < requested]
    started_after = [n for n, start, _ in records if start > returned]
    assert acked_before and started_after

    data = (mnt / ".snapshots" / "mid" / "records").read_bytes()
    assert len(data) % RECORD == 0, f"the snapshot holds a torn record ({len(data)} bytes)"
    count = len(data) // RECORD
    for n in range(count):
        assert data[n * RECORD:(n + 1) * RECORD] == (b"%08d" % n) * (RECORD // 8), f"record {n}"
    assert count > acked_before[-1], (
        f"record {acked_before[-1]} had returned before the snapshot was asked for; "
        f"the snapshot has only {count} records")
    assert count <= started_after[0], (
        f"record {started_after[0]} was written after the snapshot returned, yet it is in it")
    live = (mnt / "records").read_bytes()
    assert len(live) == len(records) * RECORD and live[:len(data)] == data
    drop_volume(d, "busy")


# --- browsing ------------------------------------------------------------------------------------
def test_browse_snapshots_read_only(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    mnt, alone = tmp_path / "mnt", tmp_path / "alone"
    new_volume(d, "browse", mnt)
    (mnt / "dir").mkdir()
    write_synced(mnt / "a.txt", b"version one")
    write_synced(mnt / "dir" / "b.bin", b"b" * 200_000)
    os.link(mnt / "dir" / "b.bin", mnt / "hard")
    os.symlink("dir/b.bin", mnt / "link")
    os.setxattr(mnt / "a.txt", "user.tag", b"old")
    api(d, "create_snapshot", "browse", "before")
    write_synced(mnt / "a.txt", b"version two, longer")
    os.setxattr(mnt / "a.txt", "user.tag", b"new")
    (mnt / "dir" / "b.bin").unlink()
    (mnt / "hard").unlink()
    os.unlink(mnt / "link")
    os.symlink("elsewhere", mnt / "link")
    write_synced(mnt / "c.txt", b"new")

    assert sorted(os.listdir(mnt)) == ["a.txt", "c.txt", "dir", "link"]
    assert os.listdir(mnt / ".snapshots") == ["before"]
    snap = mnt / ".snapshots" / "before"
    assert sorted(os.listdir(snap)) == ["a.txt", "dir", "hard", "link"]
    assert (snap / "a.txt").read_bytes() == b"version one"
    assert (snap / "dir" / "b.bin").read_bytes() == b"b" * 200_000
    assert os.stat(snap / "hard").st_ino == os.stat(snap / "dir" / "b.bin").st_ino
    assert os.stat(snap / "hard").st_nlink == 2
    assert os.readlink(snap / "link") == "dir/b.bin" and os.readlink(mnt / "link") == "elsewhere"
    assert (snap / "link").read_bytes() == b"b" * 200_000
    assert os.getxattr(snap / "a.txt", "user.tag") == b"old"
    assert os.getxattr(mnt / "a.txt", "user.tag") == b"new"
    assert (mnt / "a.txt").read_bytes() == b"version two, longer"

    expect_errno(errno.EROFS, os.open, snap / "a.txt", os.O_WRONLY)
    expect_errno(errno.EROFS, os.open, snap / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.EROFS, os.unlink, snap / "a.txt")
    expect_errno(errno.EROFS, os.mkdir, snap / "d2")
    expect_errno(errno.EROFS, os.rmdir, snap / "dir")
    expect_errno(errno.EROFS, os.rename, snap / "a.txt", snap / "z.txt")
    expect_errno(errno.EROFS, os.truncate, snap / "a.txt", 0)
    expect_errno(errno.EROFS, os.setxattr, snap / "a.txt", "user.tag", b"x")
    expect_errno(errno.EROFS, os.chmod, snap / "a.txt", 0o600)
    expect_errno(errno.EROFS, os.link, snap / "a.txt", snap / "a2")
    expect_errno(errno.EROFS, os.symlink, "x", snap / "s2")
    expect_errno(errno.EROFS, os.mkdir, mnt / ".snapshots" / "made-by-hand")
    assert (snap / "a.txt").read_bytes() == b"version one"

    out = ctl_ok(d, "snapshot", "mount", "browse@before", str(alone))
    assert out == (f"snapshot browse@before mounted read-only on {alone} "
                   f"(unmount: galleonctl volume unmount {alone})\n")
    assert is_mount(alone)
    assert sorted(os.listdir(alone)) == ["a.txt", "dir", "hard", "link"]
    assert (alone / "dir" / "b.bin").read_bytes() == b"b" * 200_000
    expect_errno(errno.EROFS, os.open, alone / "x", os.O_WRONLY | os.O_CREAT, 0o644)
    user_error(d.ctl("snapshot", "delete", "browse@before"), 5, "mounted on", str(alone))
    ctl_ok(d, "volume", "unmount", str(alone))
    assert not is_mount(alone)
    user_error(d.ctl("snapshot", "mount", "browse@nope", str(alone)), 3, "nope")
    assert not is_mount(alone)
    drop_volume(d, "browse")


# --- restore -------------------------------------------------------------------------------------
def test_restore(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    mnt = tmp_path / "mnt"
    new_volume(d, "rollback", mnt)
    write_synced(mnt / "keep", b"original")
    write_synced(mnt / "gone-later", b"present at the snapshot")
    api(d, "create_snapshot", "rollback", "good")
    write_synced(mnt / "keep", b"damaged")
    (mnt / "gone-later").unlink()
    write_synced(mnt / "junk", b"x" * 100_000)

    user_error(d.ctl("snapshot", "restore", "rollback@good"), 1, str(mnt), "--force", "mounted")
    assert (mnt / "keep").read_bytes() == b"damaged"

    assert ctl_ok(d, "snapshot", "restore", "rollback@good", "--force") == "volume rollback restored to snapshot good\n"
    assert is_mount(mnt)
    assert sorted(os.listdir(mnt)) == ["gone-later", "keep"]
    assert (mnt / "keep").read_bytes() == b"original"
    assert (mnt / "gone-later").read_bytes() == b"present at the snapshot"
    write_synced(mnt / "keep", b"after the restore")      # the volume is writable again

    # Offline: no mount to refuse, and the snapshot survives its own restore.
    api(d, "unmount_volume", name="rollback")
    ctl_ok(d, "snapshot", "restore", "rollback@good")
    api(d, "mount_volume", "rollback", str(mnt))
    assert (mnt / "keep").read_bytes() == b"original"
    assert os.listdir(mnt / ".snapshots") == ["good"]
    user_error(d.ctl("snapshot", "restore", "rollback@missing", "--force"), 3, "missing")
    drop_volume(d, "rollback")


# --- diff, list, get -----------------------------------------------------------------------------
def test_diff_list_get_and_delete(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    mnt = tmp_path / "mnt"
    new_volume(d, "changes", mnt)
    (mnt / "sub").mkdir()
    write_synced(mnt / "modified", b"1")
    write_synced(mnt / "deleted", os.urandom(300_000))     # random: no block dedups
    write_synced(mnt / "sub" / "renamed", b"3")
    write_synced(mnt / "same", b"4")
    started = time.time()
    ctl_ok(d, "snapshot", "create", "changes@a")
    write_synced(mnt / "created", b"5")
    write_synced(mnt / "modified", b"1, changed")
    (mnt / "deleted").unlink()
    os.rename(mnt / "sub" / "renamed", mnt / "moved")
    api(d, "create_snapshot", "changes", "b")
    write_synced(mnt / "after-b", b"6")

    a_to_b = {(e["kind"], e["path"], e.get("new_path", ""))
              for e in ctl_json(d, "snapshot", "diff", "changes@a", "changes@b")}
    assert a_to_b == {("+", "/created", ""), ("M", "/modified", ""), ("-", "/deleted", ""),
                      ("R", "/sub/renamed", "/moved"), ("M", "/sub", "")}
    lines = ctl_ok(d, "snapshot", "diff", "changes@a", "b").splitlines()
    assert "R\t/sub/renamed -> /moved" in lines and "-\t/deleted" in lines
    assert "+\t/created" in lines and "M\t/modified" in lines
    a_to_live = {(e["kind"], e["path"]) for e in ctl_json(d, "snapshot", "diff", "changes@a")}
    assert ("+", "/after-b") in a_to_live and ("+", "/created") in a_to_live
    assert ctl_ok(d, "snapshot", "diff", "changes@b", "changes@b") == "no changes\n"
    user_error(d.ctl("snapshot", "diff", "changes@b", "changes@a"), 1, "older")

    listed = ctl_json(d, "snapshot", "list", "changes")
    assert [s["name"] for s in listed] == ["a", "b"]
    a, b = listed
    assert int(a["generation"]) < int(b["generation"])
    assert started - 1 <= seconds(a["created_at"]) <= seconds(b["created_at"]) <= time.time() + 1
    # Logical size: the volume's used bytes when the snapshot was taken (unique blocks,
    # those that only an older snapshot keeps included): 1 + 300,000 + 1 + 1 at a; at b the
    # deleted file's blocks are still kept by a, plus "5" and "1, changed".
    assert (int(a["logical_bytes"]), int(b["logical_bytes"])) == (300_003, 300_014)
    # Only a still holds the deleted file's blocks: deleting it frees them.
    assert int(a["freeable_bytes"]) >= 300_000 and int(b["freeable_bytes"]) < 300_000
    assert ctl_json(d, "snapshot", "get", "changes@a") == a
    table = ctl_ok(d, "snapshot", "list", "changes").splitlines()
    assert table[0].split()[:3] == ["SNAPSHOT", "GENERATION", "LOGICAL"]
    assert table[1].split()[:2] == ["changes@a", str(a["generation"])]
    detail = ctl_ok(d, "snapshot", "get", "changes@a")
    assert "deleting frees:" in detail and "generation:" in detail

    used = int(api(d, "volume_stats", "changes")["used_bytes"])
    out = ctl_ok(d, "snapshot", "delete", "changes@a")
    assert out.startswith("snapshot changes@a deleted; ") and "freed" in out
    # the volume's usage drops by what get promised (the blocks only a held)
    assert int(api(d, "volume_stats", "changes")["used_bytes"]) == used - int(a["freeable_bytes"])
    assert [s["name"] for s in ctl_json(d, "snapshot", "list", "changes")] == ["b"]
    assert os.listdir(mnt / ".snapshots") == ["b"]
    drop_volume(d, "changes")


# --- clones --------------------------------------------------------------------------------------
def test_clone_independence_and_flatten(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    mnt, cmnt = tmp_path / "origin", tmp_path / "clone"
    new_volume(d, "parent", mnt)
    shared = os.urandom(500_000)
    write_synced(mnt / "shared", shared)
    api(d, "create_snapshot", "parent", "base")
    out = ctl_ok(d, "volume", "clone", "parent@base", "child")
    assert out.startswith("volume child cloned from parent@base")
    api(d, "mount_volume", "child", str(cmnt))
    assert (cmnt / "shared").read_bytes() == shared

    write_synced(mnt / "shared", b"origin's change")
    write_synced(mnt / "origin-only", b"o")
    write_synced(cmnt / "clone-only", b"c")
    with open(cmnt / "shared", "r+b") as f:
        f.write(b"clone's change")
        os.fsync(f.fileno())
    assert (mnt / "shared").read_bytes() == b"origin's change"
    assert (cmnt / "shared").read_bytes() == b"clone's change" + shared[len(b"clone's change"):]
    assert not (mnt / "clone-only").exists() and not (cmnt / "origin-only").exists()
    assert (mnt / ".snapshots" / "base" / "shared").read_bytes() == shared

    api(d, "clone_volume", "parent", "base", "child2")
    assert ctl_json(d, "snapshot", "get", "parent@base")["clones"] == ["child", "child2"]
    user_error(d.ctl("snapshot", "delete", "parent@base"), 5, "child, child2", "flatten")
    api(d, "delete_volume", "child2")          # deleting a clone releases its hold too
    assert ctl_json(d, "snapshot", "get", "parent@base")["clones"] == ["child"]
    user_error(d.ctl("snapshot", "delete", "parent@base"), 5, "child", "flatten")
    user_error(d.ctl("volume", "delete", "parent", "--force"), 5, "child", "flatten")
    assert (cmnt / "shared").read_bytes()[len(b"clone's change"):] == shared[len(b"clone's change"):]

    assert ctl_ok(d, "volume", "flatten", "child") == "volume child flattened: it no longer depends on its origin\n"
    user_error(d.ctl("volume", "flatten", "child"), 1, "not a clone")
    assert ctl_json(d, "snapshot", "get", "parent@base").get("clones", []) == []
    ctl_ok(d, "snapshot", "delete", "parent@base")
    assert os.listdir(mnt / ".snapshots") == []
    # the clone still reads what it shared, now from its own segments
    api(d, "unmount_volume", name="child")
    api(d, "mount_volume", "child", str(cmnt))
    assert (cmnt / "shared").read_bytes() == b"clone's change" + shared[len(b"clone's change"):]
    drop_volume(d, "child")
    drop_volume(d, "parent")


# --- bad input -----------------------------------------------------------------------------------
def test_bad_input_is_one_line(shared_daemon: RunningDaemon) -> None:
    d = shared_daemon
    new_volume(d, "strict", None)
    api(d, "create_snapshot", "strict", "one")
    before = api(d, "list_snapshots", "strict")
    user_error(d.ctl("snapshot", "create", "nosuch@s"), 3, "nosuch")
    user_error(d.ctl("snapshot", "create", "strict@a/b"), 2, "invalid snapshot name")
    user_error(d.ctl("snapshot", "create", "strict"), 2, "VOLUME@SNAPSHOT")
    user_error(d.ctl("snapshot", "create", "strict@one"), 4, "one", "already exists")
    user_error(d.ctl("snapshot", "delete", "strict@two"), 3, "two")
    user_error(d.ctl("volume", "clone", "strict@one", "strict"), 4, "strict")
    user_error(d.ctl("snapshot-policy", "create", "p", "--schedule", "every day", "--retention", "2"), 2,
               "schedule")
    assert api(d, "list_snapshots", "strict") == before
    assert [v["name"] for v in api(d, "list_volumes")].count("strict") == 1
    assert api(d, "list_policies") == []
    api(d, "delete_volume", "strict")


# --- policies ------------------------------------------------------------------------------------
def test_policy_takes_and_expires_snapshots(shared_daemon: RunningDaemon) -> None:
    d = shared_daemon
    new_volume(d, "scheduled", None, backup="yes")
    new_volume(d, "unscheduled", None)
    api(d, "create_snapshot", "scheduled", "manual")
    out = ctl_ok(d, "snapshot-policy", "create", "often", "--schedule", "* * * * * */1",
                 "--retention", "2", "-l", "backup=yes")
    assert out == "snapshot policy often created: * * * * * */1, keeping 2 per volume\n"
    policy = ctl_json(d, "snapshot-policy", "get", "often")
    assert (policy["schedule"], policy["retention"], policy["volume_selector"]) == ("* * * * * */1", 2, {"backup": "yes"})
    seen: set[str] = set()

    def ran_three_times() -> bool:
        names = [s["name"] for s in api(d, "list_snapshots", "scheduled")]
        seen.update(n for n in names if n.startswith("often-"))
        return len(seen) >= 3

    wait_until(ran_three_times, "the policy took three snapshots", timeout_s=30)
    ctl_ok(d, "snapshot-policy", "delete", "often")
    assert ctl_json(d, "snapshot-policy", "list") == []
    names = [s["name"] for s in api(d, "list_snapshots", "scheduled")]
    own = [n for n in names if n.startswith("often-")]
    assert len(own) == 2, f"retention 2, but the policy's snapshots are {own}"
    assert own == sorted(seen)[-2:], "the newest two are kept"
    assert "manual" in names, "a policy expires only its own snapshots"
    assert api(d, "list_snapshots", "unscheduled") == []
    api(d, "delete_volume", "scheduled")
    api(d, "delete_volume", "unscheduled")

