"""Read-only mounts: everything reads as before, every change fails with EROFS."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import expect_errno, remount

pytestmark = pytest.mark.mount


def _fill(volume: MountedVolume) -> None:
    root = volume.mountpoint
    (root / "file").write_bytes(b"read me")
    os.setxattr(root / "file", "user.k", b"v")
    os.mkdir(root / "dir")
    (root / "dir" / "inner").write_bytes(b"inner")
    os.symlink("file", root / "link")
    os.mkfifo(root / "fifo")


def _refuse_every_change(volume: MountedVolume) -> None:
    root = volume.mountpoint
    cases = [
        (os.open, (root / "new", os.O_CREAT | os.O_WRONLY, 0o644)),
        (os.mkdir, (root / "newdir",)),
        (os.mkfifo, (root / "newfifo",)),
        (os.symlink, ("x", root / "newlink")),
    ]
    if (root / "file").exists():
        cases += [
            (os.open, (root / "file", os.O_WRONLY)),
            (os.open, (root / "file", os.O_RDONLY | os.O_TRUNC)),
            (os.truncate, (root / "file", 0)),
            (os.unlink, (root / "file",)),
            (os.rmdir, (root / "dir",)),
            (os.rename, (root / "file", root / "moved")),
            (os.link, (root / "file", root / "hard")),
            (os.chmod, (root / "file", 0o600)),
            (os.chown, (root / "file", 1000, 1000)),
            (os.utime, (root / "file", None)),
            (os.setxattr, (root / "file", "user.new", b"v")),
            (os.removexattr, (root / "file", "user.k")),
        ]
    for call, args in cases:
        expect_errno(errno.EROFS, call, *args)
    assert os.statvfs(root).f_flag & os.ST_RDONLY


@pytest.mark.volume(options="ro")
def test_read_only_mount(volume: MountedVolume) -> None:
    root = volume.mountpoint
    _refuse_every_change(volume)                      # an empty volume, mounted ro
    assert os.listdir(root) == []
    volume.unmount()
    volume.options = ""
    volume.mount()
    _fill(volume)
    stamps = {name: os.lstat(root / name) for name in ("file", "dir", "link", "fifo")}
    volume.unmount()
    volume.options = "ro"
    volume.mount()
    assert (root / "file").read_bytes() == b"read me"
    assert (root / "dir" / "inner").read_bytes() == b"inner"
    assert os.readlink(root / "link") == "file"
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    assert os.getxattr(root / "file", "user.k") == b"v"
    assert sorted(os.listdir(root)) == ["dir", "fifo", "file", "link"]
    _refuse_every_change(volume)
    assert (root / "file").read_bytes() == b"read me"
    fd = os.open(root / "file", os.O_RDONLY)           # fsync has nothing to do, and works
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(root / "dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    # Back to read-write: nothing was changed, not even an access time.
    volume.unmount()
    volume.options = ""
    volume.mount()
    for name, before in stamps.items():
        after = os.lstat(root / name)
        assert (after.st_mode, after.st_size, after.st_mtime_ns, after.st_ctime_ns,
                after.st_atime_ns) == (before.st_mode, before.st_size, before.st_mtime_ns,
                                        before.st_ctime_ns, before.st_atime_ns), name
    (root / "file").write_bytes(b"writable again")
    remount(volume)
    assert (root / "file").read_bytes() == b"writable again"
