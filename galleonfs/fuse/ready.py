"""The mount worker's ready line: one line on a pipe to whoever started it.

    ready                              the mount serves
    error <exit code> <message>        it will not; the code is ``errors.ExitCode``'s

The worker writes it (``ReadyPipe``); whoever starts a worker (``workers/launch.py``: the
daemon's supervisor, ``galleonfs mount``, the test harness) reads it (``read_line``) and
makes sense of it (``parse``). Both ends are here so that the format is written down once.

What it must not do: wait without a bound.
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import dataclass

from ..errors import ExitCode

READY = "ready"


class ReadyPipe:
    """The worker's end: "ready" or "error <exit code> <message>", once."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def send(self, line: str) -> None:
        if self._fd is None:
            if line != READY:
                print(line.split(" ", 2)[-1], file=sys.stderr)
            return
        try:
            os.write(self._fd, line.encode() + b"\n")
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None

    def error(self, exit_code: int, message: str) -> None:
        self.send(f"error {exit_code} {message}")


@dataclass(frozen=True)
class Outcome:
    """What a worker's line said: ready, or why not (``code`` is its exit code)."""

    ready: bool
    code: int = ExitCode.OK
    message: str = ""
    answered: bool = True          # False: the pipe closed (or the time ran out) without a line


def parse(line: str) -> Outcome:
    if line == READY:
        return Outcome(True)
    if line.startswith("error ") and line.count(" ") >= 2:
        _, code, message = line.split(" ", 2)
        return Outcome(False, int(code) if code.isdigit() else ExitCode.ERROR, message)
    return Outcome(False, ExitCode.UNAVAILABLE, f"no ready signal: {line!r}", answered=False)


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
