"""Every fixture more than one tier uses, in one place (pytest finds them by name; no test
package imports another's conftest). Tiers, lowest first: unit, vfs (no kernel, no root:
``tests/run.sh tests/unit tests/vfs``), engine, mount, posix, crash, then the daemon tiers
(node, snapshots, qos, metrics, audit, security).

Mount tests need /dev/fuse and fusermount3; when those are missing the tests *fail*
(CI must not go green by skipping them).

Fixtures: ``volume`` (a mounted volume), ``fuse_ok``; the daemon tiers' ``daemon`` (a fresh
galleond for one test), ``module_daemon`` and ``shared_daemon`` (one galleond per test
module, seen through a per-test check of what the test left behind) and ``client``. Every
daemon is checked at the end (``node.util.finish``): a SIGTERM stop exits 0, nothing is left
mounted under its directory, every volume directory passes fsck and is not left marked for
check, and neither the daemon nor a mount worker logged a WARNING or worse, unless the test
is marked ``allow_warnings``. Tier-specific fixtures stay in their tier's conftest.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from node.util import allows_warnings, finish, log_sizes, mounts_under, new_loud_lines

from galleonfs.engine import crashpoints
from galleonfs.engine.fsck import fsck
from galleonfs.errors import GalleonError
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.testing.mount import MountedVolume

WARNING_WORDS = (" WARNING ", " ERROR ", " CRITICAL ")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_warnings: the test expects WARNING log records")


def fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt install fuse3)"
    return None


@pytest.fixture(autouse=True)
def _no_unexpected_warnings(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """STYLE: a test fails if it logs a WARNING it did not expect."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("allow_warnings"):
        return
    loud = [r for r in caplog.get_records("call") if r.levelno >= logging.WARNING]
    assert not loud, "unexpected warnings: " + "; ".join(r.getMessage() for r in loud)


@pytest.fixture(autouse=True)
def _disarm_crashpoints() -> Iterator[None]:
    yield
    crashpoints.disarm_all()


@pytest.fixture
def fuse_ok() -> None:
    problem = fuse_problem()
    if problem:
        pytest.fail(f"FUSE tests cannot run: {problem}")


def check_worker_log(vol: MountedVolume, request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("allow_warnings"):
        return
    loud = [line for line in vol.log().splitlines() if any(w in line for w in WARNING_WORDS)]
    assert not loud, "the mount worker logged warnings:\n" + "\n".join(loud)


@pytest.fixture
def volume(tmp_path: Path, fuse_ok: None, request: pytest.FixtureRequest) -> Iterator[MountedVolume]:
    """A fresh 1 GiB volume (64 KiB blocks) mounted by a real worker; fsck'd afterwards.

    Parametrise with ``@pytest.mark.volume(size=..., block_size=..., options=...)``.
    """
    marker = request.node.get_closest_marker("volume")
    kwargs = dict(marker.kwargs) if marker else {}
    vol = MountedVolume.create(tmp_path, **kwargs)
    try:
        yield vol
    finally:
        if vol.proc is not None:
            code = vol.unmount()
            assert code == 0, f"worker exited with {code}:\n{vol.log()}"
    check_worker_log(vol, request)
    report = fsck(str(vol.volume_dir), keys=vol.keys.manager() if vol.keys.configured else None)
    assert report.clean, report.render()


# --- the daemon tiers ----------------------------------------------------------------------------
@pytest.fixture
def daemon(tmp_path: Path, fuse_ok: None, request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    """A fresh galleond for one test, on ``tmp_path``."""
    d = RunningDaemon(tmp_path)
    try:
        d.start()
        yield d
    except BaseException:
        d.cleanup()
        raise
    finish(d, check_logs=not allows_warnings(request))


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One galleond per test module: starting one costs about a second, and most tests only
    need distinct volume names. Tests reach it through ``shared_daemon``."""
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
    if not allows_warnings(request):
        loud = new_loud_lines(module_daemon, since)
        assert not loud, "galleond or a mount worker logged:\n" + "\n".join(loud)


@pytest.fixture
def client(shared_daemon: RunningDaemon) -> Iterator[Client]:
    with Client(shared_daemon.address, timeout_s=60) as c:
        yield c
