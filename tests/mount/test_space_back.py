"""Space comes back while mounted (issue 11): after deletes, the volume's directory on the host
holds at most 1.2 x the live data plus a fixed reserve within 30 s, and the files that stayed
read back the same bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from galleonfs import limits
from galleonfs.testing.mount import MountedVolume

from .util import drop_cache

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024
FILE_BYTES = 4 * MiB
FILES = 96                                   # 384 MiB: six 64 MiB segments
SPACE_BACK_S = 30.0
# What the volume directory holds besides 1.2 x live data: the reclaimer's slack, the segment
# being written, the RESERVE file, and the journal and metadata (a few MiB each here).
FIXED_BYTES = (limits.reclaim_slack_bytes + limits.segment_size_max_bytes
               + limits.volume_reserve_bytes + 24 * MiB)


def du_bytes(path: Path) -> int:
    """What `du` says the directory takes on the host (allocated blocks, bytes)."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def wait_du_at_most(path: Path, bound: float, timeout_s: float) -> tuple[int, float]:
    """``du`` of ``path`` once it is <= ``bound`` (or the last value), and how long it took."""
    start = time.monotonic()
    while True:
        used = du_bytes(path)
        elapsed = time.monotonic() - start
        if used <= bound or elapsed > timeout_s:
            return used, elapsed
        time.sleep(0.5)


def write_files(volume: MountedVolume) -> dict[str, str]:
    digests = {}
    for i in range(FILES):
        # Each file its own random bytes: no dedup, every block a frame of its own.
        data = os.urandom(FILE_BYTES)
        name = f"f{i:03d}"
        (volume / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    os.sync()
    return digests


def test_space_comes_back_within_30_s_of_deletes_and_kept_files_read_back(
        volume: MountedVolume) -> None:
    digests = write_files(volume)
    data_dir = volume.volume_dir
    written = du_bytes(data_dir)
    assert written >= FILES * FILE_BYTES

    # Keep one file in four: every segment is left a quarter live, which the old GC rule
    # (compact below half live, after a checkpoint every 30 s) gave back late or not at all.
    kept = {name: digest for i, (name, digest) in enumerate(sorted(digests.items())) if i % 4 == 0}
    for name in digests:
        if name not in kept:
            os.unlink(volume / name)
    live = len(kept) * FILE_BYTES
    bound = 1.2 * live + FIXED_BYTES
    assert written > bound                   # the test means something only if so
    used, took = wait_du_at_most(data_dir, bound, SPACE_BACK_S)
    assert used <= bound, (f"{used >> 20} MiB on the host {took:.1f} s after deleting, "
                           f"bound {int(bound) >> 20} MiB for {live >> 20} MiB live\n{volume.log()}")

    for name, digest in kept.items():
        drop_cache(volume / name)
        assert hashlib.sha256((volume / name).read_bytes()).hexdigest() == digest, name

    # Everything deleted: only the fixed part stays.
    for name in kept:
        os.unlink(volume / name)
    used, took = wait_du_at_most(data_dir, FIXED_BYTES, SPACE_BACK_S)
    assert used <= FIXED_BYTES, f"{used >> 20} MiB left {took:.1f} s after deleting everything"
    assert sorted(os.listdir(volume.mountpoint)) == []
