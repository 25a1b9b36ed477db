"""The smallest real-mount test: write, read back, survive a remount."""

from __future__ import annotations

import os

from galleonfs.testing.mount import MountedVolume


def test_write_read_remount(volume: MountedVolume) -> None:
    data = os.urandom(300_000)
    (volume / "a").write_bytes(data)
    assert (volume / "a").read_bytes() == data
    assert volume.unmount() == 0
    volume.mount()
    assert (volume / "a").read_bytes() == data
    assert os.listdir(volume.mountpoint) == ["a"]
