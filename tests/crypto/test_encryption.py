"""Encryption at rest: nothing readable under the data directory, nothing altered ever served.

The grep test writes marker strings as content, file and directory names, an xattr name
and value, a symlink target and a snapshot name, then looks for each in every file of the
volume directory: after a sync with the volume mounted (the journal holds them), after the
unmount's checkpoint (LMDB holds them), and after a snapshot. Then the volume is mounted
again and everything reads back.

Tampering is done the way an attacker with the disk would: an altered frame gets its CRC32C
recomputed (a checksum is not a MAC), a replayed or swapped frame is a valid frame of the
same volume put in another's place, a metadata value is moved to another key. Every one
must read as EIO (or ``Corrupt`` in the engine), never as other bytes, and put the volume
into failsafe.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from galleonfs.crypto.keys import KeyFile, KeySpec
from galleonfs.engine import frames, snapshots
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.errors import Corrupt, KeyUnavailable
from galleonfs.meta import schema
from galleonfs.meta.schema import BlockLoc, Db
from galleonfs.testing import damage
from galleonfs.testing.mount import MountedVolume, MountError
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

MARKERS = {
    "content": b"MARKER-CONTENT-7f3a",
    "file name": b"MARKER-FILENAME-91c2",
    "dir name": b"MARKER-DIRNAME-55e0",
    "xattr name": b"MARKER-XATTRNAME-0b4d",
    "xattr value": b"MARKER-XATTRVALUE-c81f",
    "symlink target": b"MARKER-SYMTARGET-3d9a",
    "snapshot name": b"MARKER-SNAPNAME-e62b",
}
BS = 64 * 1024


def leaks(volume_dir: Path) -> dict[str, list[str]]:
    """Which markers appear in which files under ``volume_dir``."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in volume_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for what, marker in MARKERS.items():
            if marker in data:
                found.setdefault(what, []).append(str(path.relative_to(volume_dir)))
    return found


def populate(root: Path) -> bytes:
    content = (MARKERS["content"] + b" is secret; ") * 20_000      # compressible, ~640 KiB
    d = root / MARKERS["dir name"].decode()
    d.mkdir()
    f = d / MARKERS["file name"].decode()
    f.write_bytes(content)
    os.setxattr(f, "user." + MARKERS["xattr name"].decode(), MARKERS["xattr value"])
    os.symlink(MARKERS["symlink target"].decode(), root / "link")
    small = root / "small"
    small.write_bytes(MARKERS["content"])                           # a block smaller than 4 KiB
    return content


def check_populated(root: Path, content: bytes) -> None:
    f = root / MARKERS["dir name"].decode() / MARKERS["file name"].decode()
    assert f.read_bytes() == content
    assert os.getxattr(f, "user." + MARKERS["xattr name"].decode()) == MARKERS["xattr value"]
    assert os.readlink(root / "link") == MARKERS["symlink target"].decode()
    assert (root / "small").read_bytes() == MARKERS["content"]


@pytest.mark.volume(encrypt=True, compression="lz4")
def test_no_marker_reaches_the_disk_and_all_reads_back(volume: MountedVolume) -> None:
    content = populate(volume.mountpoint)
    os.sync()                                            # journaled, not yet checkpointed
    assert leaks(volume.volume_dir) == {}
    assert volume.unmount() == 0, volume.log()           # checkpoint: now in LMDB and segments
    assert leaks(volume.volume_dir) == {}

    keys = volume.keys.manager()
    engine = Engine.open(str(volume.volume_dir), keys=keys)
    try:
        snapshots.create(engine, MARKERS["snapshot name"].decode())
        engine.checkpoint()
    finally:
        engine.close()
    assert leaks(volume.volume_dir) == {}

    volume.mount()
    check_populated(volume.mountpoint, content)
    snap = volume.mountpoint / ".snapshots" / MARKERS["snapshot name"].decode()
    check_populated(snap, content)
    assert sorted(os.listdir(volume.mountpoint)) == sorted([MARKERS["dir name"].decode(), "link", "small"])


# --- keys ---------------------------------------------------------------------------------------------
def encrypted_volume(tmp_path: Path) -> tuple[Path, KeySpec]:
    spec = KeySpec(key_file=str(tmp_path / "kek"))
    Engine.create(str(tmp_path / "vol"), size=256 << 20, block_size=BS, keys=spec.manager())
    return tmp_path / "vol", spec


def galleonfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonfs", *args],
                          capture_output=True, text=True, timeout=60)


def test_mount_with_a_wrong_or_missing_key_fails_with_one_sentence(tmp_path: Path, fuse_ok: None) -> None:
    vol, _ = encrypted_volume(tmp_path)
    other = tmp_path / "other-kek"
    KeyFile(str(other))                                  # a valid key file, not this volume's
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    wrong = galleonfs("mount", str(vol), str(mnt), "--key-file", str(other))
    assert wrong.returncode != 0
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert str(vol) in lines[0] and f"key file {other}" in lines[0], lines[0]

    missing = galleonfs("mount", str(vol), str(mnt))
    assert missing.returncode != 0
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and str(vol) in lines[0] and "--key-file" in lines[0], missing.stderr

    with pytest.raises(MountError) as info:
        MountedVolume(vol, mnt, keys=KeySpec(key_file=str(other))).mount()
    assert info.value.code == KeyUnavailable.exit_code
    assert f"key file {other}" in str(info.value)
    assert not os.path.ismount(mnt)


