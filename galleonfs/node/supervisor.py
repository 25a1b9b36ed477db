"""The supervisor of mount workers: start, watch, restart, adopt, stop (DESIGN §2).

One worker process per mounted volume (pyfuse3 allows one mount per process); the worker
mounts the volume on a private staging directory, and mount points are bind mounts of it
(``mounts.py``). The supervisor:

* starts a worker and waits, with a bound, for its "ready" line on a pipe;
* watches every worker through a pidfd; when one dies unasked, marks its volume for check
  (the next worker checks it before mounting), and calls the owner back to restart it;
* adopts workers left running by a previous daemon (``kill -9`` of galleond does not take
  the mounts down), recognising them by the volume lock and the control socket;
* binds each worker's control socket itself, in ``<data-dir>/run/control`` (0700), and
  hands it to the worker by fd: no other user can take or reach the address (``control.py``);
* stops a worker with SIGTERM, which makes it flush, checkpoint and unmount, then exit 0.

Workers run in their own session, so a signal to the daemon's process group does not
reach them; the daemon stops them explicitly on a clean shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .. import errors, limits
from ..crypto.keys import KeySpec
from ..engine.engine import LOCK_FILE, NEEDS_CHECK_FILE
from ..errors import ExitCode, GalleonError, Unavailable
from ..fuse import control
from ..metrics import multiproc
from . import mounts

log = logging.getLogger(__name__)

DeathHandler = Callable[[str, str], Awaitable[None]]


# A worker that cannot start says why as "error <exit code> <message>": the code brings
# back the kind of error, so the API answers with the right status (not INTERNAL).
_WORKER_ERRORS: dict[int, type[GalleonError]] = {
    ExitCode.USAGE: errors.InvalidArgument, ExitCode.NOT_FOUND: errors.NotFound,
    ExitCode.EXISTS: errors.AlreadyExists, ExitCode.BUSY: errors.Busy, ExitCode.NO_SPACE: errors.NoSpace,
    ExitCode.CORRUPT: errors.Corrupt, ExitCode.PERMISSION: errors.PermissionDenied,
    ExitCode.UNAVAILABLE: errors.Unavailable,
}


@dataclass
class MountWorker:
    volume_id: str
    volume_dir: str
    staging: str
    read_only: bool
    pid: int
    process: trio.Process | None = None      # None when adopted from an earlier daemon
    stopping: bool = False
    exited: trio.Event = field(default_factory=trio.Event)
    exit_status: str = ""


def lock_holder(volume_dir: str) -> int | None:
    """The pid written in the volume's LOCK file, if that process still holds the lock."""
    import fcntl

    path = os.path.join(volume_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, data_dir: str, on_death: DeathHandler, keys: KeySpec | None = None) -> None:
        self.data_dir = data_dir
        self.keys = keys or KeySpec()           # passed on to every worker (encrypted volumes)
        self.workers: dict[str, MountWorker] = {}
        self._on_death = on_death
        self._nursery: trio.Nursery | None = None
        self.log_dir = os.path.join(data_dir, "logs")
        self.control_dir = os.path.join(data_dir, "run", "control")
        self._control_dir_fd = -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the watcher tasks; runs until cancelled."""
        # Made before any worker: from the start no one else can create anything there.
        self.control_dir_fd()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def staging_dir(self, volume_id: str) -> str:
        return os.path.join(self.data_dir, "mounts", volume_id)

    def control_dir_fd(self) -> int:
        """The control sockets' directory, 0700 (made so if it was not), held open."""
        if self._control_dir_fd < 0:
            os.makedirs(self.control_dir, mode=0o700, exist_ok=True)
            fd = os.open(self.control_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
            self._control_dir_fd = fd
        return self._control_dir_fd

    def control_address(self, volume_id: str) -> str:
        return control.address(self.control_dir, self.control_dir_fd(), control.socket_file(volume_id))

    def up(self) -> int:
        return sum(1 for w in self.workers.values() if not w.exited.is_set())

    # --- start ---------------------------------------------------------------------------------
    async def start(self, volume_id: str, volume_dir: str, *, read_only: bool) -> MountWorker:
        """Start a worker for the volume and wait until its mount is ready."""
        assert self._nursery is not None, "supervisor not running"
        assert volume_id not in self.workers, "volume already has a worker"
        staging = self.staging_dir(volume_id)
        # Clear first: the FUSE mount of a worker that died is still there and answers
        # ENOTCONN, which makedirs takes for "missing" and then fails with EEXIST.
        await mounts.clear_dead(staging)
        os.makedirs(staging, mode=0o700, exist_ok=True)
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        listener = control.listen(self.control_dir_fd(), control.socket_file(volume_id))
        read_fd, write_fd = os.pipe()
        command = [sys.executable, "-m", "galleonfs.fuse.worker", volume_dir, staging,
                   "--ready-fd", str(write_fd), "--control-fd", str(listener.fileno())]
        if read_only:
            command += ["-o", "ro"]
        command += self.keys.arguments()
        with open(os.path.join(self.log_dir, f"{volume_id}.log"), "ab") as log_file:
            try:
                process = await trio.lowlevel.open_process(
                    command, pass_fds=(write_fd, listener.fileno()), stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=log_file, start_new_session=True,
                    env={**os.environ, **self.keys.environment()},   # the key command, not in argv
                )
            finally:
                os.close(write_fd)
                listener.close()
        line = await self._read_ready(read_fd)
        if line != "ready":
            with trio.move_on_after(limits.unmount_timeout_s):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await mounts.clear_dead(staging)
            if line.startswith("error ") and line.count(" ") >= 2:
                _, code, message = line.split(" ", 2)
                raise _WORKER_ERRORS.get(int(code) if code.isdigit() else -1, GalleonError)(message)
            raise GalleonError(f"the mount worker {describe_exit(process.returncode)} before it was ready")
        worker = MountWorker(volume_id, volume_dir, staging, read_only, process.pid, process)
        self.workers[volume_id] = worker
        self._nursery.start_soon(self._watch, worker)
        log.info("mount worker %d serves volume %s", process.pid, volume_id)
        return worker

    async def _read_ready(self, fd: int) -> str:
        stream = trio.lowlevel.FdStream(fd)
        data = b""
        async with stream:
            with trio.move_on_after(limits.mount_ready_timeout_s + 5):
                while b"\n" not in data:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
        return data.decode(errors="replace").strip()

    # --- adopt ---------------------------------------------------------------------------------
    async def adopt(self, volume_id: str, volume_dir: str, *, read_only: bool) -> MountWorker | None:
        """Take over a worker a previous daemon left running; None if there is none alive."""
        assert self._nursery is not None
        pid = lock_holder(volume_dir)
        staging = self.staging_dir(volume_id)
        if pid is None or not mounts.is_mounted(staging):
            return None
        try:
            reply = await control.call(self.control_address(volume_id), "ping", timeout_s=5)
        except GalleonError:
            return None
        if reply.get("pid") != pid:
            return None
        worker = MountWorker(volume_id, volume_dir, staging, read_only, pid)
        self.workers[volume_id] = worker
        self._nursery.start_soon(self._watch, worker)
        log.info("adopted mount worker %d of volume %s", pid, volume_id)
        return worker

    # --- watch ---------------------------------------------------------------------------------
    async def _watch(self, worker: MountWorker) -> None:
        if worker.process is not None:
            worker.exit_status = describe_exit(await worker.process.wait())
        else:
            try:
                pidfd = os.pidfd_open(worker.pid)
            except ProcessLookupError:
                pidfd = None
            if pidfd is not None:
                try:
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
            worker.exit_status = "exited (adopted worker; status unknown)"
        worker.exited.set()
        multiproc.forget(worker.pid, worker.volume_id)
        if self.workers.get(worker.volume_id) is worker:
            del self.workers[worker.volume_id]
        if worker.stopping:
            return
        reason = f"mount worker {worker.pid} {worker.exit_status} while serving the volume"
        log.error("volume %s: %s", worker.volume_id, reason)
        # A worker only exits when told to; any other exit may have cut an operation short.
        mark_needs_check(worker.volume_dir, reason)
        await self._on_death(worker.volume_id, reason)

    # --- stop ----------------------------------------------------------------------------------
    async def stop(self, volume_id: str) -> None:
        """Flush and unmount through the worker (SIGTERM), wait for it; kill it if it hangs."""
        worker = self.workers.get(volume_id)
        if worker is None:
            return
        worker.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
        with trio.move_on_after(limits.unmount_timeout_s):
            await worker.exited.wait()
        if not worker.exited.is_set():
            log.error("mount worker %d did not stop in %.0f s; killing it", worker.pid,
                      limits.unmount_timeout_s)
            os.kill(worker.pid, signal.SIGKILL)
            mark_needs_check(worker.volume_dir, "mount worker had to be killed on stop")
            await worker.exited.wait()
        await mounts.clear_dead(worker.staging)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control.socket_file(volume_id), dir_fd=self.control_dir_fd())
        if worker.exit_status not in ("exited with code 0", "exited (adopted worker; status unknown)"):
            raise Unavailable(f"the mount worker of volume {volume_id} {worker.exit_status} on stop")

    async def call(self, volume_id: str, op: str, /, **args: object) -> dict[str, object]:
        return await control.call(self.control_address(volume_id), op, **args)


def mark_needs_check(volume_dir: str, reason: str) -> None:
    path = os.path.join(volume_dir, NEEDS_CHECK_FILE)
    if os.path.exists(path):
        return
    try:
        with open(path, "w") as f:
            f.write(reason + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        log.exception("cannot mark volume %s for check", volume_dir)
