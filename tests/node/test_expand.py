"""Expansion: online (``df`` on the mount point shows the new size without unmounting) and
offline; shrinking is refused with a clear error and changes nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from galleonfs.testing.daemon import RunningDaemon

from .util import ctl_json, ctl_ok, statvfs_size, user_error

MiB = 1024 * 1024


def fill(path: Path, size: int) -> None:
    """Write ``size`` bytes and fsync: an over-quota write fails here, not later."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def test_online_expand_seen_by_df(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "grow", "--size", "8M")
    mnt = tmp_path / "mnt"
    ctl_ok(d, "volume", "mount", "grow", str(mnt))
    pid = ctl_json(d, "volume", "stats", "grow")["worker_pid"]
    assert statvfs_size(mnt) == 8 * MiB

    # the quota is real: 12 MiB do not fit in 8 MiB
    with pytest.raises(OSError) as info:
        fill(mnt / "too-big", 12 * MiB)
    assert info.value.errno == errno.ENOSPC
    os.unlink(mnt / "too-big")
    fill(mnt / "keep", 1 * MiB)
    keep = (mnt / "keep").read_bytes()

    assert ctl_ok(d, "volume", "expand", "grow", "--size", "32M") == "volume grow is now 32M\n"
    assert statvfs_size(mnt) == 32 * MiB          # same mount, same worker: online
    assert ctl_json(d, "volume", "stats", "grow")["worker_pid"] == pid
    st = os.statvfs(mnt)
    assert st.f_bavail * st.f_frsize > 24 * MiB
    fill(mnt / "now-fits", 12 * MiB)
    assert (mnt / "keep").read_bytes() == keep
    v = ctl_json(d, "volume", "get", "grow")
    assert v["state"] == "MOUNTED" and int(v["size_bytes"]) == 32 * MiB

    # the same size again is a no-op, not an error
    ctl_ok(d, "volume", "expand", "grow", "--size", "32M")
    assert statvfs_size(mnt) == 32 * MiB
    ctl_ok(d, "volume", "unmount", "grow")
    ctl_ok(d, "volume", "delete", "grow")


def test_shrink_refused_and_nothing_changes(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "noshrink", "--size", "16M")
    mnt = tmp_path / "mnt"
    ctl_ok(d, "volume", "mount", "noshrink", str(mnt))
    (mnt / "f").write_bytes(b"unchanged")
    before = ctl_json(d, "volume", "get", "noshrink")

    user_error(d.ctl("volume", "expand", "noshrink", "--size", "8M"), 2, "noshrink", "shrink")
    user_error(d.ctl("volume", "expand", "noshrink", "--size", "0"), 2, "size")
    user_error(d.ctl("volume", "expand", "noshrink", "--size", "2P"), 2, "out of range")
    assert ctl_json(d, "volume", "get", "noshrink") == before
    assert statvfs_size(mnt) == 16 * MiB
    assert (mnt / "f").read_bytes() == b"unchanged"
    ctl_ok(d, "volume", "unmount", "noshrink")
    ctl_ok(d, "volume", "delete", "noshrink")


def test_offline_expand(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "cold", "--size", "8M")
    assert ctl_ok(d, "volume", "expand", "cold", "--size", "24M") == "volume cold is now 24M\n"
    v = ctl_json(d, "volume", "get", "cold")
    assert v["state"] == "AVAILABLE" and int(v["size_bytes"]) == 24 * MiB
    assert int(ctl_json(d, "volume", "stats", "cold")["size_bytes"]) == 24 * MiB
    mnt = tmp_path / "mnt"
    ctl_ok(d, "volume", "mount", "cold", str(mnt))
    assert statvfs_size(mnt) == 24 * MiB
    fill(mnt / "f", 12 * MiB)
    ctl_ok(d, "volume", "unmount", str(mnt))
    ctl_ok(d, "volume", "delete", "cold")


def test_read_only_many_grows_offline_only(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    d = shared_daemon
    ctl_ok(d, "volume", "create", "rox-grow", "--size", "8M", "--access-mode", "ROX")
    mnt = tmp_path / "mnt"
    ctl_ok(d, "volume", "mount", "rox-grow", str(mnt), "--read-only")
    before = ctl_json(d, "volume", "get", "rox-grow")
    user_error(d.ctl("volume", "expand", "rox-grow", "--size", "16M"), 1,
               "mounted read-only (ReadOnlyMany)", "unmount it, expand it, and mount it again")
    assert ctl_json(d, "volume", "get", "rox-grow") == before
    ctl_ok(d, "volume", "unmount", "rox-grow")
    ctl_ok(d, "volume", "expand", "rox-grow", "--size", "16M")
    ctl_ok(d, "volume", "mount", "rox-grow", str(mnt), "--read-only")
    assert statvfs_size(mnt) == 16 * MiB
    ctl_ok(d, "volume", "unmount", "rox-grow")
    ctl_ok(d, "volume", "delete", "rox-grow")
