"""Shared fixtures. Tiers, lowest first: unit, engine, vfs (no kernel), mount, posix, crash.

Mount tests need /dev/fuse and fusermount3; when those are missing the tests *fail*
(CI must not go green by skipping them).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.engine import crashpoints
from galleonfs.engine.fsck import fsck
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
