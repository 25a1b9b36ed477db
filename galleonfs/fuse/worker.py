"""The mount worker: one process, one mounted volume (pyfuse3 keeps its session global).

Entry point for ``galleonfs mount`` and, later, for ``galleond``'s supervisor::

    python -m galleonfs.fuse.worker VOLUME_DIR MOUNTPOINT [-o OPTS] [--ready-fd N] [--control-fd N]

Life of a worker: take the volume's lock and open (and recover) its engine; if the volume
is marked for check, check it first and refuse to mount if it is not clean; mount; when
the kernel's INIT arrives, tune the kernel side of the mount and report "ready" on the
ready pipe; serve until unmounted or told to stop (SIGTERM, SIGINT); then commit,
checkpoint and exit 0. A bug in a handler ends the worker with exit code 70 after marking
the volume for check; nothing unjournaled is ever checkpointed.

Housekeeping runs in the same trio loop, between FUSE requests: a commit every
``commit_interval_s``, a checkpoint every ``checkpoint_interval_s`` or
``checkpoint_journal_bytes``, and a GC step after each checkpoint. With ``--control-fd``
(a listening socket the daemon bound) the worker also answers the daemon on its control
socket (``control.py``): stats, online resize, commit, checkpoint. ``galleonfs mount``
alone needs none.

Every mount is ``nosuid,nodev``: the files of a volume (anyone's data) must never run with
someone else's privileges on the host, or stand for the host's devices.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyfuse3
import trio

from .. import limits
from ..crypto.keys import KeySpec, add_key_arguments, key_spec
from ..engine import clones, crashpoints, snapshots
from ..engine.committer import Committer
from ..engine.engine import Engine, GcReport
from ..engine.fsck import check_engine
from ..errors import (
    ExitCode,
    FailedPrecondition,
    GalleonError,
    InvalidArgument,
    NeedsCheck,
    NoSpace,
)
from ..qos.policy import WorkerRates
from ..qos.throttle import Throttle
from ..vfs.vfs import Vfs
from . import metering
from .adapter import FuseOps
from .control import ControlServer
from .kernel import tune_mount
from .tuning import Tuning

log = logging.getLogger("galleonfs.worker")

EXIT_BUG = 70                      # EX_SOFTWARE: a handler raised something unexpected

# Mount options a user may pass with -o, and whether they are kernel mount options.
_USER_OPTIONS = {"ro", "rw", "noatime", "relatime", "atime", "allow_other", "allow_root",
                 "nosuid", "nodev", "noexec", "exec"}
# Always on, whatever -o says (see the module docstring); asking for the opposite is refused.
_FORCED_OPTIONS = {"nosuid", "nodev"}
_REFUSED_OPTIONS = {"suid": "nosuid", "dev": "nodev"}


@dataclass
class WorkerConfig:
    volume_dir: str
    mountpoint: str
    options: set[str] = field(default_factory=set)
    commit_interval_s: float = limits.commit_interval_s
    checkpoint_interval_s: float = limits.checkpoint_interval_s
    control_fd: int | None = None
    keys: KeySpec = field(default_factory=KeySpec)

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    @property
    def atime(self) -> bool:
        return "noatime" not in self.options


def parse_options(text: str | None) -> set[str]:
    options = {o.strip() for o in (text or "").split(",") if o.strip()}
    for option, forced in sorted(_REFUSED_OPTIONS.items()):
        if option in options:
            raise InvalidArgument(
                f"mount option {option!r} is refused: GalleonFS mounts are always {forced}, so that "
                f"no file on a volume can gain privileges or reach devices on the host")
    unknown = options - _USER_OPTIONS
    if unknown:
        raise InvalidArgument(
            f"unknown mount option {sorted(unknown)[0]!r}; known options: "
            f"{', '.join(sorted(_USER_OPTIONS))}"
        )
    if {"ro", "rw"} <= options:
        raise InvalidArgument("mount options 'ro' and 'rw' contradict each other")
    return options


def fuse_options(config: WorkerConfig) -> set[str]:
    """The options handed to libfuse: ours, plus the user's kernel-level ones."""
    fsname = os.path.abspath(config.volume_dir).replace("\\", "\\\\").replace(",", "\\,")
    opts = {f"fsname={fsname}", "subtype=galleonfs", "default_permissions", *_FORCED_OPTIONS}
    opts |= config.options - {"rw", "atime", "relatime"}
    if "allow_other" not in opts and _may_allow_other():
        opts.add("allow_other")
    return opts


