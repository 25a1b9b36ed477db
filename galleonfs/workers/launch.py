"""Starting a mount worker and waiting for its ready line: the one way, for every starter.

galleond's supervisor, ``galleonfs mount`` and the test harness (``testing/mount.py``) all
start ``python -m galleonfs.fuse.worker`` the same way: the same command line, the key
source in argv as options and the key command in the environment (never in argv, which
every local user can read in /proc), a pipe for the ready line (``fuse/ready.py``), the
control socket handed over by fd when there is one. They differ only in where the
worker's output goes and how they wait (a thread, or the daemon's trio loop).

What it must not do: leave a pipe end open in the starter (a worker that dies before its
line would then never be noticed), or wait for the line without a bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO

import trio

from .. import errors, limits
from ..crypto.keys import KeySpec
from ..errors import ExitCode, GalleonError
from ..fuse import ready
from ..fuse.ready import Outcome

WORKER_MODULE = "galleonfs.fuse.worker"

# A worker that cannot start says why with its exit code: the code brings back the kind of
# error, so the API answers with the right status (not INTERNAL).
_ERRORS: dict[int, type[GalleonError]] = {
    ExitCode.USAGE: errors.InvalidArgument, ExitCode.NOT_FOUND: errors.NotFound,
    ExitCode.EXISTS: errors.AlreadyExists, ExitCode.BUSY: errors.Busy, ExitCode.NO_SPACE: errors.NoSpace,
    ExitCode.CORRUPT: errors.Corrupt, ExitCode.PERMISSION: errors.PermissionDenied,
    ExitCode.UNAVAILABLE: errors.Unavailable,
}


def error_of(outcome: Outcome) -> GalleonError:
    """The error a worker's "error CODE MESSAGE" line stands for."""
    return _ERRORS.get(outcome.code, GalleonError)(outcome.message)


class Launch:
    """One start of a mount worker: its command, environment and ready pipe.

    ``popen`` (or ``open_process``, for trio) starts it; then ``wait_ready`` (or
    ``wait_ready_async``) reads its line. ``control_fd`` is a listening socket to hand over.
    """

    def __init__(self, volume_dir: str, mountpoint: str, *, options: str = "", keys: KeySpec | None = None,
                 control_fd: int | None = None, env: dict[str, str] | None = None) -> None:
        keys = keys or KeySpec()
        self.argv = [sys.executable, "-m", WORKER_MODULE, volume_dir, mountpoint, *keys.arguments()]
        if options:
            self.argv += ["-o", options]
        self.env = {**os.environ, **keys.environment(), **(env or {})}
        self._control_fd = control_fd
        self._read_fd = self._write_fd = -1

    def foreground(self) -> tuple[list[str], dict[str, str]]:
        """argv and environment for a worker that serves in this process (``exec``)."""
        return self.argv, self.env

    def _prepare(self) -> tuple[list[str], tuple[int, ...]]:
        assert self._read_fd < 0, "a Launch starts one worker"
        self._read_fd, self._write_fd = os.pipe()
        argv = [*self.argv, "--ready-fd", str(self._write_fd)]
        fds: tuple[int, ...] = (self._write_fd,)
        if self._control_fd is not None:
            argv += ["--control-fd", str(self._control_fd)]
            fds += (self._control_fd,)
        return argv, fds

    def _started(self, ok: bool) -> None:
        os.close(self._write_fd)      # the worker's now: EOF when it dies
        self._write_fd = -1
        if not ok:
            os.close(self._read_fd)

    def popen(self, *, stdout: IO[bytes] | int, stderr: IO[bytes] | int,
              new_session: bool = False) -> subprocess.Popen[bytes]:
        argv, fds = self._prepare()
        try:
            process = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr, start_new_session=new_session, env=self.env)
        except BaseException:
            self._started(ok=False)
            raise
        self._started(ok=True)
        return process

    async def open_process(self, *, stdout: IO[bytes], stderr: IO[bytes]) -> trio.Process:
        """The daemon's way: its own session, so a signal to galleond's process group does
        not reach the worker (a clean shutdown stops workers one by one)."""
        argv, fds = self._prepare()
        try:
            process = await trio.lowlevel.open_process(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                                                       stdout=stdout, stderr=stderr, start_new_session=True,
                                                       env=self.env)
        except BaseException:
            self._started(ok=False)
            raise
        self._started(ok=True)
        return process

    def wait_ready(self, timeout_s: float = limits.mount_ready_timeout_s + 5) -> Outcome:
        """Block until the worker's line (or EOF, or ``timeout_s``)."""
        return ready.parse(ready.read_line(self._read_fd, timeout_s))

    async def wait_ready_async(self, timeout_s: float = limits.mount_ready_timeout_s + 5) -> Outcome:
        stream = trio.lowlevel.FdStream(self._read_fd)
        data = b""
        async with stream:
            with trio.move_on_after(timeout_s):
                while b"\n" not in data:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
        return ready.parse(data.decode(errors="replace").strip())
