"""Encryption, compression and dedup as storage-class parameters, through galleond.

A daemon configured with a key file creates volumes of the built-in ``encrypted`` class
sealed under it; its mount workers get the same key source; snapshots and clones stay in
the volume's family. A daemon without a key source refuses such a class in one sentence,
and a daemon with the wrong key refuses to mount the volume, naming the volume and the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.crypto.keys import KeyFile
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.errors import FailedPrecondition, KeyUnavailable
from galleonfs.testing.daemon import RunningDaemon

from .util import ctl_json, ctl_ok, mounts_under, user_error, write_synced

MARKER = b"MARKER-DAEMON-SECRET-4411"


def node_dir(tmp_path: Path) -> Path:
    (tmp_path / "node").mkdir(exist_ok=True)
    return tmp_path / "node"


@pytest.fixture
def keyed(tmp_path: Path, fuse_ok: None) -> Iterator[RunningDaemon]:
    d = RunningDaemon(node_dir(tmp_path), env={"GALLEONFS_KEY_FILE": str(tmp_path / "kek")})
    try:
        d.start()
        yield d
    finally:
        if d.proc is not None:
            d.stop()
        left = mounts_under(d.base)
        d.cleanup()
    assert left == []


def volume_dirs(daemon: RunningDaemon) -> dict[str, Path]:
    volumes = ctl_json(daemon, "volume", "list") if daemon.proc is not None else []
    return {v["name"]: daemon.data_dir / "volumes" / v["id"] for v in volumes}


def test_encrypted_class_volume_seals_everything_and_clones_stay_readable(keyed: RunningDaemon,
                                                                          tmp_path: Path) -> None:
    ctl_ok(keyed, "volume", "create", "sec", "--size", "64M", "--class", "encrypted")
    mnt = tmp_path / "mnt"
    ctl_ok(keyed, "volume", "mount", "sec", str(mnt))
    write_synced(mnt / MARKER.decode(), MARKER * 1000)
    ctl_ok(keyed, "snapshot", "create", "sec@one")
    ctl_ok(keyed, "volume", "clone", "sec@one", "sec-copy")
    ctl_ok(keyed, "volume", "unmount", "sec")
    dirs = volume_dirs(keyed)
    for path in dirs["sec"].rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path

    copy = tmp_path / "copy"
    ctl_ok(keyed, "volume", "mount", "sec-copy", str(copy))
    assert (copy / MARKER.decode()).read_bytes() == MARKER * 1000
    (copy / "only-in-clone").write_bytes(b"x")
    ctl_ok(keyed, "volume", "unmount", "sec-copy")
    assert keyed.stop() == 0

    keys = KeyFile(str(tmp_path / "kek"), create=False)
    for name, path in dirs.items():
        report = fsck(str(path), keys=keys)
        assert report.clean, f"{name}: {report.render()}"
        with pytest.raises(KeyUnavailable):
            Engine.open(str(path), read_only=True)      # sealed: nothing opens without the key


def test_a_class_with_compression_and_no_dedup_reaches_the_engine(keyed: RunningDaemon, tmp_path: Path) -> None:
    spec = tmp_path / "class.json"
    spec.write_text(json.dumps({"name": "packed", "parameters": {"compression": "zstd", "dedup": "off"}}))
    ctl_ok(keyed, "storage-class", "create", str(spec))
    ctl_ok(keyed, "volume", "create", "packed-vol", "--size", "64M", "--class", "packed")
    path = volume_dirs(keyed)["packed-vol"]
    assert keyed.stop() == 0
    engine = Engine.open(str(path), read_only=True)
    try:
        assert (engine.codec.compression, engine.dedup, engine.crypto) == ("zstd", False, None)
    finally:
        engine.close()


def test_without_a_key_source_the_encrypted_class_is_refused(tmp_path: Path, fuse_ok: None) -> None:
    d = RunningDaemon(node_dir(tmp_path)).start()
    try:
        done = d.ctl("volume", "create", "sec", "--size", "64M", "--class", "encrypted")
        user_error(done, FailedPrecondition.exit_code, "storage class encrypted", "no key source", "key_file")
        assert ctl_json(d, "volume", "list") == []
        assert list((d.data_dir / "volumes").iterdir()) == []
    finally:
        d.stop()
        d.cleanup()


@pytest.mark.allow_warnings
def test_a_daemon_with_the_wrong_key_refuses_to_mount(tmp_path: Path, fuse_ok: None) -> None:
    good = RunningDaemon(node_dir(tmp_path), env={"GALLEONFS_KEY_FILE": str(tmp_path / "kek")}).start()
    try:
        ctl_ok(good, "volume", "create", "sec", "--size", "64M", "--class", "encrypted")
    finally:
        assert good.stop() == 0
    KeyFile(str(tmp_path / "other-kek"))
    wrong = RunningDaemon(node_dir(tmp_path), env={"GALLEONFS_KEY_FILE": str(tmp_path / "other-kek")}).start()
    try:
        done = wrong.ctl("volume", "mount", "sec", str(tmp_path / "mnt"))
        message = user_error(done, KeyUnavailable.exit_code, "sec", f"key file {tmp_path / 'other-kek'}")
        assert "Traceback" not in message
        assert not os.path.ismount(tmp_path / "mnt")
        assert ctl_json(wrong, "volume", "get", "sec")["state"] == "AVAILABLE"
    finally:
        wrong.stop()
        wrong.cleanup()


def test_key_rotate_then_restart_remounts_and_rekey_rewrites(keyed: RunningDaemon, tmp_path: Path) -> None:
    ctl_ok(keyed, "volume", "create", "sec", "--size", "64M", "--class", "encrypted")
    mnt = tmp_path / "mnt"
    ctl_ok(keyed, "volume", "mount", "sec", str(mnt))
    write_synced(mnt / "data", MARKER * 5000)
    kek = tmp_path / "kek"
    before = kek.read_bytes()

    out = ctl_ok(keyed, "key", "rotate")
    assert "1 volume key file(s) re-wrapped" in out and f"{kek}.old" in out
    assert kek.read_bytes() != before and (tmp_path / "kek.old").read_bytes() == before
    assert os.stat(kek).st_mode & 0o777 == 0o600
    assert (mnt / "data").read_bytes() == MARKER * 5000          # the mount never noticed

    assert keyed.stop() == 0                                     # unmounts; restart remounts
    keyed.start()
    assert (mnt / "data").read_bytes() == MARKER * 5000          # unwrapped with the new KEK

    done = keyed.ctl("volume", "rekey", "sec")
    user_error(done, 5, "mounted", "unmount it before a rekey")
    ctl_ok(keyed, "volume", "unmount", "sec")
    out = ctl_ok(keyed, "volume", "rekey", "sec")
    assert out == "volume sec rekeyed: everything is sealed under a new data key (epoch 2)\n"
    ctl_ok(keyed, "volume", "mount", "sec", str(mnt))
    assert (mnt / "data").read_bytes() == MARKER * 5000
    ctl_ok(keyed, "volume", "unmount", "sec")
    path = volume_dirs(keyed)["sec"]
    assert sorted(json.loads((path / "KEY").read_text())["keys"]) == ["2"]
    user_error(keyed.ctl("volume", "rekey", "nope"), 3, "does not exist")
    audited = [(r["method"], r["code"]) for r in ctl_json(keyed, "audit", "list", "--volume", "sec")
               if r["method"].startswith("galleonfs.v1.KeyService/")]
    assert audited == [("galleonfs.v1.KeyService/Rekey", "FAILED_PRECONDITION"),   # busy: mounted
                       ("galleonfs.v1.KeyService/Rekey", "OK")]
    rotations = [r for r in ctl_json(keyed, "audit", "list") if r["method"] == "galleonfs.v1.KeyService/Rotate"]
    assert [r["code"] for r in rotations] == ["OK"]
    assert keyed.stop() == 0
    assert fsck(str(path), keys=KeyFile(str(kek), create=False)).clean
