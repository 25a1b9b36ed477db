"""A full host disk (issue 9, finding 5) and capacity admission, against a real galleond.

The data directory is a small tmpfs mounted by the test (``SmallDisk``), so that the
journal, the data segments, LMDB, the node catalog, the logs and the metric files all meet
the kernel's real ENOSPC. Two volumes are mounted by real workers, and the disk is filled
through one of them, or by a file outside the volumes, as an unlucky operator would.

What a user relies on, asserted: applications get ENOSPC (never ENOTCONN/ECONNABORTED),
on the ``write`` syscall for direct I/O and at ``fsync`` for cached writes (the kernel's
writeback cache accepts the bytes and reports the failed writeback there); both workers
stay up (same pids); what was fsynced before reads back byte for byte, also after a
remount; metadata operations still work; unmount completes on the full disk; writing works
again once space is freed, without a remount; ``/readyz``, ``node status`` and the metrics
show the pressure; nothing is FAILED or marked for check, and every volume is fsck clean.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics.util import get, scrape, value
from node.util import ctl_json, ctl_ok, finish, user_error, wait_until

from galleonfs import limits
from galleonfs.engine.engine import NEEDS_CHECK_FILE
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.disk import SmallDisk

pytestmark = pytest.mark.mount
MiB = 1 << 20
DISK_BYTES = 96 * MiB
BLOCK = 64 * 1024

# What the logs may say while the disk is full: each volume's worker once when it starts
# refusing writes and when it releases its reserve, the daemon when a volume refuses writes
# and when the disk comes under pressure, and a deferred checkpoint. Anything else (a
# traceback, a crashed worker, a failed volume) fails the test.
EXPECTED_LOUD = (
    r"the host disk .* is full .*: writes that need space answer ENOSPC",
    r"released its \d+ MiB reserve",
    r"refuses writes that need space: the host disk",
    r"disk pressure on ",
    r"checkpoint deferred, the host disk .* is full",
    r"not exporting this worker's metrics: cannot allocate its files",
    r"released the node's \d+ MiB reserve",
    # The catalog's backup copy, refreshed every few seconds, may fall in the full window.
    r"cannot back up the node catalog .*No space left on device",
)


def _daemon_on(disk: SmallDisk, base: Path, **env: str) -> RunningDaemon:
    """A galleond whose data directory is ``disk``. The disk is not under ``base``: the
    daemon fixture's cleanup unmounts everything under ``base``, and the data directory must
    stay for the checks after the daemon stopped."""
    base.mkdir(exist_ok=True)
    d = RunningDaemon(base, env=env)
    d.data_dir = disk.path
    return d


@pytest.fixture
def small_daemon(tmp_path: Path, fuse_ok: None) -> Iterator[tuple[RunningDaemon, SmallDisk]]:
    """A galleond whose data directory is a 96 MiB tmpfs, allowed to provision 25 times
    that (two 1G volumes on it, like a thinly provisioned node)."""
    with SmallDisk(tmp_path / "disk", DISK_BYTES) as disk:
        d = _daemon_on(disk, tmp_path / "node", GALLEONFS_OVERCOMMIT_RATIO="25")
        try:
            d.start()
            yield d, disk
        except BaseException:
            d.cleanup()
            raise
        finally:
            # The workers' logs live on the disk that goes away: keep them for a failure.
            shutil.copytree(disk.path / "logs", d.base / "worker-logs", dirs_exist_ok=True)
        finish(d, check_logs=False)       # stops cleanly, fsck clean, nothing marked for check
        _only_expected_loud_lines(d)


def _only_expected_loud_lines(d: RunningDaemon) -> None:
    from node.util import new_loud_lines

    loud = new_loud_lines(d, {})
    unexpected = [line for line in loud if not any(re.search(p, line) for p in EXPECTED_LOUD)]
    assert not unexpected, "unexpected log lines:\n" + "\n".join(unexpected)


def _pid(d: RunningDaemon, name: str) -> int:
    pid = int(ctl_json(d, "volume", "stats", name)["worker_pid"])
    assert pid > 0
    return pid


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)                      # returns 0: acknowledged
    finally:
        os.close(fd)


def _read_from_worker(path: Path) -> bytes:
    """The file's bytes as the mount worker serves them (the page cache dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _fill_through(path: Path, limit_bytes: int) -> tuple[int, OSError]:
    """Write fresh random data through the page cache until the volume answers an error,
    the way an application does (write, write, ..., fsync). Returns the bytes write()
    accepted and the error, which must come from fsync: with the writeback cache, write()
    only fills the page cache, and the failed writeback is reported at fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    accepted = 0
    try:
        while accepted < limit_bytes:
            accepted += os.write(fd, os.urandom(MiB))
        with pytest.raises(OSError) as failed:
            os.fsync(fd)
        return accepted, failed.value
    finally:
        os.close(fd)


def _direct_write(path: Path, limit_bytes: int = BLOCK) -> tuple[int, OSError | None]:
    """O_DIRECT writes of 64 KiB of new data (each WRITE reaches the worker inside the
    syscall) until one fails or ``limit_bytes`` are written: (bytes written, the error)."""
    buf = mmap.mmap(-1, BLOCK)             # page aligned, as O_DIRECT wants
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    written = 0
    try:
        while written < limit_bytes:
            buf.seek(0)
            buf.write(os.urandom(BLOCK))
            written += os.write(fd, buf)
        return written, None
    except OSError as exc:
        return written, exc
    finally:
        os.close(fd)


def _state(d: RunningDaemon, name: str) -> str:
    return str(ctl_json(d, "volume", "get", name)["state"])


def _not_marked(d: RunningDaemon) -> list[str]:
    return [str(p.parent.name) for p in (d.data_dir / "volumes").glob(f"*/{NEEDS_CHECK_FILE}")]


def _readyz(d: RunningDaemon) -> tuple[int, str]:
    return get(d, "/readyz")


def _writes_again(path: Path) -> bool:
    try:
        _write_synced(path, os.urandom(MiB))
        return True
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        return False


def _setup(d: RunningDaemon) -> tuple[Path, Path, bytes, bytes, int, int]:
    for name in ("a", "b"):
        ctl_ok(d, "volume", "create", name, "--size", "1G")
        ctl_ok(d, "volume", "mount", name, str(d.base / name))
    a, b = d.base / "a", d.base / "b"
    keep_a, keep_b = os.urandom(MiB + 123), os.urandom(3 * MiB)
    _write_synced(a / "keep", keep_a)
    _write_synced(b / "keep", keep_b)
    wait_until(lambda: _readyz(d) == (200, "ready\n"), "/readyz 200 before the disk fills")
    return a, b, keep_a, keep_b, _pid(d, "a"), _pid(d, "b")


def _assert_survived(d: RunningDaemon, a: Path, b: Path, keep_a: bytes, keep_b: bytes,
                     pids: tuple[int, int]) -> None:
    """Both workers are the same processes, both volumes MOUNTED and unmarked, and what
    was fsynced before reads back from the workers byte for byte."""
    assert (_pid(d, "a"), _pid(d, "b")) == pids
    assert (_state(d, "a"), _state(d, "b")) == ("MOUNTED", "MOUNTED")
    assert _not_marked(d) == []
    assert _read_from_worker(a / "keep") == keep_a
    assert _read_from_worker(b / "keep") == keep_b


@pytest.mark.allow_warnings
def test_filling_the_disk_through_a_volume_gives_enospc_and_both_volumes_survive(
        small_daemon: tuple[RunningDaemon, SmallDisk]) -> None:
    d, disk = small_daemon
    a, b, keep_a, keep_b, pid_a, pid_b = _setup(d)

    accepted, failed = _fill_through(a / "filler", 2 * DISK_BYTES)
    assert accepted == 2 * DISK_BYTES                  # the page cache took every byte ...
    assert failed.errno == errno.ENOSPC, failed        # ... fsync says the rest did not fit
    left = disk.free_bytes()
    assert left < 16 * MiB

    _assert_survived(d, a, b, keep_a, keep_b, (pid_a, pid_b))
    # The other volume may take what little is left (and a reserve volume a gives back
    # meanwhile for its journal or a checkpoint); then a direct write gets ENOSPC from the
    # write syscall itself.
    written, refused = _direct_write(b / "direct", DISK_BYTES)
    assert refused is not None and refused.errno == errno.ENOSPC, refused
    assert written <= left + limits.volume_reserve_bytes
    # Metadata still works on the full disk (the journal has its space allocated ahead).
    (a / "made-while-full").mkdir()
    (b / "renamed-keep").symlink_to("keep")
    assert sorted(os.listdir(a)) == ["filler", "keep", "made-while-full"]

    # The pressure shows: /readyz, node status, metrics.
    _, body = wait_until(lambda: (r := _readyz(d))[0] == 503 and "refuses writes" in r[1] and r,
                         "/readyz 503 naming the full volumes")
    assert "disk pressure" in body and "volume a refuses writes that need space" in body, body
    node = ctl_ok(d, "node", "status")
    assert re.search(r"disk:\s+\S+ free of 96M", node), node
    assert "problem" in node and "disk pressure" in node, node
    assert ctl_json(d, "node", "status")["ready"] is False
    samples = wait_until(lambda: (s := scrape(d)) and (value(s, "galleonfs_volume_enospc_total", volume="a") or 0) >= 1
                         and s, "galleonfs_volume_enospc_total of a")
    assert value(samples, "galleonfs_node_disk_pressure") == 1
    assert (value(samples, "galleonfs_node_disk_free_bytes") or 0) < 16 * MiB
    assert value(samples, "galleonfs_volume_host_disk_full", volume="a") == 1

    # Freeing space (here: deleting the filler in the volume that wrote it) is enough:
    # writing works again in both volumes, without a remount, with the same workers.
    os.unlink(a / "filler")
    wait_until(lambda: _writes_again(a / "after"), "writing in volume a again", timeout_s=60)
    wait_until(lambda: _writes_again(b / "after"), "writing in volume b again", timeout_s=60)
    assert _direct_write(b / "direct2") == (BLOCK, None)
    _assert_survived(d, a, b, keep_a, keep_b, (pid_a, pid_b))
    _, body = wait_until(lambda: (r := _readyz(d)) and "refuses writes" not in r[1] and r,
                         "/readyz no longer naming a volume that refuses writes")
    assert "disk pressure" not in body, body

    # What fsync acknowledged survives a remount.
    ctl_ok(d, "volume", "unmount", "a")
    ctl_ok(d, "volume", "mount", "a", str(a))
    assert (a / "keep").read_bytes() == keep_a
    assert sorted(os.listdir(a)) == ["after", "keep", "made-while-full"]


@pytest.mark.allow_warnings
def test_a_disk_filled_from_outside_the_volumes_gives_enospc_unmount_and_remount_complete(
        small_daemon: tuple[RunningDaemon, SmallDisk]) -> None:
    d, disk = small_daemon
    a, b, keep_a, keep_b, pid_a, pid_b = _setup(d)

    node_reserve = d.data_dir / "RESERVE"
    assert node_reserve.stat().st_blocks * 512 >= 4 * MiB
    filler = disk.fill()                               # another process filled the disk
    written, refused = _direct_write(a / "direct")
    assert refused is not None and refused.errno == errno.ENOSPC and written == 0, refused
    _, failed = _fill_through(b / "more", 4 * MiB)
    assert failed.errno == errno.ENOSPC, failed
    (a / "dir-while-full").mkdir()
    _assert_survived(d, a, b, keep_a, keep_b, (pid_a, pid_b))
    wait_until(lambda: (r := _readyz(d))[0] == 503 and "disk pressure" in r[1], "/readyz 503")
    # Both volumes refuse data now: the daemon gives its own reserve back, so that the
    # catalog and the audit log can record the unmount below.
    wait_until(lambda: node_reserve.stat().st_blocks == 0, "the node's reserve released")

    # Unmount completes on the full disk (the commit and checkpoint need no new space, or
    # take the reserve's), and the volume mounts again with everything fsync acknowledged.
    ctl_ok(d, "volume", "unmount", "a")
    assert _state(d, "a") == "AVAILABLE" and _not_marked(d) == []
    ctl_ok(d, "volume", "mount", "a", str(a))
    assert (a / "keep").read_bytes() == keep_a
    assert (a / "dir-while-full").is_dir()
    pid_a = _pid(d, "a")

    disk.unfill(filler)
    wait_until(lambda: _writes_again(a / "after"), "writing in volume a again", timeout_s=60)
    wait_until(lambda: _writes_again(b / "after"), "writing in volume b again", timeout_s=60)
    _assert_survived(d, a, b, keep_a, keep_b, (pid_a, pid_b))
    wait_until(lambda: node_reserve.stat().st_blocks * 512 >= 4 * MiB, "the node's reserve back")
    ctl_ok(d, "volume", "unmount", "a")
    ctl_ok(d, "volume", "unmount", "b")


def test_volumes_beyond_the_disk_are_refused_unless_overcommit_allows_them(
        tmp_path: Path, fuse_ok: None) -> None:
    with SmallDisk(tmp_path / "disk", 168 * MiB) as disk:
        d = _daemon_on(disk, tmp_path / "node")
        try:
            d.start()
            done = d.ctl("volume", "create", "first", "--size", "1G")
            message = user_error(done, 6, "cannot create volume first (1G more)", "overcommit_ratio 1 allows",
                                 "168M", "raise overcommit_ratio")
            assert len(message) < 400
            ctl_ok(d, "volume", "create", "small", "--size", "100M")
            user_error(d.ctl("volume", "create", "second", "--size", "100M"), 6, "provisioned for 200M")
            user_error(d.ctl("volume", "expand", "small", "--size", "200M"), 6, "cannot expand volume small (100M more)")
            names = [v["name"] for v in ctl_json(d, "volume", "list")]
            assert names == ["small"]
            assert int(ctl_json(d, "volume", "get", "small")["size_bytes"]) == 100 * MiB
            assert d.stop() == 0

            d = _daemon_on(disk, tmp_path / "node", GALLEONFS_OVERCOMMIT_RATIO="20")
            d.start()
            ctl_ok(d, "volume", "create", "first", "--size", "1G")
            ctl_ok(d, "volume", "create", "second", "--size", "1G")
            ctl_ok(d, "volume", "expand", "small", "--size", "200M")
            assert int(ctl_json(d, "node", "status")["provisioned_bytes"]) == 2 * 1024 * MiB + 200 * MiB
            for name in ("first", "second", "small"):
                ctl_ok(d, "volume", "delete", name)
        except BaseException:
            d.cleanup()
            raise
        finish(d, check_logs=True)


@pytest.mark.parametrize("value", ["0", "-1", "many", "inf"])
def test_a_bad_overcommit_ratio_is_refused_in_one_line(value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "--config", os.devnull,
                           "--print-config"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, GALLEONFS_OVERCOMMIT_RATIO=value))
    user_error(done, 2, "bad value for GALLEONFS_OVERCOMMIT_RATIO", prog="galleond")


def test_overcommit_ratio_is_shown_with_its_source() -> None:
    done = subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "--config", os.devnull,
                           "--print-config"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, GALLEONFS_OVERCOMMIT_RATIO="2.5"))
    assert done.returncode == 0, done.stderr
    assert "overcommit_ratio = 2.5  # from environment" in done.stdout.splitlines()
