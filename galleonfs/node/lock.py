"""One galleond per data directory: the lock both ``galleond`` and ``recover-catalog`` take.

What it must not do: wait (a second daemon is refused at once, naming the first).
"""

from __future__ import annotations

import fcntl
import os

from ..errors import Busy


def lock_data_dir(data_dir: str) -> int:
    """Take the data directory's lock; its fd (held for the process's life)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, "galleond.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise Busy(f"another galleond (pid {holder}) already uses the data directory {data_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
