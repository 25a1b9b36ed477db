"""Storage classes through galleonctl: built-ins, files in YAML and JSON, what a class does
to the volumes made from it, and the deletions that are refused."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from galleonfs.engine.fsck import fsck
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.mount import MountedVolume

from .util import ctl_json, ctl_ok, user_error

REPO = Path(__file__).resolve().parents[2]
CLASS_FIELDS = {"name", "parameters", "reclaim_policy", "volume_binding_mode", "builtin",
                "is_default", "created_at"}


def seconds(text: str) -> float:
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToNanoseconds() / 1e9


def classes(d: RunningDaemon) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in ctl_json(d, "storage-class", "list")}


def test_builtin_classes_at_first_start(daemon: RunningDaemon) -> None:
    d = daemon
    found = classes(d)
    assert sorted(found) == ["encrypted", "local"]
    local, encrypted = found["local"], found["encrypted"]
    assert set(local) == CLASS_FIELDS
    assert local["builtin"] and local["is_default"]
    assert local["parameters"] == {"block_size": "64K"}
    assert local["reclaim_policy"] == "DELETE" and local["volume_binding_mode"] == "IMMEDIATE"
    assert encrypted["builtin"] and not encrypted["is_default"]
    assert encrypted["parameters"] == {"block_size": "64K", "encryption": "aes-256-gcm"}
    assert ctl_json(d, "storage-class", "get", "local") == local
    assert yaml.safe_load(ctl_ok(d, "storage-class", "get", "encrypted", "-o", "yaml")) == encrypted
    rows = [line.split() for line in ctl_ok(d, "storage-class", "list").splitlines()]
    assert rows[0] == ["NAME", "DEFAULT", "RECLAIM", "BINDING", "PARAMETERS"]
    assert rows[1:] == [["encrypted", "delete", "immediate", "block_size=64K,encryption=aes-256-gcm", "built-in"],
                        ["local", "yes", "delete", "immediate", "block_size=64K", "built-in"]]
    assert ctl_ok(d, "volume", "list") == "no volumes\n"

    # a volume without --class gets the default class
    ctl_ok(d, "volume", "create", "plain", "--size", "8M")
    v = ctl_json(d, "volume", "get", "plain")
    assert v["storage_class"] == "local" and v["block_size_bytes"] == 64 * 1024

    # the built-ins survive a restart unchanged, and cannot be deleted
    assert d.stop() == 0
    d.start()
    assert classes(d) == found
    for name in ("local", "encrypted"):
        user_error(d.ctl("storage-class", "delete", name), 1, f"storage class {name} is built in")
    assert classes(d) == found


def test_encrypted_volume_without_a_node_key_is_refused_not_faked(shared_daemon: RunningDaemon) -> None:
    """This daemon has no key source: an encrypted class must not fall back to plain."""
    d = shared_daemon
    dirs = sorted(os.listdir(d.data_dir / "volumes"))
    user_error(d.ctl("volume", "create", "secret", "--size", "8M", "--class", "encrypted"),
               1, "storage class encrypted", "no key source", "key_file")
    user_error(d.ctl("volume", "get", "secret"), 3)
    assert sorted(os.listdir(d.data_dir / "volumes")) == dirs


def test_class_from_yaml_retains_data(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    # the example the project ships: block_size 128K, reclaim_policy retain
    started = time.time()
    assert ctl_ok(d, "storage-class", "create", str(REPO / "deploy" / "storage-class-fast.yaml")) == \
        "storage class fast created\n"
    fast = ctl_json(d, "storage-class", "get", "fast")
    assert fast["parameters"] == {"block_size": "128K"}
    assert fast["reclaim_policy"] == "RETAIN" and fast["volume_binding_mode"] == "IMMEDIATE"
    assert not fast["builtin"] and not fast["is_default"]
    assert started - 1 <= seconds(fast["created_at"]) <= time.time() + 1
    assert "fast" in classes(d)
    assert user_error(d.ctl("storage-class", "create", str(REPO / "deploy" / "storage-class-fast.yaml")),
                      4, "'fast' already exists")

    ctl_ok(d, "volume", "create", "kept", "--size", "16M", "--class", "fast")
    v = ctl_json(d, "volume", "get", "kept")
    assert v["storage_class"] == "fast" and v["block_size_bytes"] == 128 * 1024
    mnt = tmp_path / "mnt"
    ctl_ok(d, "volume", "mount", "kept", str(mnt))
    data = os.urandom(1_000_000)
    (mnt / "f").write_bytes(data)
    ctl_ok(d, "volume", "unmount", str(mnt))

    # the class is in use: not deletable, and the message names the volume
    user_error(d.ctl("storage-class", "delete", "fast"), 5, "used by volumes kept")

    out = ctl_ok(d, "volume", "delete", "kept")
    assert out.startswith("volume kept deleted; its data was kept in ")
    retained = Path(out.strip().rsplit(" ", 1)[1])
    assert retained.parent == d.data_dir / "retained" and v["id"] in retained.name
    assert not (d.data_dir / "volumes" / v["id"]).exists()
    report = fsck(str(retained))
    assert report.clean, report.render()
    # the retained directory is a whole volume: it mounts and holds the data
    copy = tmp_path / "copy"
    shutil.copytree(retained, copy)
    (tmp_path / "check").mkdir()
    with MountedVolume(copy, tmp_path / "check").mount() as vol:
        assert (vol / "f").read_bytes() == data

    assert ctl_ok(d, "storage-class", "delete", "fast") == "storage class fast deleted\n"
    user_error(d.ctl("storage-class", "get", "fast"), 3, "storage class 'fast' does not exist")


def test_class_from_json(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"name": "small-blocks", "parameters": {"block_size": "16K",
                                "write_concern": "durable"}, "reclaimPolicy": "Delete"}))
    ctl_ok(d, "storage-class", "create", str(path))
    c = ctl_json(d, "storage-class", "get", "small-blocks")
    assert c["parameters"] == {"block_size": "16K", "write_concern": "durable"}
    assert c["reclaim_policy"] == "DELETE"
    ctl_ok(d, "volume", "create", "small", "--size", "8M", "--class", "small-blocks")
    assert ctl_json(d, "volume", "get", "small")["block_size_bytes"] == 16 * 1024
    ctl_ok(d, "volume", "delete", "small")
    ctl_ok(d, "storage-class", "delete", "small-blocks")


def test_yaml_booleans_and_numbers(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    """YAML reads ``dedup: on`` as a boolean and ``replication_factor: 1`` as a number; the
    class must still mean what the file says."""
    d = shared_daemon
    path = tmp_path / "plain.yaml"
    path.write_text("name: plain-yaml\nparameters:\n  dedup: on\n  replication_factor: 1\n"
                    "  compression: none\n")
    ctl_ok(d, "storage-class", "create", str(path))
    c = ctl_json(d, "storage-class", "get", "plain-yaml")
    assert c["parameters"] == {"dedup": "on", "replication_factor": "1", "compression": "none"}
    path.write_text("name: nodedup\nparameters:\n  dedup: off\n")
    ctl_ok(d, "storage-class", "create", str(path))
    assert ctl_json(d, "storage-class", "get", "nodedup")["parameters"] == {"dedup": "off"}
    for name in ("plain-yaml", "nodedup"):
        ctl_ok(d, "storage-class", "delete", name)


def test_default_class(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    path = tmp_path / "big.yaml"
    path.write_text("name: big-blocks\ndefault: true\nparameters: {block_size: 256K}\n")
    ctl_ok(d, "storage-class", "create", str(path))
    found = classes(d)
    assert found["big-blocks"]["is_default"] and not found["local"]["is_default"]
    ctl_ok(d, "volume", "create", "dflt", "--size", "8M")
    v = ctl_json(d, "volume", "get", "dflt")
    assert v["storage_class"] == "big-blocks" and v["block_size_bytes"] == 256 * 1024
    ctl_ok(d, "volume", "delete", "dflt")
    # deleting the default class gives the role back to the built-in one
    ctl_ok(d, "storage-class", "delete", "big-blocks")
    found = classes(d)
    assert [n for n, c in found.items() if c["is_default"]] == ["local"]
    ctl_ok(d, "volume", "create", "after", "--size", "8M")
    assert ctl_json(d, "volume", "get", "after")["storage_class"] == "local"
