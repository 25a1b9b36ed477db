"""Progress of long repository work, reported to a callback the caller gives.

The repository counts; the caller, who knows the total (a volume's size, a backup's
bytes), computes rate and ETA and draws the bar or streams it over the API. Callbacks run
on the thread that drives the work, at most every ``progress_interval_s`` and once at the
end (``done``).

What it must not do: block the work, or call back from pool threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    phase: str                  # "backup", "restore", "gc", "verify"
    bytes_done: int             # raw bytes handled (given to put_blob, read back, checked)
    bytes_transferred: int      # bytes sent to or received from the target
    items_done: int             # blobs handled
    elapsed_s: float
    done: bool = False

    def rate_bytes_per_s(self) -> float:
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def eta_s(self, total_bytes: int) -> float | None:
        rate = self.rate_bytes_per_s()
        return max(0.0, (total_bytes - self.bytes_done) / rate) if rate > 0 else None


ProgressCallback = Callable[[Progress], None]


class Meter:
    def __init__(self, phase: str, callback: ProgressCallback | None, interval_s: float) -> None:
        self.phase, self.callback, self.interval_s = phase, callback, interval_s
        self.started = time.monotonic()
        self._last = self.started
        self.bytes_done = self.bytes_transferred = self.items_done = 0

    def add(self, *, done: int = 0, transferred: int = 0, items: int = 0) -> None:
        self.bytes_done += done
        self.bytes_transferred += transferred
        self.items_done += items
        if self.callback is not None:
            now = time.monotonic()
            if now - self._last >= self.interval_s:
                self._last = now
                self.callback(self.snapshot())

    def snapshot(self, done: bool = False) -> Progress:
        return Progress(self.phase, self.bytes_done, self.bytes_transferred, self.items_done,
                        time.monotonic() - self.started, done)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot(done=True))
