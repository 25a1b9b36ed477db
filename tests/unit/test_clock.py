"""``testing.clock.wait_for_clock_tick``: what the timestamp tests rely on instead of a sleep."""

from __future__ import annotations

import os
import time
from pathlib import Path

from galleonfs.testing.clock import CLOCK_REALTIME_COARSE, wait_for_clock_tick


def test_the_coarse_clock_is_past_every_earlier_reading() -> None:
    for _ in range(20):
        before = time.time_ns()
        returned = wait_for_clock_tick()
        assert returned > before
        assert time.clock_gettime_ns(CLOCK_REALTIME_COARSE) > before


def test_a_file_changed_after_the_wait_has_a_later_ctime(tmp_path: Path) -> None:
    """The kernel stamps from the coarse clock: two changes within one tick get equal times,
    and a change after the wait never does (checked many times to meet a tick boundary)."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    for mode in range(0o600, 0o620):
        before = os.stat(path).st_ctime_ns
        wait_for_clock_tick()
        os.chmod(path, mode)
        assert os.stat(path).st_ctime_ns > before
