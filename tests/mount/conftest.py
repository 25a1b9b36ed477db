"""Fixtures of the real-mount tier (the ``volume`` fixture itself is in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from galleonfs.testing.mount import MountedVolume


@pytest.fixture(autouse=True)
def _settle_before_unmount(volume: MountedVolume) -> Iterator[None]:
    """One synchronous round trip after the test, before the fixture unmounts.

    The kernel sends RELEASE/RELEASEDIR for a just-closed file in the background; an
    unmount that overtakes one makes libfuse log "fuse_reply_* failed" (an ERROR line that
    fails the test). A STATFS queued behind them is answered only after them.
    """
    yield
    if volume.proc is not None:
        os.statvfs(volume.mountpoint)
