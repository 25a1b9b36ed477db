"""``SmallDisk``: a real file system of a few MiB that a test can fill up (a tmpfs).

A host disk that runs full, for the engine and security tiers: ``fill`` writes a file until
the kernel answers ENOSPC, after which every writer on it (a volume's engine, LMDB, the
daemon) meets a full disk; ``unfill`` gives the space back. Mounting needs root, as the
mount tiers do anyway. Use it as a context manager: it unmounts at the end, and fails the
test if that is impossible (something of the test still has files open there).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

_CHUNK_BYTES = 1 << 20
# A mount worker that was just told to stop may hold its files for a moment after it said so.
_UNMOUNT_WAIT_S = 10.0


class SmallDisk:
    def __init__(self, path: str | Path, size_bytes: int) -> None:
        self.path = Path(path)
        self.size_bytes = size_bytes
        self.mounted = False

    def __enter__(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_bytes},mode=0755",
                        "galleonfs-test-disk", str(self.path)], check=True, capture_output=True)
        self.mounted = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.unmount()

    def unmount(self) -> None:
        if not self.mounted:
            return
        deadline = time.monotonic() + _UNMOUNT_WAIT_S
        while True:
            done = subprocess.run(["umount", str(self.path)], capture_output=True, text=True, check=False)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if done.returncode != 0 and "not mounted" in done.stderr:
            self.mounted = False            # a test's cleanup detached it already
            return
        if done.returncode != 0:
            # Never leave a tmpfs behind; but say that something still used it.
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False
            raise AssertionError(f"{self.path} was still in use at the end of the test: {done.stderr.strip()}")
        self.mounted = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, name: str = "filler") -> Path:
        """Write ``name`` (at the top of the disk, outside any volume) until the disk is full."""
        path = self.path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = _CHUNK_BYTES
            while chunk:
                try:
                    os.write(fd, b"\xa5" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        finally:
            os.close(fd)
        assert self.free_bytes() < 4096, f"{self.path} still has {self.free_bytes()} bytes free"
        return path

    def unfill(self, path: Path) -> None:
        path.unlink()
