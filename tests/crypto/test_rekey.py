"""Rekey (a new data key, everything rewritten under it) and key rotation (a new KEK).

After a rekey no frame, metadata value or KEY entry of the old epoch is left, the data and
its snapshots read back, fsck is clean; an interrupted rekey resumes. A rotation re-wraps
the KEY files under a new key-encryption key without touching data: the old KEK no longer
opens the volume, the new one does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from galleonfs.crypto import volume_key
from galleonfs.crypto.keys import KeyFile, KeySpec
from galleonfs.engine import clones, rekey, segments, snapshots
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.errors import FailedPrecondition, KeyUnavailable
from galleonfs.storage import Storage
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 64 * 1024


def make(tmp_path: Path) -> tuple[str, KeySpec]:
    spec = KeySpec(key_file=str(tmp_path / "kek"))
    vol = str(tmp_path / "vol")
    Engine.create(vol, size=256 << 20, block_size=BS, keys=spec.manager(), compression="lz4")
    return vol, spec


def put(vfs: Vfs, name: bytes, data: bytes) -> None:
    inode = vfs.create(1, name, 0o644, ROOT_CTX)
    vfs.write(inode.ino, 0, data)
    vfs.setxattr(inode.ino, b"user.k", name)
    vfs.release(inode.ino)
    vfs.forget([(inode.ino, 1)])


def content(vfs: Vfs, name: bytes, size: int, root: int = 1) -> bytes:
    ino = vfs.lookup(root, name).ino
    vfs.open(ino, False)
    try:
        return vfs.read(ino, 0, size)
    finally:
        vfs.release(ino)


def frame_epochs(vol: str) -> set[int]:
    """The key epochs of every frame in every segment file, live or dead."""
    data = str(Path(vol) / "data")
    store = segments.Segments(Storage(), data, 0)
    return {header.key_epoch for seg in segments.list_segments(Storage(), data)
            for _offset, header, _frame in store.scan(seg)}


def test_rekey_rewrites_everything_under_a_new_key(tmp_path: Path) -> None:
    vol, spec = make(tmp_path)
    files = {f"f{i}".encode(): os.urandom(BS * 3 + i) for i in range(20)}
    engine = Engine.open(vol, keys=spec.manager())
    try:
        vfs = Vfs(engine)
        for name, data in list(files.items())[:10]:
            put(vfs, name, data)
        snapshots.create(engine, "half")
        for name, data in list(files.items())[10:]:
            put(vfs, name, data)
        engine.checkpoint()
        assert frame_epochs(vol) == {1}
        seen: list[tuple[int, int]] = []
        epoch = rekey.run(engine, lambda done, total: seen.append((done, total)))
        assert epoch == 2
        assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 40      # 20 files: blocks + records
        assert list(engine.meta.stale_sealed(2)) == []
        for name, data in files.items():
            assert content(vfs, name, len(data)) == data
    finally:
        engine.close()
    doc = json.loads((Path(vol) / "KEY").read_text())
    assert (doc["epoch"], sorted(doc["keys"])) == (2, ["2"])
    assert frame_epochs(vol) == {2}                    # the old frames were collected
    engine = Engine.open(vol, keys=spec.manager())
    try:
        vfs = Vfs(engine)
        snap_root = vfs.lookup(1, b".snapshots")
        half = vfs.lookup(snap_root.ino, b"half").ino
        for name, data in list(files.items())[:10]:
            assert content(vfs, name, len(data), root=half) == data
            assert vfs.getxattr(vfs.lookup(1, name).ino, b"user.k") == name
    finally:
        engine.close()
    assert fsck(vol, keys=spec.manager()).clean


def test_an_interrupted_rekey_resumes(tmp_path: Path) -> None:
    vol, spec = make(tmp_path)
    engine = Engine.open(vol, keys=spec.manager())
    try:
        vfs = Vfs(engine)
        for i in range(600):                           # more than one chunk of records
            put(vfs, f"n{i}".encode(), bytes([i % 256]) * 100)
        engine.checkpoint()
        epoch = rekey.begin(engine)
        steps = rekey.rewrite(engine, epoch)
        next(steps)
        next(steps)                                    # one chunk done, then the "crash"
    finally:
        engine.close(checkpoint=False)
    doc = json.loads((Path(vol) / "KEY").read_text())
    assert sorted(doc["keys"]) == ["1", "2"]
    engine = Engine.open(vol, keys=spec.manager())
    try:
        assert rekey.run(engine) == 2                  # the same rekey, finished
        vfs = Vfs(engine)
        assert all(content(vfs, f"n{i}".encode(), 100) == bytes([i % 256]) * 100 for i in range(600))
    finally:
        engine.close()
    assert sorted(json.loads((Path(vol) / "KEY").read_text())["keys"]) == ["2"]
    assert fsck(vol, keys=spec.manager()).clean


def test_rekey_is_refused_while_a_clone_shares_blocks(tmp_path: Path) -> None:
    vol, spec = make(tmp_path)
    engine = Engine.open(vol, keys=spec.manager())
    try:
        put(Vfs(engine), b"a", b"x" * 100)
        snapshots.create(engine, "s")
        clones.create(engine, "s", str(tmp_path / "clone"))
        with pytest.raises(FailedPrecondition, match="flatten or delete them before a rekey"):
            rekey.run(engine)
    finally:
        engine.close()
    assert sorted(json.loads((Path(vol) / "KEY").read_text())["keys"]) == ["1"]


def test_rotation_rewraps_under_a_new_kek_without_touching_data(tmp_path: Path) -> None:
    vol, spec = make(tmp_path)
    engine = Engine.open(vol, keys=spec.manager())
    try:
        put(Vfs(engine), b"a", b"secret" * 1000)
    finally:
        engine.close()
    data_before = {p.name: p.read_bytes() for p in (Path(vol) / "data").iterdir()}
    old = KeyFile(spec.key_file, create=False)
    volume_key.rotate([vol], KeyFile(spec.key_file, create=False), KeyFile(str(tmp_path / "kek2")))
    assert {p.name: p.read_bytes() for p in (Path(vol) / "data").iterdir()} == data_before
    with pytest.raises(KeyUnavailable, match="different key"):
        Engine.open(vol, keys=old)
    engine = Engine.open(vol, keys=KeyFile(str(tmp_path / "kek2"), create=False))
    try:
        assert content(Vfs(engine), b"a", 6000) == b"secret" * 1000
    finally:
        engine.close()


def test_galleonfs_rekey_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    vol, spec = make(tmp_path)
    engine = Engine.open(vol, keys=spec.manager())
    try:
        put(Vfs(engine), b"a", b"abc" * 1000)
    finally:
        engine.close()
    run = [sys.executable, "-m", "galleonfs.cli.galleonfs", "rekey", vol]
    missing = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "--key-file" in missing.stderr
    done = subprocess.run([*run, "--key-file", spec.key_file], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{vol}: everything is sealed under a new data key (epoch 2); the old key is gone\n"
    engine = Engine.open(vol, keys=spec.manager())
    try:
        assert content(Vfs(engine), b"a", 3000) == b"abc" * 1000
    finally:
        engine.close()
