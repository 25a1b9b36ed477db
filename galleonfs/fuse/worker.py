"""The mount worker: one process, one mounted volume (pyfuse3 keeps its session global).

Started by ``galleonfs mount``, by galleond's supervisor and by the test harness, all
through ``workers/launch.py``::

    python -m galleonfs.fuse.worker VOLUME_DIR MOUNTPOINT [-o OPTS] [--ready-fd N] [--control-fd N]

Life of a worker: take the volume's lock and open (and recover) its engine; if the volume
is marked for check, check it first and refuse to mount if it is not clean; mount; when
the kernel's INIT arrives, tune the kernel side of the mount and report "ready" on the
ready pipe (``ready.py``); serve until unmounted or told to stop (SIGTERM, SIGINT); then commit,
checkpoint and exit 0. A bug in a handler ends the worker with exit code 70 after marking
the volume for check; nothing unjournaled is ever checkpointed.

Housekeeping runs in the same trio loop, between FUSE requests: a commit every
``commit_interval_s``, a checkpoint every ``checkpoint_interval_s`` or
``checkpoint_journal_bytes``, and the paced reclaimer (``engine/reclaim.py``), which gives
deleted data's space back in small steps and checkpoints to unlink what it emptied. With
``--control-fd`` (a listening socket the daemon bound) the worker also answers the daemon's
volume operations on its control socket (``control.py``): the same
``volops.local.EngineOps`` the offline helper runs, with ``MountHost`` for what a mounted
volume adds. ``galleonfs mount``
alone needs none.

Every mount is ``nosuid,nodev``: the files of a volume (anyone's data) must never run with
someone else's privileges on the host, or stand for the host's devices.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import pyfuse3
import trio

from .. import limits
from ..crypto.keys import KeySpec, add_key_arguments, key_spec
from ..engine import crashpoints
from ..engine.committer import Committer
from ..engine.engine import Engine, GcReport
from ..engine.fsck import check_engine
from ..engine.reclaim import Pacer, ReclaimReport
from ..errors import (
    ExitCode,
    GalleonError,
    InvalidArgument,
    NeedsCheck,
    NoSpace,
)
from ..metrics import add_qos_throttled
from ..qos.policy import WorkerRates
from ..qos.throttle import Throttle
from ..vfs.vfs import Vfs
from ..volops import messages
from ..volops.local import EngineOps, Host
from . import metering
from .adapter import FuseOps
from .control import ControlServer
from .kernel import tune_mount
from .ready import READY, ReadyPipe
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
        self.throttle = Throttle(WorkerRates(), on_wait=add_qos_throttled)   # rates come from the daemon
        # The paced reclaimer (``_reclaim``); GALLEONFS_RECLAIM=0 (benchmarks' A/B only) falls
        # back to a GC pass after each checkpoint.
        self.reclaim = os.environ.get("GALLEONFS_RECLAIM", "1") != "0"

    def _on_init(self) -> None:
        # Called by pyfuse3 inside the trio loop, while it handles the kernel's INIT.
        self.initialized.set()

    async def serve(self, ready: ReadyPipe) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals, nursery.cancel_scope)
            nursery.start_soon(self._housekeeping)
            if self.reclaim:
                nursery.start_soon(self._reclaim)
            if self.metering is not None:
                nursery.start_soon(self.metering.run)
            if self.config.control_fd is not None:
                ops = EngineOps(self.engine, MountHost(self))
                await nursery.start(ControlServer(self.config.control_fd, ops).serve)
            nursery.start_soon(self._report_ready, ready)
            await pyfuse3.main(min_tasks=1, max_tasks=limits.fuse_tasks_max)
            nursery.cancel_scope.cancel()
        await self.committer.wait_idle()

    async def _report_ready(self, ready: ReadyPipe) -> None:
        with trio.move_on_after(limits.mount_ready_timeout_s):
            await self.initialized.wait()
            tune_mount(self.config.mountpoint, self.tuning)
            ready.send(READY)
            return
        ready.error(ExitCode.UNAVAILABLE, "the kernel did not initialise the mount in time")

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
                    if not self.reclaim:
                        await self._gc_step()
            except GalleonError as exc:
                # Logged where it happened (failsafe, a full disk); the volume goes on serving
                # what it can: reads, and writes again once space is back.
                log.debug("housekeeping: %s", exc)

    async def _reclaim(self) -> None:
        """Give deleted data's space back (``engine/reclaim.py``): while dead bytes exceed the
        rule, one step, then FUSE requests for at least nine times as long if they keep
        coming (``Pacer``: a share of the loop and a copy rate), at once if not; a checkpoint
        deletes the emptied segments, at most every ``reclaim_checkpoint_interval_s`` (every
        commit interval while busy: a checkpoint is one full sync). Code between two awaits
        is atomic, so a step never interleaves with a request."""
        engine, reclaimer, pacer = self.engine, self.engine.reclaimer, Pacer()
        report, started = ReclaimReport(), 0.0
        seen = self._activity()
        while True:
            now = time.monotonic()
            if self._activity() != seen:
                pacer.saw_foreground(now)
            work = engine.writable and (reclaimer.in_progress or reclaimer.needed())
            try:
                if work:
                    started = started or now
                    t0, copied = time.perf_counter(), report.bytes_copied
                    work = reclaimer.step(report, pacer.step_bytes(now))
                    spent, copied = time.perf_counter() - t0, report.bytes_copied - copied
                if engine.has_dead_segments and not engine.space.full:
                    await self._reclaim_checkpoint(pacer.busy(now))
            except GalleonError as exc:
                log.debug("reclaim: %s", exc)           # logged where it happened
                work = False
            if not work:
                if started:
                    self._reclaim_done(report, pacer, time.monotonic() - started)
                    report, started = ReclaimReport(), 0.0
                seen = self._activity()
                await trio.sleep(limits.reclaim_poll_interval_s)
                continue
            seen = self._activity()
            wait = pacer.wait_after(spent, copied, time.monotonic())
            t0 = time.perf_counter()
            await trio.sleep(wait)
            if time.perf_counter() - t0 - wait > limits.reclaim_busy_lag_s:
                pacer.saw_foreground(time.monotonic())  # requests ran while we yielded

    def _activity(self) -> tuple[int, int, int]:
        """What foreground requests move: the journal's end, blocks read (and from cache).
        Compared across a yield, without a step of ours in between."""
        c = self.engine.counters
        return (self.engine.appended_lsn, c["blocks_read"], c["cache_hits"])

    async def _reclaim_checkpoint(self, busy: bool) -> None:
        # A checkpoint is a full sync that the requests behind it wait for (~0.1 s measured
        # under load): while busy, at most one a commit interval.
        interval = self.config.commit_interval_s if busy else limits.reclaim_checkpoint_interval_s
        if time.monotonic() - self._last_checkpoint >= interval and self._may_checkpoint():
            await self.checkpoint()

    def _reclaim_done(self, report: ReclaimReport, pacer: Pacer, elapsed_s: float) -> None:
        if self.metering is not None:
            self.metering.gc_reclaimed(report.bytes_freed)
        if report.segments_emptied:
            log.info("reclaim: emptied %d segments (%d MiB), copied %d MiB of live data in %d "
                     "steps, %.2f s of %.1f s", report.segments_emptied, report.bytes_freed >> 20,
                     report.bytes_copied >> 20, report.steps, pacer.spent_s, elapsed_s)
        for skipped in report.skipped or []:
            log.warning("reclaim skipped %s", skipped)
        pacer.spent_s, pacer.steps = 0.0, 0

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


class MountHost(Host):
    """What a mounted volume adds to a volume operation (``volops/local.py``): the kernel's
    dirty pages are flushed before a snapshot, commits go through the group committer,
    FUSE requests are served between the chunks of long work, QoS rates are enforced."""

    mounted = True

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.engine)
        self.worker = worker
        self.pid = os.getpid()
        self.mountpoint = worker.config.mountpoint

    async def flush_kernel(self) -> None:
        # In a thread: this loop serves the WRITEs that syncfs causes meanwhile.
        await trio.to_thread.run_sync(syncfs, self.mountpoint)

    async def commit(self) -> None:
        await self.worker.committer.commit()

    async def quiesce(self) -> None:
        await self.worker.committer.wait_idle()

    async def checkpoint(self) -> None:
        await self.worker.checkpoint()

    async def pause(self) -> None:
        await trio.sleep(0)

    def snapshots_changed(self, name: str) -> None:
        self.worker.ops.snapshots_changed(name)

    def counters(self) -> dict[str, int]:
        return self.worker.throttle.counters()

    def fuse_errors(self) -> dict[str, int]:
        return {str(errno): count for errno, count in self.worker.ops.errors.items()}

    def commits(self) -> int:
        return self.worker.committer.syncs

    def rates(self) -> dict[str, float]:
        metering = self.worker.metering
        return {k: float(v) for k, v in metering.rates().items()} if metering is not None else {}

    def primary_term(self, epoch: int, deadline: float) -> messages.Fencing:
        """Cluster mode: acknowledge changes until ``deadline`` (``vfs/fence.py``)."""
        fence = self.worker.vfs.fence
        fence.extend(epoch, deadline)
        return messages.Fencing(fence.epoch, fence.deadline or 0.0, fence.reason)

    def set_qos(self, rates: WorkerRates) -> messages.QosState:
        """Enforce ``rates`` at once; answer the counters the daemon reads demand from."""
        throttle = self.worker.throttle
        throttle.update(rates)
        self.worker.ops.qos = None if rates.unlimited else throttle
        return messages.QosState(throttle.rates, throttle.requests, throttle.bytes, throttle.throttled_s)


def become_io_flusher() -> bool:
    """PR_SET_IO_FLUSHER (Linux 5.6, CAP_SYS_RESOURCE): tell the kernel this process writes
    back a file system's pages. It is then throttled on the dirty pages of the devices it
    writes, not on the global count that our own FUSE mount's dirty pages inflate, and its
    allocations never recurse into I/O (no deadlock under memory pressure)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_io_flusher = 57
    return int(libc.prctl(pr_set_io_flusher, 1, 0, 0, 0)) == 0


def syncfs(path: str) -> None:
    """Flush the kernel's dirty pages of the file system at ``path`` (and wait for them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


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
        ready.error(exc.exit_code, str(exc))
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
        ready.error(ExitCode.ERROR, f"cannot mount on {config.mountpoint}: {exc}")
        return ExitCode.ERROR
    try:
        trio.run(worker.serve, ready)
    except BaseException as exc:  # a bug: crash loudly, but leave the volume marked
        log.critical("mount worker crashed", exc_info=True)
        engine.mark_needs_check(f"mount worker crashed: {type(exc).__name__}: {exc}")
        ready.error(EXIT_BUG, f"mount worker crashed: {exc}")
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
        ready.error(exc.exit_code, str(exc))
        return exc.exit_code
    config = WorkerConfig(os.path.abspath(args.volume_dir), os.path.abspath(args.mountpoint), options,
                          keys=key_spec(args),
                          control_fd=args.control_fd)
    return run(config, ready)


if __name__ == "__main__":
    sys.exit(main())