def test_fsck_needs_the_key_and_says_so(tmp_path: Path) -> None:
    vol, spec = encrypted_volume(tmp_path)
    with pytest.raises(KeyUnavailable, match="no key source"):
        fsck(str(vol))
    assert fsck(str(vol), keys=spec.manager()).clean


# --- tampering ----------------------------------------------------------------------------------------
def write_blocks(vol: Path, spec: KeySpec, name: str, blocks: list[bytes]) -> None:
    engine = Engine.open(str(vol), keys=spec.manager())
    try:
        vfs = Vfs(engine)
        found = engine.meta.get(Db.DIRENTS, schema.dirent_key(1, name.encode()))
        if found is None:
            ino = vfs.create(1, name.encode(), 0o644, ROOT_CTX).ino
        else:
            ino = schema.decode_dirent(found)[0]
            vfs.open(ino, True)
        vfs.write(ino, 0, b"".join(blocks))
        vfs.release(ino)
        vfs.forget([(ino, 1)])
        engine.checkpoint()
    finally:
        engine.close()


def locate(vol: Path, spec: KeySpec, name: str, blk: int) -> BlockLoc:
    return damage.locate(vol, name, blk, spec.manager())


def recrc(frame: bytes, *, block_id: bytes | None = None) -> bytes:
    """A frame with a valid CRC again, optionally claiming another block id."""
    header = frames.parse_header(frame, "test")
    payload = frame[frames.HEADER_SIZE:]
    head, _ = frames.encode(block_id or header.block_id, payload, header.raw_len, header.flags,
                            header.nonce, header.key_epoch)
    return head + payload


def tamper(kind: str, vol: Path, spec: KeySpec) -> None:
    """Damage block 1 of ``f``."""
    target = locate(vol, spec, "f", 1)
    frame = damage.read_frame(vol, target)
    if kind == "flip":                 # one ciphertext byte, checksum made valid again
        damaged = bytearray(frame)
        damaged[frames.HEADER_SIZE + 100] ^= 0x01
        damage.put_frame(vol, target, recrc(bytes(damaged)))
    elif kind == "truncate":           # the segment ends inside the frame
        with open(damage.segment_path(vol, target), "r+b") as f:
            f.truncate(target.offset + target.frame_len // 2)
    elif kind == "swap":               # two valid frames of this volume trade places
        other = locate(vol, spec, "f", 2)
        assert other.frame_len == target.frame_len
        damage.put_frame(vol, target, damage.read_frame(vol, other))
        damage.put_frame(vol, other, frame)
    elif kind in ("replay", "replay-forged"):
        # The block's older version (written before, still on disk in an older segment),
        # put back where the current one is; "forged" also claims the current block id.
        old = damage.read_frame(vol, OLD_LOCS[str(vol)])
        assert len(old) == target.frame_len
        header = frames.parse_header(frame, "test")
        damage.put_frame(vol, target, recrc(old, block_id=header.block_id) if kind == "replay-forged" else old)
    else:
        raise AssertionError(kind)


OLD_LOCS: dict[str, BlockLoc] = {}


@pytest.mark.allow_warnings
@pytest.mark.parametrize("kind", ["flip", "truncate", "swap", "replay", "replay-forged"])
def test_tampered_frame_is_corrupt_never_other_bytes(tmp_path: Path, kind: str) -> None:
    vol, spec = encrypted_volume(tmp_path)
    old = [os.urandom(BS) for _ in range(4)]
    new = [os.urandom(BS) for _ in range(4)]
    write_blocks(vol, spec, "f", old)
    OLD_LOCS[str(vol)] = locate(vol, spec, "f", 1)
    # Keep the old frames from GC: a snapshot holds them, as a backup attacker would hope.
    engine = Engine.open(str(vol), keys=spec.manager())
    try:
        snapshots.create(engine, "before")
        engine.checkpoint()
    finally:
        engine.close()
    write_blocks(vol, spec, "f", new)
    tamper(kind, vol, spec)

    engine = Engine.open(str(vol), keys=spec.manager())
    try:
        vfs = Vfs(engine)
        ino = vfs.lookup(1, b"f").ino
        vfs.open(ino, False)
        with pytest.raises(Corrupt):
            vfs.read(ino, BS, BS)
        assert engine.failsafe is not None
        assert vfs.read(ino, 0, BS) == new[0]            # undamaged blocks still read
        vfs.release(ino)
    finally:
        engine.close(checkpoint=False)
    report = fsck(str(vol), keys=spec.manager())
    assert not report.clean
    assert "block" in report.render()


def test_metadata_value_moved_to_another_name_fails_authentication(tmp_path: Path) -> None:
    vol, spec = encrypted_volume(tmp_path)
    write_blocks(vol, spec, "a", [b"A" * 10])
    write_blocks(vol, spec, "b", [b"B" * 10])
    env = lmdb.open(str(vol / "meta.lmdb"), subdir=True, max_dbs=32)
    with env.begin(write=True) as txn:
        dirents = env.open_db(b"dirents", txn=txn)
        stored = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=dirents) if k[:8] == schema.ino_key(1)]
        assert len(stored) == 2
        assert all(b"a" not in k[8:] or len(k) == 24 for k, _ in stored)   # names are tokens
        (k1, v1), (k2, v2) = stored
        txn.put(k1, v2, db=dirents)
        txn.put(k2, v1, db=dirents)
    env.close()
    engine = Engine.open(str(vol), keys=spec.manager(), read_only=True)
    try:
        vfs = Vfs(engine)
        with pytest.raises(Corrupt, match="fails authentication"):
            vfs.lookup(1, b"a")
    finally:
        engine.close()


