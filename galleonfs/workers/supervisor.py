"""The supervisor of mount workers: start, watch, restart, adopt, stop (DESIGN §2).

One worker process per mounted volume (pyfuse3 allows one mount per process); the worker
mounts the volume on a private staging directory, and mount points are bind mounts of it
(``mounts.py``). The supervisor:

* starts a worker (``launch.py``) and waits, with a bound, for its "ready" line on a pipe;
* watches every worker through a pidfd; when one dies unasked, marks its volume for check
  (the next worker checks it before mounting), and calls the owner back to restart it;
* adopts workers left running by a previous daemon (``kill -9`` of galleond does not take
  the mounts down), recognising them by the volume lock and the control socket;
* binds each worker's control socket itself, in ``<data-dir>/run/control`` (0700), and
  hands it to the worker by fd: no other user can take or reach the address
  (``volops/channel.py``); ``ops`` reaches a worker's volume through it (``OnlineOps``);
* stops a worker with SIGTERM, which makes it flush, checkpoint and unmount, then exit 0.

Workers run in their own session, so a signal to the daemon's process group does not
reach them; the daemon stops them explicitly on a clean shutdown.

Whoever owns the volumes (the ``VolumeManager``) is handed a supervisor and subscribes to
worker deaths (``on_death``); the supervisor knows no manager.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .. import limits
from ..crypto.keys import KeySpec
from ..engine.engine import LOCK_FILE, NEEDS_CHECK_FILE
from ..errors import GalleonError, Unavailable
from ..metrics import multiproc
from ..storage import Storage
from ..volops import channel, online
from ..volops.messages import Ping
from ..volops.online import OnlineOps
from . import mounts
from .launch import Launch, error_of

log = logging.getLogger(__name__)

DeathHandler = Callable[[str, str], Awaitable[None]]


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


async def _nobody_listens(volume_id: str, reason: str) -> None:
    log.error("volume %s: nobody restarts its mount worker", volume_id)


class Supervisor:
    def __init__(self, data_dir: str, keys: KeySpec | None = None) -> None:
        self.data_dir = data_dir
        self.keys = keys or KeySpec()           # passed on to every worker (encrypted volumes)
        self.workers: dict[str, MountWorker] = {}
        self._on_death: DeathHandler = _nobody_listens
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

    def on_death(self, handler: DeathHandler) -> None:
        """Call ``handler(volume_id, reason)`` when a worker dies unasked (to restart it)."""
        self._on_death = handler

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
        return channel.address(self.control_dir, self.control_dir_fd(), channel.socket_file(volume_id))

    def ops(self, volume_id: str) -> OnlineOps | None:
        """The volume operations of the worker serving ``volume_id``; None if none does."""
        return OnlineOps(self.control_address(volume_id)) if volume_id in self.workers else None

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
        listener = channel.listen(self.control_dir_fd(), channel.socket_file(volume_id))
        launch = Launch(volume_dir, staging, options="ro" if read_only else "", keys=self.keys,
                        control_fd=listener.fileno())
        with open(os.path.join(self.log_dir, f"{volume_id}.log"), "ab") as log_file:
            try:
                process = await launch.open_process(stdout=log_file, stderr=log_file)
            finally:
                listener.close()
        outcome = await launch.wait_ready_async()
        if not outcome.ready:
            with trio.move_on_after(limits.unmount_timeout_s):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await mounts.clear_dead(staging)
            if outcome.answered:
                raise error_of(outcome)
            raise GalleonError(f"the mount worker {describe_exit(process.returncode)} before it was ready")
        worker = MountWorker(volume_id, volume_dir, staging, read_only, process.pid, process)
        self.workers[volume_id] = worker
        self._nursery.start_soon(self._watch, worker)
        log.info("mount worker %d serves volume %s", process.pid, volume_id)
        return worker

    # --- adopt ---------------------------------------------------------------------------------
    async def adopt(self, volume_id: str, volume_dir: str, *, read_only: bool) -> MountWorker | None:
        """Take over a worker a previous daemon left running; None if there is none alive."""
        assert self._nursery is not None
        pid = lock_holder(volume_dir)
        staging = self.staging_dir(volume_id)
        if pid is None or not mounts.is_mounted(staging):
            return None
        try:
            reply = await online.call(self.control_address(volume_id), Ping(), timeout_s=5)
        except GalleonError:
            return None
        if reply.pid != pid:
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
            os.unlink(channel.socket_file(volume_id), dir_fd=self.control_dir_fd())
        if worker.exit_status not in ("exited with code 0", "exited (adopted worker; status unknown)"):
            raise Unavailable(f"the mount worker of volume {volume_id} {worker.exit_status} on stop")


def mark_needs_check(volume_dir: str, reason: str) -> None:
    """Record durably that the volume must be checked before its next read-write use, as
    the engine does (``Engine.mark_needs_check``: written, synced, renamed into place, the
    directory synced); a reason already recorded is kept (it is the first, the cause)."""
    path = os.path.join(volume_dir, NEEDS_CHECK_FILE)
    if os.path.exists(path):
        return
    try:
        Storage().write_file_durably(path, reason.encode() + b"\n")
    except OSError:
        log.exception("cannot mark volume %s for check", volume_dir)
