"""Fixtures for the daemon tests: a real galleond on a temporary data directory.

``daemon``: a fresh galleond for one test, on ``tmp_path``. ``shared_daemon``: one galleond
per test module (starting one costs about a second, and most tests only need distinct
volume names), seen through a per-test fixture that checks what the test left behind.

Every daemon is checked at the end: a SIGTERM stop exits 0, nothing is left mounted under
its directory, every volume directory (and every retained one) passes fsck and is not left
marked for check, and neither
the daemon nor any mount worker logged a WARNING or worse, unless the test is marked
``allow_warnings``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.engine.engine import NEEDS_CHECK_FILE
from galleonfs.engine.fsck import fsck
from galleonfs.errors import GalleonError
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

from .util import log_sizes, mounts_under, new_loud_lines


def finish(daemon: RunningDaemon, *, check_logs: bool) -> None:
    """Stop (restarting first if a test left it killed), then check the data directory."""
    try:
        if daemon.proc is None:
            # A test that killed the daemon leaves its workers running; only a daemon can
            # stop them cleanly, so bring one up (it adopts them) and stop that.
            daemon.start()
        code = daemon.stop()
        left = mounts_under(daemon.base)
    finally:
        daemon.cleanup()
    assert code == 0, f"galleond exited with {code} on SIGTERM:\n{daemon.log()}"
    assert left == [], f"still mounted after a clean stop: {left}"
    dirs = sorted((daemon.data_dir / "volumes").glob("*")) + sorted((daemon.data_dir / "retained").glob("*"))
    for volume_dir in dirs:
        report = fsck(str(volume_dir))
        assert report.clean, f"{volume_dir}:\n{report.render()}"
        assert not (volume_dir / NEEDS_CHECK_FILE).exists(), f"{volume_dir} is left marked for check"
    if check_logs:
        loud = new_loud_lines(daemon, {})
        assert not loud, "galleond or a mount worker logged:\n" + "\n".join(loud)


def _allows_warnings(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("allow_warnings") is not None


@pytest.fixture
def daemon(tmp_path: Path, fuse_ok: None, request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    d = RunningDaemon(tmp_path)
    try:
        d.start()
        yield d
    except BaseException:
        d.cleanup()
        raise
    finish(d, check_logs=not _allows_warnings(request))


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    d = RunningDaemon(tmp_path_factory.mktemp("galleond"))
    try:
        d.start()
        yield d
    except BaseException:
        d.cleanup()
        raise
    # Per-test log checks ran already; tests marked allow_warnings may have added some.
    finish(d, check_logs=False)


@pytest.fixture
def shared_daemon(module_daemon: RunningDaemon, tmp_path: Path, fuse_ok: None,
                  request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    """The module's daemon; the test mounts under its own ``tmp_path`` and must unmount."""
    assert module_daemon.proc is not None, "an earlier test left the shared daemon stopped"
    since = log_sizes(module_daemon)
    yield module_daemon
    left = mounts_under(tmp_path)
    if left:
        with Client(module_daemon.address) as client:
            for path in sorted(left, reverse=True):
                with contextlib.suppress(GalleonError):
                    client.unmount_volume(path=path)
    assert left == [], f"the test left mounted: {left}"
    if not _allows_warnings(request):
        loud = new_loud_lines(module_daemon, since)
        assert not loud, "galleond or a mount worker logged:\n" + "\n".join(loud)


@pytest.fixture
def client(shared_daemon: RunningDaemon) -> Iterator[Client]:
    with Client(shared_daemon.address, timeout_s=60) as c:
        yield c