def _may_allow_other() -> bool:
    if os.getuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


class _KernelGoneFilter(logging.Filter):
    """Drop pyfuse3's "fuse_reply_* failed with No such file or directory".

    The kernel answers ENOENT to a reply for a request it no longer waits for: an
    interrupted request, or a RELEASE that an unmount overtook. Nothing is lost (the
    operation itself completed); logging it at ERROR would hide real errors among them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("fuse_reply_" in record.getMessage()
                    and "No such file or directory" in record.getMessage())


class Worker:
    def __init__(self, config: WorkerConfig, engine: Engine, tuning: Tuning | None = None) -> None:
        self.config = config
        self.engine = engine
        self.tuning = tuning or Tuning()
        self.vfs = Vfs(engine, atime=config.atime, kernel_times=self.tuning.writeback)
        self.committer = Committer(engine)
        self.initialized = trio.Event()
        self.ops = FuseOps(self.vfs, self.committer, on_init=self._on_init, tuning=self.tuning)
        self.metering = metering.Metering(engine, self.ops, self.committer) if metering.enabled() else None
        self._token: trio.lowlevel.TrioToken | None = None
        self._last_checkpoint = time.monotonic()
        self._checkpoint_deferred = 0.0      # monotonic time a full disk last deferred one
        self.throttle = Throttle(WorkerRates())   # enforced once the daemon sends rates

    def _on_init(self) -> None:
        # Called by pyfuse3 inside the trio loop, while it handles the kernel's INIT.
        self.initialized.set()

    async def serve(self, ready: ReadyPipe) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals, nursery.cancel_scope)
            nursery.start_soon(self._housekeeping)
            if self.metering is not None:
                nursery.start_soon(self.metering.run)
            if self.config.control_fd is not None:
                await nursery.start(ControlServer(self.config.control_fd, self._control_handlers()).serve)
            nursery.start_soon(self._report_ready, ready)
            await pyfuse3.main(min_tasks=1, max_tasks=limits.fuse_tasks_max)
            nursery.cancel_scope.cancel()
        await self.committer.wait_idle()

    async def _report_ready(self, ready: ReadyPipe) -> None:
        with trio.move_on_after(limits.mount_ready_timeout_s):
            await self.initialized.wait()
            tune_mount(self.config.mountpoint, self.tuning)
            ready.send("ready")
            return
        ready.send(f"error {ExitCode.UNAVAILABLE} the kernel did not initialise the mount in time")

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("received signal %d: unmounting", signum)
                pyfuse3.terminate()
                return

    async def _housekeeping(self) -> None:
        """Commit, checkpoint and GC on their intervals. While the host disk is full
        (``engine/space.py``) also, every ``space_poll_interval_s``: collect emptied segments
        at once, so that deletes give space back, and look whether space came back. A failure
        here (a full disk, a failed commit) is the volume's state, never the worker's end."""
        engine = self.engine
        last_commit = time.monotonic()
        while True:
            full = bool(engine.space.full)
            await trio.sleep(min(self.config.commit_interval_s, limits.space_poll_interval_s)
                             if full else self.config.commit_interval_s)
            if not engine.writable:
                continue
            try:
                if engine.space.full:
                    await self._while_full()
                if time.monotonic() - last_commit < self.config.commit_interval_s:
                    continue
                last_commit = time.monotonic()
                await self.committer.commit()
                due = (time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval_s
                       or engine.journal.bytes_since_checkpoint >= limits.checkpoint_journal_bytes)
                if due and self._may_checkpoint():
                    await self.checkpoint()
                    await self._gc_step()
            except GalleonError as exc:
                # Logged where it happened (failsafe, a full disk); the volume goes on serving
                # what it can: reads, and writes again once space is back.
                log.debug("housekeeping: %s", exc)

    def _may_checkpoint(self) -> bool:
        """A checkpoint the full disk deferred rebuilt the metadata from the journal: do not
        pay that again before a commit interval has passed."""
        return time.monotonic() - self._checkpoint_deferred >= self.config.commit_interval_s

    async def _while_full(self) -> None:
        """The host disk is full: give back what deletes freed (GC deletes emptied segments,
        a checkpoint unlinks them), then see whether space came back."""
        engine = self.engine
        await self._gc_step()
        if engine.has_dead_segments and self._may_checkpoint():
            await self.checkpoint()
        engine.space.poll()

    # --- control socket ------------------------------------------------------------------------
    def _control_handlers(self) -> dict[str, Any]:
        return {"ping": self._ctl_ping, "stats": self._ctl_stats, "resize": self._ctl_resize,
                "commit": self._ctl_commit, "checkpoint": self._ctl_checkpoint,
                "snapshot_create": self._ctl_snapshot_create, "snapshot_delete": self._ctl_snapshot_delete,
                "snapshot_list": self._ctl_snapshot_list, "snapshot_diff": self._ctl_snapshot_diff,
                "snapshot_release": self._ctl_snapshot_release, "clone": self._ctl_clone,
                "flatten": self._ctl_flatten, "qos": self._ctl_qos, "space": self._ctl_space}

    async def _ctl_space(self, request: dict[str, Any]) -> dict[str, Any]:
        """The volume's view of the host disk (``engine/space.py``), for the daemon's
        readiness and ``node status``: cheap (one statvfs)."""
        return self.engine.space.state()

    async def _ctl_qos(self, request: dict[str, Any]) -> dict[str, Any]:
        """Set (``rates``) or clear (``rates`` null) the rates to enforce, at once, mounted;
        answer the QoS counters, from which the daemon sees this volume's demand."""
        if "rates" in request:
            rates = WorkerRates.from_json(request["rates"]) if request["rates"] else WorkerRates()
            self.throttle.update(rates)
            self.ops.qos = None if rates.unlimited else self.throttle
        return {"rates": self.throttle.rates.to_json(), **self.throttle.counters(),
                "throttled_s": self.throttle.throttled_s}

    async def _ctl_snapshot_release(self, request: dict[str, Any]) -> dict[str, Any]:
        clones.release(self.engine, str(request["name"]), str(request["clone_id"]))
        await self.committer.commit()
        return {}

    async def _ctl_clone(self, request: dict[str, Any]) -> dict[str, Any]:
        """Make a clone of one of this volume's snapshots (its tree is read here, where the
        engine is open). Blocks this loop for the copy of the tree's metadata."""
        await self.committer.wait_idle()
        volume_id = clones.create(self.engine, str(request["snapshot"]), str(request["target_dir"]),
                                  clone_id=str(request["clone_id"]), name=str(request["name"]),
                                  size=int(request["size"]) or None)
        self.ops.snapshots_changed(str(request["snapshot"]))
        return {"volume_id": volume_id}

    async def _ctl_flatten(self, request: dict[str, Any]) -> dict[str, Any]:
        origin = clones.origin_of(self.engine)
        if origin is None:
            raise FailedPrecondition("this volume is not a clone, or it was flattened already")
        copied = 0
        for _, _, done_bytes in clones.flatten_steps(self.engine):
            copied = done_bytes
            await trio.sleep(0)              # let FUSE requests through between chunks
        await self.committer.commit()
        return {"origin_volume": origin.volume_id, "origin_snapshot": origin.snapshot,
                "copied_bytes": copied}

    async def _ctl_snapshot_create(self, request: dict[str, Any]) -> dict[str, Any]:
        """Snapshot what every returned write put in: the kernel's dirty pages first.

        ``syncfs`` runs in a thread while this loop serves the WRITEs it causes; the
        snapshot itself is then one atomic step on this thread.
        """
        snapshots.check_snapshot_name(str(request["name"]))
        await trio.to_thread.run_sync(syncfs, self.config.mountpoint)
        snap = snapshots.create(self.engine, str(request["name"]))
        await self.committer.commit()
        self.ops.snapshots_changed(snap.name)
        return {"snapshot": snapshots.info(self.engine, snap)}

    async def _ctl_snapshot_delete(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request["name"])
        freed = snapshots.delete(self.engine, name)
        await self.committer.commit()
        self.ops.snapshots_changed(name)
        return {"freed_bytes": freed}

    async def _ctl_snapshot_list(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"snapshots": [snapshots.info(self.engine, s) for s in snapshots.snapshots(self.engine)]}

    async def _ctl_snapshot_diff(self, request: dict[str, Any]) -> dict[str, Any]:
        changes = snapshots.diff(self.engine, str(request["old"]), request.get("new"))
        return {"changes": [asdict(c) for c in changes]}

    async def _ctl_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "volume_id": self.engine.volume_id,
                "mountpoint": self.config.mountpoint}

    async def _ctl_stats(self, request: dict[str, Any]) -> dict[str, Any]:
        fs = self.vfs.statfs()
        engine = self.engine
        return {
            "pid": os.getpid(), "size": engine.size, "used_bytes": engine.used_bytes,
            "inodes_used": engine.sb.inode_count, "inodes_total": fs.files,
            "generation": engine.generation, "failsafe": engine.failsafe or "",
            "read_only": engine.read_only, "counters": {**engine.counters, **self.throttle.counters()},
            "fuse_errors": {str(k): v for k, v in self.ops.errors.items()},
            "commits": self.committer.syncs,
            "rates": self.metering.rates() if self.metering is not None else {},
            "space": engine.space.state(),
        }

    async def _ctl_resize(self, request: dict[str, Any]) -> dict[str, Any]:
        size = request["size"]
        self.engine.resize(size)
        await self.committer.commit()
        return {"size": size}

    async def _ctl_commit(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.committer.commit()
        return {"durable_lsn": self.engine.durable_lsn}

    async def _ctl_checkpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.checkpoint()
        return {"applied_lsn": self.engine.sb.applied_lsn}

    async def checkpoint(self) -> None:
        await self.committer.wait_idle()
        started = time.perf_counter()
        try:
            self.engine.checkpoint()
        except NoSpace:
            self._checkpoint_deferred = time.monotonic()
            raise
        self._last_checkpoint = time.monotonic()
        if self.metering is not None:
            self.metering.checkpoint_done(time.perf_counter() - started)

    async def _gc_step(self) -> None:
        report = GcReport()
        if self.engine.writable:
            self.engine.roll_mostly_dead_segment()
        for _ in self.engine.gc_steps(report):
            if not self.engine.writable:
                break
            await trio.sleep(0)            # let FUSE requests through between segments
        if self.metering is not None:
            self.metering.gc_reclaimed(report.bytes_reclaimed)
        if report.segments_compacted or report.segments_deleted:
            log.info("gc: compacted %d and deleted %d segments, copied %d bytes",
                     report.segments_compacted, report.segments_deleted, report.bytes_copied)
        for skipped in report.skipped:
            log.warning("gc skipped %s", skipped)


def become_io_flusher() -> bool:
    """PR_SET_IO_FLUSHER (Linux 5.6, CAP_SYS_RESOURCE): tell the kernel this process writes
    back a file system's pages. It is then throttled on the dirty pages of the devices it
    writes, not on the global count that our own FUSE mount's dirty pages inflate, and its
    allocations never recurse into I/O (no deadlock under memory pressure)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_io_flusher = 57
    return int(libc.prctl(pr_set_io_flusher, 1, 0, 0, 0)) == 0


def syncfs(path: str) -> None:
    """Flush the kernel's dirty pages of the file system at ``path`` (and wait for them)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


class ReadyPipe:
    """One line to the process that started us: "ready" or "error <exit code> <message>"."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def send(self, line: str) -> None:
        if self._fd is None:
            if line != "ready":
                print(line.split(" ", 2)[-1], file=sys.stderr)
            return
        try:
            os.write(self._fd, line.encode() + b"\n")
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None


def open_engine(config: WorkerConfig) -> Engine:
    """Open the volume; a volume marked for check is checked, and mounted only if clean."""
    keys = config.keys.manager(create=False) if config.keys.configured else None   # no new random key
    try:
        return Engine.open(config.volume_dir, read_only=config.read_only, keys=keys)
    except NeedsCheck as exc:
        engine = Engine.open(config.volume_dir, read_only=True, ignore_needs_check=True, keys=keys)
        try:
            report = check_engine(engine)
        finally:
            engine.close(checkpoint=False)
        if not report.clean:
            raise NeedsCheck(volume=config.volume_dir,
                             reason=f"{exc.fields['reason']}; the automatic check found "
                                    f"{len(report.problems)} problems") from None
        log.warning("volume %s was marked for check (%s); the check found it clean",
                    config.volume_dir, exc.fields["reason"])
        engine = Engine.open(config.volume_dir, read_only=config.read_only, ignore_needs_check=True,
                             keys=keys)
        if not config.read_only:
            engine.clear_needs_check()
        return engine


def run(config: WorkerConfig, ready: ReadyPipe) -> int:
    if os.environ.get("GALLEONFS_NO_IO_FLUSHER") != "1" and not become_io_flusher():
        log.info("not an I/O flusher (needs CAP_SYS_RESOURCE): writes may be throttled harder")
    try:
        crashpoints.arm_from_environment()      # a misspelt point: an error, not a silent run
        if not os.path.isdir(config.mountpoint):
            raise InvalidArgument(f"mount point {config.mountpoint} is not a directory")
        tuning = Tuning.from_environment()
        engine = open_engine(config)
    except GalleonError as exc:
        ready.send(f"error {exc.exit_code} {exc}")
        return exc.exit_code
    worker = Worker(config, engine, tuning)
    try:
        purged = worker.vfs.purge_orphans()
    except GalleonError as exc:
        # A full disk: the orphans stay marked and the next mount deletes them.
        log.warning("volume %s: could not finish deleting files left open: %s", config.volume_dir, exc)
        purged = 0
    if purged:
        log.info("finished deleting %d files left open or half-deleted", purged)
    try:
        pyfuse3.init(worker.ops, config.mountpoint, fuse_options(config))
    except RuntimeError as exc:
        engine.close()
        ready.send(f"error {ExitCode.ERROR} cannot mount on {config.mountpoint}: {exc}")
        return ExitCode.ERROR
    try:
        trio.run(worker.serve, ready)
    except BaseException as exc:  # a bug: crash loudly, but leave the volume marked
        log.critical("mount worker crashed", exc_info=True)
        engine.mark_needs_check(f"mount worker crashed: {type(exc).__name__}: {exc}")
        ready.send(f"error {EXIT_BUG} mount worker crashed: {exc}")
        pyfuse3.close(unmount=True)
        engine.close(checkpoint=False)
        return EXIT_BUG
    pyfuse3.close(unmount=True)
    failsafe = engine.failsafe
    engine.close(checkpoint=True)
    if failsafe:
        log.error("volume %s unmounted from %s in failsafe (%s); it needs `galleonfs fsck --repair`",
                  config.volume_dir, config.mountpoint, failsafe)
    else:
        log.info("volume %s unmounted cleanly from %s", config.volume_dir, config.mountpoint)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galleonfs-worker", description="GalleonFS mount worker")
    parser.add_argument("volume_dir")
    parser.add_argument("mountpoint")
    parser.add_argument("-o", dest="options", default="")
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--control-fd", type=int, default=None,
                        help="a listening unix socket (inherited) to answer control requests on")
    add_key_arguments(parser)
    parser.add_argument("--log-level", default=os.environ.get("GALLEONFS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("pyfuse3").addFilter(_KernelGoneFilter())
    ready = ReadyPipe(args.ready_fd)
    try:
        options = parse_options(args.options)
    except GalleonError as exc:
        ready.send(f"error {exc.exit_code} {exc}")
        return exc.exit_code
    config = WorkerConfig(os.path.abspath(args.volume_dir), os.path.abspath(args.mountpoint), options,
                          keys=key_spec(args),
                          control_fd=args.control_fd)
    return run(config, ready)


if __name__ == "__main__":
    sys.exit(main())
