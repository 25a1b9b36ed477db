"""The whole life of a volume through galleonctl, and what each output format shows.

create -> list / get / stats -> mount -> files through the mount point -> expand ->
unmount -> mount again (the data was stored, not only cached) -> delete. ``-o json`` and
``-o yaml`` must carry every field of the API message with the right values; tables must
be readable. Ephemeral volumes go away with their last mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from galleonfs.cli.output import to_dict
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import types_pb2, volume_pb2

from .util import ctl_json, ctl_ok, is_mount, statvfs_size, user_error

MiB = 1024 * 1024
# The fields the issue names; the proto may grow, but must keep these.
DOCUMENTED_VOLUME_FIELDS = {"id", "name", "type", "state", "size_bytes", "access_modes",
                            "storage_class", "labels", "created_at", "updated_at", "mount_points",
                            "block_size_bytes", "message"}
VOLUME_FIELDS = {f.name for f in types_pb2.Volume.DESCRIPTOR.fields}
STATS_FIELDS = {f.name for f in volume_pb2.VolumeStats.DESCRIPTOR.fields}


def seconds(text: str) -> float:
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToNanoseconds() / 1e9


def table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.strip().splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


def detail(text: str) -> dict[str, str]:
    """``key:  value`` lines of a detail view (repeated keys keep the last value)."""
    out = {}
    for line in text.strip().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def check_volume_dict(v: dict[str, Any], *, name: str, state: str, size: int,
                      mounts: list[tuple[str, bool]], started: float) -> None:
    assert set(v) == VOLUME_FIELDS, set(v) ^ VOLUME_FIELDS
    assert v["name"] == name
    assert uuid.UUID(v["id"])
    assert v["type"] == "PERSISTENT"
    assert v["state"] == state
    assert v["size_bytes"] == str(size)           # proto3 JSON: 64-bit integers are strings
    assert v["access_modes"] == ["READ_WRITE_ONCE"]
    assert v["storage_class"] == "local"
    assert v["labels"] == {"app": "web", "tier": "gold"}
    assert v["block_size_bytes"] == 64 * 1024
    assert v["message"] == ""
    created, updated = seconds(v["created_at"]), seconds(v["updated_at"])
    assert started - 1 <= created <= updated <= time.time() + 1
    assert [(m["path"], m["read_only"]) for m in v["mount_points"]] == mounts
    for m in v["mount_points"]:
        assert created <= seconds(m["mounted_at"]) <= time.time() + 1


def test_volume_lifecycle(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    assert VOLUME_FIELDS >= DOCUMENTED_VOLUME_FIELDS
    started = time.time()
    out = ctl_ok(d, "volume", "create", "life", "--size", "64M", "--class", "local",
                 "--access-mode", "ReadWriteOnce", "--type", "persistent",
                 "--label", "app=web", "--label", "tier=gold")
    assert out.startswith("volume life created (64M, local, id ")

    # json and yaml carry every field, with the same values
    v = ctl_json(d, "volume", "get", "life")
    check_volume_dict(v, name="life", state="AVAILABLE", size=64 * MiB, mounts=[], started=started)
    assert yaml.safe_load(ctl_ok(d, "volume", "get", "life", "-o", "yaml")) == v
    listed = [x for x in ctl_json(d, "volume", "list") if x["name"] == "life"]
    assert listed == [v]
    assert yaml.safe_load(ctl_ok(d, "volume", "list", "-o", "yaml")) == ctl_json(d, "volume", "list")
    assert [x["name"] for x in ctl_json(d, "volume", "list", "-l", "app=web", "-l", "tier=gold")] == ["life"]
    assert ctl_json(d, "volume", "list", "-l", "app=db") == []

    # tables a person can read
    headers, rows = table(ctl_ok(d, "volume", "list"))
    assert headers == ["NAME", "STATE", "SIZE", "CLASS", "ACCESS", "TYPE", "MOUNTS", "AGE"]
    assert ["life", "available", "64M", "local", "RWO", "persistent", "-"] in [r[:7] for r in rows]
    shown = detail(ctl_ok(d, "volume", "get", "life"))
    assert shown["name"] == "life" and shown["id"] == v["id"] and shown["state"] == "available"
    assert shown["size"] == "64M (67108864 bytes)"
    assert shown["block size"] == "64K" and shown["storage class"] == "local"
    assert shown["labels"] == "app=web, tier=gold"

    stats = ctl_json(d, "volume", "stats", "life")
    assert set(stats) == STATS_FIELDS
    assert stats["name"] == "life" and stats["id"] == v["id"]
    assert not stats["mounted"] and stats["worker_pid"] == 0
    assert int(stats["size_bytes"]) == 64 * MiB and int(stats["inodes_used"]) >= 1
    assert yaml.safe_load(ctl_ok(d, "volume", "stats", "life", "-o", "yaml"))["id"] == v["id"]

    # mount, and use it
    mnt = tmp_path / "mnt"
    assert ctl_ok(d, "volume", "mount", "life", str(mnt)) == f"volume life mounted on {mnt}\n"
    assert is_mount(mnt)
    v = ctl_json(d, "volume", "get", "life")
    check_volume_dict(v, name="life", state="MOUNTED", size=64 * MiB, mounts=[(str(mnt), False)],
                      started=started)
    headers, rows = table(ctl_ok(d, "volume", "list"))
    assert ["life", "mounted", "64M", "local", "RWO", "persistent", str(mnt)] in [r[:7] for r in rows]
    big = os.urandom(3 * MiB + 12345)
    (mnt / "big").write_bytes(big)
    (mnt / "dir").mkdir()
    (mnt / "dir" / "small").write_text("hello, galleon\n")
    assert (mnt / "big").read_bytes() == big
    assert sorted(os.listdir(mnt)) == ["big", "dir"]

    stats = ctl_json(d, "volume", "stats", "life")
    pid = stats["worker_pid"]
    assert stats["mounted"] and pid > 0
    assert b"galleonfs.fuse.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    os.sync()
    assert int(ctl_json(d, "volume", "stats", "life")["used_bytes"]) >= len(big)
    shown = detail(ctl_ok(d, "volume", "stats", "life"))
    assert shown["mounted"] == f"yes (worker pid {pid})"

    # online expansion, seen by df at once
    assert ctl_ok(d, "volume", "expand", "life", "--size", "128M") == "volume life is now 128M\n"
    assert statvfs_size(mnt) == 128 * MiB
    assert int(ctl_json(d, "volume", "get", "life")["size_bytes"]) == 128 * MiB

    # unmount by name; mount again: the data was stored, not only cached
    assert ctl_ok(d, "volume", "unmount", "life") == "volume life unmounted from every mount point\n"
    assert not is_mount(mnt)
    assert os.listdir(mnt) == []
    v = ctl_json(d, "volume", "get", "life")
    assert v["state"] == "AVAILABLE" and v["mount_points"] == []
    ctl_ok(d, "volume", "mount", "life", str(mnt))
    assert (mnt / "big").read_bytes() == big
    assert (mnt / "dir" / "small").read_text() == "hello, galleon\n"
    assert statvfs_size(mnt) == 128 * MiB
    assert ctl_ok(d, "volume", "unmount", str(mnt)) == f"volume life unmounted from {mnt}\n"
    assert not is_mount(mnt)

    # delete
    volume_dir = d.data_dir / "volumes" / v["id"]
    assert volume_dir.is_dir()
    assert ctl_ok(d, "volume", "delete", "life") == "volume life deleted\n"
    user_error(d.ctl("volume", "get", "life"), 3, "'life' does not exist")
    assert not volume_dir.exists()
    assert "life" not in [x["name"] for x in ctl_json(d, "volume", "list")]


def test_get_by_id_and_json_list_matches_api(shared_daemon: RunningDaemon, client: Client) -> None:
    created = client.create_volume("by-id", 8 * MiB, labels={"k": "v"})
    by_id = ctl_json(shared_daemon, "volume", "get", created.id)
    assert by_id["name"] == "by-id" and by_id["id"] == created.id
    assert by_id == to_dict(client.get_volume("by-id"))
    assert json.loads(ctl_ok(shared_daemon, "volume", "list", "-o", "json")) == [
        to_dict(v) for v in client.list_volumes()]
    client.delete_volume("by-id")


def test_ephemeral_volume_goes_with_its_last_mount(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "scratch", "--size", "16M", "--type", "ephemeral")
    v = ctl_json(d, "volume", "get", "scratch")
    assert v["type"] == "EPHEMERAL"
    volume_dir = d.data_dir / "volumes" / v["id"]
    a, b = tmp_path / "a", tmp_path / "b"
    ctl_ok(d, "volume", "mount", "scratch", str(a))
    ctl_ok(d, "volume", "mount", "scratch", str(b), "--read-only")
    (a / "f").write_bytes(b"temporary")
    assert (b / "f").read_bytes() == b"temporary"

    ctl_ok(d, "volume", "unmount", str(a))
    # one mount point left: the volume and its data stay
    left = ctl_json(d, "volume", "get", "scratch")["mount_points"]
    assert [(m["path"], m["read_only"]) for m in left] == [(str(b), True)]
    assert (b / "f").read_bytes() == b"temporary"

    assert ctl_ok(d, "volume", "unmount", str(b)) == (
        f"volume scratch unmounted from {b}; it was ephemeral and has been deleted\n")
    user_error(d.ctl("volume", "get", "scratch"), 3, "does not exist")
    assert not volume_dir.exists()
    assert not is_mount(a) and not is_mount(b)


def test_node_status(shared_daemon: RunningDaemon, client: Client, tmp_path: Path) -> None:
    d = shared_daemon
    client.create_volume("status-probe", 8 * MiB)
    client.mount_volume("status-probe", str(tmp_path / "m"))
    try:
        n = ctl_json(d, "node", "status")
        assert n["ready"] and n["problems"] == []
        assert n["data_dir"] == str(d.data_dir) and n["listen"] == [d.address]
        assert int(n["mount_workers_up"]) == int(n["mount_workers_expected"]) >= 1
        volumes = client.list_volumes()
        assert sum(int(x) for x in n["volumes_by_state"].values()) == len(volumes)
        assert int(n["volumes_by_state"]["mounted"]) == sum(1 for v in volumes if v.mount_points)
        assert int(n["provisioned_bytes"]) == sum(v.size_bytes for v in volumes)
        assert 0 < int(n["available_bytes"]) <= int(n["capacity_bytes"])
        shown = ctl_ok(d, "node", "status")
        assert "ready:" in shown and f"{n['mount_workers_up']} up of {n['mount_workers_expected']}" in shown
        assert yaml.safe_load(ctl_ok(d, "node", "status", "-o", "yaml"))["node_id"] == n["node_id"]
    finally:
        client.unmount_volume("status-probe")
        client.delete_volume("status-probe")


def test_unmount_busy_then_force(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "busy", "--size", "8M")
    mnt = tmp_path / "mnt"
    ctl_ok(d, "volume", "mount", "busy", str(mnt))
    (mnt / "f").write_bytes(b"flushed before the forced unmount")
    pid = ctl_json(d, "volume", "stats", "busy")["worker_pid"]
    user = subprocess.Popen(["sleep", "600"], cwd=mnt)   # a shell sitting in the mount point
    try:
        user_error(d.ctl("volume", "unmount", "busy"), 5, f"mount point {mnt} is busy", "--force")
        assert is_mount(mnt) and ctl_json(d, "volume", "get", "busy")["state"] == "MOUNTED"
        assert ctl_ok(d, "volume", "unmount", str(mnt), "--force") == f"volume busy unmounted from {mnt}\n"
        assert not is_mount(mnt)
        assert ctl_json(d, "volume", "get", "busy")["state"] == "AVAILABLE"
        assert not os.path.exists(f"/proc/{pid}"), "the worker outlived the forced unmount"
    finally:
        user.kill()
        user.wait()
    ctl_ok(d, "volume", "mount", "busy", str(mnt))
    assert (mnt / "f").read_bytes() == b"flushed before the forced unmount"
    ctl_ok(d, "volume", "delete", "busy", "--force")
    assert not is_mount(mnt)
