"""Dedup and compression, measured where a user sees them: the size of the data directory.

Sizes are ``st_blocks`` of every file under the volume directory (what ``du`` shows),
after ``fsync`` and a checkpoint (unmount), so journal space does not blur them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from galleonfs.testing.mount import MountedVolume

MiB = 1 << 20


def disk_bytes(volume_dir: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in (volume_dir / "data").rglob("*") if p.is_file())


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        for i in range(0, len(data), 4 * MiB):
            f.write(data[i:i + 4 * MiB])
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.volume(encrypt=True)
def test_the_same_200_mib_twice_takes_200_mib_with_dedup(volume: MountedVolume) -> None:
    data = os.urandom(200 * MiB)
    start = disk_bytes(volume.volume_dir)
    write_synced(volume / "first", data)
    after_first = disk_bytes(volume.volume_dir) - start
    write_synced(volume / "second", data)
    after_second = disk_bytes(volume.volume_dir) - start
    assert 195 * MiB <= after_first <= 215 * MiB, after_first
    assert after_second - after_first <= 2 * MiB, (after_first, after_second)
    assert (volume / "second").read_bytes() == data
    st = os.statvfs(volume.mountpoint)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert used <= 210 * MiB, used                       # the quota counts it once too


@pytest.mark.volume(dedup=False)
def test_without_dedup_equal_files_take_space_twice(volume: MountedVolume) -> None:
    data = os.urandom(16 * MiB)
    start = disk_bytes(volume.volume_dir)
    write_synced(volume / "first", data)
    write_synced(volume / "second", data)
    grown = disk_bytes(volume.volume_dir) - start
    assert grown >= 32 * MiB, grown
    assert (volume / "first").read_bytes() == (volume / "second").read_bytes() == data


def text(size: int) -> bytes:
    line = b"2026-11-30T21:14:07Z galleond volume=orders state=mounted iops=%05d\n"
    return b"".join(line % (i % 99999) for i in range(size // len(line) + 1))[:size]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compression_shrinks_text_and_leaves_random_data_alone(tmp_path: Path, fuse_ok: None,
                                                               compression: str) -> None:
    sizes = {}
    random_data = os.urandom(16 * MiB)
    text_data = text(16 * MiB)
    for codec in ("none", compression):
        vol = MountedVolume.create(tmp_path / codec, encrypt=True, compression=codec)
        try:
            start = disk_bytes(vol.volume_dir)
            write_synced(vol / "text", text_data)
            mid = disk_bytes(vol.volume_dir)
            write_synced(vol / "random", random_data)
            sizes[codec] = (mid - start, disk_bytes(vol.volume_dir) - mid)
            assert (vol / "text").read_bytes() == text_data
            assert (vol / "random").read_bytes() == random_data
        finally:
            assert vol.unmount() == 0, vol.log()
    (plain_text, plain_random), (packed_text, packed_random) = sizes["none"], sizes[compression]
    assert packed_text * 4 <= plain_text, sizes            # log lines shrink at least 4x
    assert abs(packed_random - plain_random) <= plain_random // 100, sizes   # stored raw
