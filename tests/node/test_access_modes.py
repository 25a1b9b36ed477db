"""Access modes as users see them: which mounts are refused, and what the allowed ones do.

ReadWriteOnce: one read-write mount point, read-only extras (writes there fail EROFS).
ReadOnlyMany: read-only mount points only. ReadWriteMany: several read-write mount points,
bind mounts of one worker, so a write through one is visible through the other at once.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from galleonfs.testing.daemon import RunningDaemon

from .util import ctl_json, ctl_ok, is_mount, user_error

MiB = 1024 * 1024


def expect_erofs(call: object, *args: object) -> None:
    with pytest.raises(OSError) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.errno == errno.EROFS, info.value


def test_read_write_once(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "rwo", "--size", "16M", "--access-mode", "RWO")
    rw, rw2, ro = tmp_path / "rw", tmp_path / "rw2", tmp_path / "ro"
    ctl_ok(d, "volume", "mount", "rwo", str(rw))
    (rw / "f").write_bytes(b"written through the read-write mount")
    before = ctl_json(d, "volume", "get", "rwo")

    message = user_error(d.ctl("volume", "mount", "rwo", str(rw2)), 5, "ReadWriteOnce", str(rw))
    assert "read-only" in message
    assert not is_mount(rw2)
    assert ctl_json(d, "volume", "get", "rwo") == before

    assert ctl_ok(d, "volume", "mount", "rwo", str(ro), "--read-only") == f"volume rwo mounted on {ro} (read-only)\n"
    assert (ro / "f").read_bytes() == b"written through the read-write mount"
    expect_erofs(os.open, ro / "f", os.O_WRONLY)
    expect_erofs(os.open, ro / "new", os.O_WRONLY | os.O_CREAT)
    expect_erofs(os.mkdir, ro / "d")
    expect_erofs(os.unlink, ro / "f")
    # the read-only mount point sees later writes through the read-write one
    with open(rw / "f", "ab") as f:
        f.write(b", and more")
    assert (ro / "f").read_bytes() == b"written through the read-write mount, and more"
    points = [(m["path"], m["read_only"]) for m in ctl_json(d, "volume", "get", "rwo")["mount_points"]]
    assert points == [(str(rw), False), (str(ro), True)]

    # once the writer is gone, another read-write mount point is allowed
    ctl_ok(d, "volume", "unmount", str(rw))
    ctl_ok(d, "volume", "mount", "rwo", str(rw2))
    assert (rw2 / "f").read_bytes() == b"written through the read-write mount, and more"
    ctl_ok(d, "volume", "unmount", "rwo")
    assert not any(is_mount(p) for p in (rw, rw2, ro))


def test_read_only_many(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "rox", "--size", "16M", "--access-mode", "ReadOnlyMany")
    assert ctl_json(d, "volume", "get", "rox")["access_modes"] == ["READ_ONLY_MANY"]
    user_error(d.ctl("volume", "mount", "rox", str(tmp_path / "rw")), 1, "ReadOnlyMany", "--read-only")
    assert not is_mount(tmp_path / "rw")
    assert ctl_json(d, "volume", "get", "rox")["state"] == "AVAILABLE"

    a, b = tmp_path / "a", tmp_path / "b"
    ctl_ok(d, "volume", "mount", "rox", str(a), "--read-only")
    ctl_ok(d, "volume", "mount", "rox", str(b), "--read-only")
    assert os.listdir(a) == os.listdir(b) == []
    assert os.statvfs(a).f_blocks == os.statvfs(b).f_blocks > 0
    expect_erofs(os.open, a / "new", os.O_WRONLY | os.O_CREAT)
    expect_erofs(os.mkdir, b / "d")
    # with read-only mount points up, a read-write one is still refused
    user_error(d.ctl("volume", "mount", "rox", str(tmp_path / "rw")), 1, "ReadOnlyMany")
    ctl_ok(d, "volume", "unmount", "rox")
    assert not is_mount(a) and not is_mount(b)


def test_read_write_many(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "rwx", "--size", "16M", "--access-mode", "RWX")
    a, b = tmp_path / "a", tmp_path / "b"
    ctl_ok(d, "volume", "mount", "rwx", str(a))
    ctl_ok(d, "volume", "mount", "rwx", str(b))
    v = ctl_json(d, "volume", "get", "rwx")
    assert [(m["path"], m["read_only"]) for m in v["mount_points"]] == [(str(a), False), (str(b), False)]
    # one worker serves both mount points
    stats = ctl_json(d, "volume", "stats", "rwx")
    workers = [p for p in os.listdir("/proc") if p.isdigit() and _is_worker_of(int(p), v["id"])]
    assert workers == [str(stats["worker_pid"])]

    # written in A (not yet closed), read in B at once
    fd = os.open(a / "shared", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"from A")
        assert (b / "shared").read_bytes() == b"from A"
        os.write(fd, b", still A")
        assert (b / "shared").read_bytes() == b"from A, still A"
    finally:
        os.close(fd)

    # created in B, appended in A, read in both
    (b / "born-in-b").write_bytes(b"B wrote this")
    with open(a / "born-in-b", "ab") as f:
        f.write(b"; A appended this")
    assert (b / "born-in-b").read_bytes() == b"B wrote this; A appended this"
    assert (a / "born-in-b").read_bytes() == b"B wrote this; A appended this"

    # namespace changes too
    (a / "dir").mkdir()
    os.rename(b / "shared", b / "dir" / "moved")
    assert (a / "dir" / "moved").read_bytes() == b"from A, still A"
    assert sorted(os.listdir(a)) == sorted(os.listdir(b)) == ["born-in-b", "dir"]
    os.unlink(a / "born-in-b")
    assert not (b / "born-in-b").exists()

    # unmounting one leaves the other serving
    ctl_ok(d, "volume", "unmount", str(a))
    assert (b / "dir" / "moved").read_bytes() == b"from A, still A"
    ctl_ok(d, "volume", "unmount", str(b))
    assert not is_mount(a) and not is_mount(b)


def _is_worker_of(pid: int, volume_id: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"galleonfs.fuse.worker" in cmdline and any(volume_id.encode() in arg for arg in cmdline)
