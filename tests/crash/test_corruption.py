"""A damaged block is never served (DESIGN §3, guarantee 3), and the way back is fsck.

One byte of one stored block frame is flipped on the unmounted volume (found through the
metadata: the file's extent names the block, the block index its segment and offset).
Then, on a real mount: reading that block gives EIO, never other bytes; the other blocks
still read; the volume goes failsafe (writes give EROFS, NEEDS_CHECK is written, the
worker logs it); it refuses to mount again until ``galleonfs fsck --repair`` has turned
the block into a hole and said which file lost what.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from galleonfs.engine.engine import NEEDS_CHECK_FILE, Engine
from galleonfs.engine.fsck import fsck
from galleonfs.errors import ExitCode
from galleonfs.testing.damage import flip_byte, locate
from galleonfs.testing.mount import MountedVolume, MountError
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 64 * 1024                  # the volume fixture's block size
BLOCKS = 16
BAD = 9                         # the damaged block of the file
# Where in the frame the flipped byte is: the payload, the block id in the header (covered
# by the CRC), the payload length in the header (the frame no longer has its length).
FLIPS = {"payload": 64 + 12345, "header_block_id": 20, "header_length": 8}



def pread_errno(fd: int, size: int, offset: int) -> int | None:
    try:
        os.pread(fd, size, offset)
    except OSError as exc:
        return exc.errno
    return None


@pytest.mark.allow_warnings
@pytest.mark.parametrize("where", sorted(FLIPS))
def test_corrupt_block_is_eio_then_failsafe_then_repair(tmp_path: Path, fuse_ok: None, where: str) -> None:
    data = os.urandom(BLOCKS * BS)
    other = os.urandom(3 * BS + 17)
    vol = MountedVolume.create(tmp_path)
    try:
        (vol / "victim").write_bytes(data)
        (vol / "other").write_bytes(other)
        assert vol.unmount() == 0
        loc = locate(vol.volume_dir, "victim", BAD)
        flip_byte(vol.volume_dir, loc, FLIPS[where])

        vol.mount()
        fd = os.open(vol / "victim", os.O_RDONLY)
        try:
            assert os.pread(fd, BS, 0) == data[:BS]
            assert pread_errno(fd, BS, BAD * BS) == errno.EIO
            assert pread_errno(fd, 100, BAD * BS + 5000) == errno.EIO      # any part of it
            # A read across it stops short before it (read(2) returns what it got) or fails.
            start = (BAD - 1) * BS
            try:
                got = os.pread(fd, 2 * BS, start)
            except OSError as exc:
                assert exc.errno == errno.EIO
            else:
                assert len(got) <= BS and got == data[start:start + len(got)]
            # Blocks before and after it still read (after the kernel retries page by page).
            assert os.pread(fd, BS, (BAD + 3) * BS) == data[(BAD + 3) * BS:(BAD + 4) * BS]
            assert os.pread(fd, 1000, (BAD - 4) * BS + 7) == data[(BAD - 4) * BS + 7:][:1000]
        finally:
            os.close(fd)
        with pytest.raises(OSError) as info:
            (vol / "victim").read_bytes()
        assert info.value.errno == errno.EIO
        assert (vol / "other").read_bytes() == other
        # Failsafe: nothing may change any more.
        for attempt in (lambda: (vol / "new").write_bytes(b"x"),
                        lambda: open(vol / "other", "r+b").close(),
                        lambda: os.mkdir(vol / "dir"),
                        lambda: os.unlink(vol / "other")):
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS
        assert (vol / "other").read_bytes() == other
        assert vol.unmount() == 0
    finally:
        if vol.proc is not None:
            vol.unmount()
    assert "enters failsafe" in vol.log()
    assert f"segment {loc.seg}@{loc.offset}" in vol.log()
    marker = vol.volume_dir / NEEDS_CHECK_FILE
    assert marker.exists()

    report = fsck(str(vol.volume_dir))
    assert not report.clean
    assert any(f"segment {loc.seg}@{loc.offset}" in p for p in report.problems), report.render()
    assert marker.exists(), "a check without --repair must leave the mark"

    with pytest.raises(MountError) as refused:
        vol.mount()
    assert vol.proc is None
    assert refused.value.code == ExitCode.CORRUPT
    assert f"galleonfs fsck --repair {vol.volume_dir}" in str(refused.value)

    report = fsck(str(vol.volume_dir), repair=True)
    assert f"data lost: /victim bytes {BAD * BS}.. are now a hole" in report.repaired, report.render()
    assert len(report.repaired) >= len(report.problems)
    assert not marker.exists()

    vol.mount()
    try:
        expected = data[:BAD * BS] + bytes(BS) + data[(BAD + 1) * BS:]
        assert (vol / "victim").read_bytes() == expected
        assert (vol / "other").read_bytes() == other
        (vol / "new").write_bytes(b"writable again")
        assert vol.unmount() == 0
    finally:
        if vol.proc is not None:
            vol.unmount()
    report = fsck(str(vol.volume_dir))
    assert report.clean, report.render()


def galleonfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonfs", *args],
                          capture_output=True, text=True, timeout=120)


def test_fsck_cli_reports_then_repairs(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    Engine.create(str(vol), size=64 << 20, block_size=4096)
    engine = Engine.open(str(vol))
    vfs = Vfs(engine)
    vfs.forget([(vfs.mkdir(1, b"sub", 0o755, ROOT_CTX).ino, 1)])
    sub = vfs.lookup(1, b"sub").ino
    ino = vfs.create(sub, b"file", 0o644, ROOT_CTX).ino
    data = os.urandom(8 * 4096)
    vfs.write(ino, 0, data)
    vfs.release(ino)
    engine.close()
    loc = locate(vol, "sub/file", 2)
    flip_byte(vol, loc, 64 + 100)

    done = galleonfs("fsck", str(vol))
    assert done.returncode == ExitCode.CORRUPT, done.stdout + done.stderr
    assert "problem: block" in done.stdout and "checksum mismatch" in done.stdout
    assert "run with --repair to fix them" in done.stdout
    assert "Traceback" not in done.stderr

    done = galleonfs("fsck", "--repair", str(vol))
    assert done.returncode == ExitCode.ERROR, done.stdout + done.stderr
    assert "repaired: data lost: /sub/file bytes 8192.. are now a hole" in done.stdout
    assert "problems found and repaired" in done.stdout

    done = galleonfs("fsck", "--repair", str(vol))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert done.stdout.strip().endswith("volume is clean")
    done = galleonfs("fsck", str(vol))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr

    engine = Engine.open(str(vol))
    (found,) = [e for e in Vfs(engine).readdir(sub, 0) if e.name == b"file"]
    assert Vfs(engine).read(found.inode.ino, 0, len(data)) == data[:8192] + bytes(4096) + data[12288:]
    engine.close()

