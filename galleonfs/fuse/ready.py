"""The reading end of the worker's ready pipe (``worker.ReadyPipe`` writes it).

Whoever starts a mount worker (``galleonfs mount``, the test harness) waits for its one
line: ``ready``, or ``error <exit code> <message>``. The daemon's supervisor reads the same
line asynchronously (trio) and does not use this.
"""

from __future__ import annotations

import os
import select
import time


def read_line(fd: int, timeout_s: float) -> str:
    """The worker's line, or what came before the pipe closed or ``timeout_s`` ran out
    (empty: nothing). Closes ``fd``."""
    deadline = time.monotonic() + timeout_s
    data = b""
    try:
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()