@pytest.mark.allow_warnings
def test_mounted_tampered_block_reads_eio(tmp_path: Path, fuse_ok: None) -> None:
    vol, spec = encrypted_volume(tmp_path)
    data = [os.urandom(BS) for _ in range(4)]
    write_blocks(vol, spec, "f", data)
    loc = locate(vol, spec, "f", 1)
    frame = bytearray(damage.read_frame(vol, loc))
    frame[frames.HEADER_SIZE + 7] ^= 0x80
    damage.put_frame(vol, loc, recrc(bytes(frame)))
    (tmp_path / "mnt").mkdir()
    mounted = MountedVolume(vol, tmp_path / "mnt", keys=spec).mount()
    try:
        fd = os.open(mounted / "f", os.O_RDONLY)
        try:
            assert os.pread(fd, BS, 0) == data[0]
            with pytest.raises(OSError) as info:
                os.pread(fd, BS, BS)
            assert info.value.errno == errno.EIO
        finally:
            os.close(fd)
        with pytest.raises(OSError) as info:
            (mounted / "new").write_bytes(b"x")
        assert info.value.errno == errno.EROFS                # failsafe: read-only
    finally:
        mounted.unmount()


# --- snapshots, restore, diff and clones on sealed metadata --------------------------------------------
def names(vfs: Vfs) -> dict[str, bytes]:
    out = {}
    for entry in vfs.readdir(1, 0):
        if entry.name in (b".", b".."):
            continue
        ino = vfs.lookup(1, entry.name).ino
        vfs.open(ino, False)
        out[entry.name.decode()] = vfs.read(ino, 0, 1 << 20)
        vfs.release(ino)
    return out


def test_snapshot_diff_restore_and_clone_work_on_sealed_names(tmp_path: Path) -> None:
    vol, spec = encrypted_volume(tmp_path)
    write_blocks(vol, spec, "keep", [b"k" * 100])
    write_blocks(vol, spec, "renamed-away", [b"r" * 100])
    write_blocks(vol, spec, "deleted", [b"d" * 100])
    engine = Engine.open(str(vol), keys=spec.manager())
    try:
        vfs = Vfs(engine)
        vfs.setxattr(vfs.lookup(1, b"keep").ino, b"user.tag", b"v1")
        snapshots.create(engine, "s1")
        vfs.rename(1, b"renamed-away", 1, b"new-name", 0)
        vfs.unlink(1, b"deleted")
        vfs.setxattr(vfs.lookup(1, b"keep").ino, b"user.tag", b"v2")
        vfs.forget([(vfs.lookup(1, b"keep").ino, 3), (vfs.lookup(1, b"new-name").ino, 1)])
        engine.end_op()
        engine.checkpoint()

        changes = {(c.kind, c.path, c.new_path) for c in snapshots.diff(engine, "s1", None)}
        assert changes == {("R", "/renamed-away", "/new-name"), ("-", "/deleted", ""), ("M", "/keep", "")}

        clone_dir = str(tmp_path / "clone")
        from galleonfs.engine import clones
        clones.create(engine, "s1", clone_dir, name="clone")

        snapshots.restore(engine, "s1")
        engine.checkpoint()
        assert names(vfs) == {"keep": b"k" * 100, "renamed-away": b"r" * 100, "deleted": b"d" * 100}
        assert vfs.getxattr(vfs.lookup(1, b"keep").ino, b"user.tag") == b"v1"
    finally:
        engine.close()
    clone = Engine.open(clone_dir, keys=spec.manager())
    try:
        assert names(Vfs(clone)) == {"keep": b"k" * 100, "renamed-away": b"r" * 100, "deleted": b"d" * 100}
    finally:
        clone.close()
    assert fsck(str(vol), keys=spec.manager()).clean
    assert fsck(clone_dir, keys=spec.manager()).clean
