"""Waiting for the clock that file timestamps come from to move on (for tests).

The kernel stamps files with its *coarse* clock (``CLOCK_REALTIME_COARSE``, one tick per
jiffy: 1-10 ms depending on ``CONFIG_HZ``), so two changes made within one tick get equal
times, and a test that checks "ctime moved" must first let a tick pass. A fixed sleep is
either too short on a slow machine or wasted time on a fast one; ``wait_for_clock_tick``
waits exactly until the coarse clock has passed every time read before the call, from
either clock, so anything stamped afterwards is strictly later.

What it must not do: be used by the file system itself; it is a test helper (it sleeps).
"""

from __future__ import annotations

import time

from ..limits import clock_tick_wait_s

# <linux/time.h>; Python's time module has no name for it.
CLOCK_REALTIME_COARSE = 5


def wait_for_clock_tick() -> int:
    """Return once ``CLOCK_REALTIME_COARSE`` is past the fine clock's reading at the call.

    Returns the coarse clock's new value (ns). Bounded by ``limits.clock_tick_wait_s``: a
    coarse clock that does not move for that long is a broken machine, and the assertion
    says so rather than letting a timestamp test fail for a reason it does not name.
    """
    start_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
    deadline = time.monotonic() + clock_tick_wait_s
    while True:
        now_ns = time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
        if now_ns > start_ns:
            return now_ns
        assert time.monotonic() < deadline, (
            f"CLOCK_REALTIME_COARSE did not pass {start_ns} within {clock_tick_wait_s} s")
        # A quarter of the shortest tick (1 ms at HZ=1000): few wake-ups, little overshoot.
        time.sleep(0.00025)
