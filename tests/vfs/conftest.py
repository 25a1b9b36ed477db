"""The kernel-free VFS tier's fixtures: a fresh volume per test, opened in this process
(no FUSE, no root), checked by fsck when the test is done (``util.volume``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.vfs.vfs import Vfs

from .util import Volume, volume


@pytest.fixture
def vol(tmp_path: Path) -> Iterator[Volume]:
    yield from volume(tmp_path)


@pytest.fixture
def vfs(vol: Volume) -> Vfs:
    return vol.vfs
