"""FUSE requests by opcode, and the worker's CPU per request, GalleonFS against a trivial
pyfuse3 file system in the same run (issue 11, target 4). Not in CI; as root.

    python -m benchmarks.fuse_requests [--quick] [--rounds 3] [--targets memfs,galleonfs,galleonfs-enc]

Two parts, each run on every target in turn (the order rotates from round to round), medians
over the rounds:

* **Workloads** (issue 11's metadata workloads): 10 000 x 4 KiB files in 100 directories
  (create, stat right after, delete), ``tar xf`` of the peers' seeded source tarball and
  ``rm -rf`` of it, 1 000 x (append 4 KiB + fsync). For each: the requests the kernel sent,
  by opcode, per operation, and the server's CPU per request.
* **Opcodes**: one small loop per request type, built so that (nearly) every request it
  causes is of that type (``statx`` with ``AT_STATX_FORCE_SYNC`` for GETATTR, a stat of
  names not in the dentry cache for LOOKUP, ...). The server's CPU divided by the requests
  is its CPU per request of that opcode; GalleonFS's minus the trivial file system's is
  what GalleonFS's own work adds (the issue's target: at most 20 us).

Requests are counted in the kernel, from the ``fuse:fuse_request_send`` and
``fuse:fuse_request_end`` trace points (Linux 6.16+), in a tracefs instance of our own,
filtered to the mount's connection; the send-to-end time of each request is its round trip
as the kernel sees it (the server's wake-up, work and reply). FORGET and BATCH_FORGET do not
pass those trace points: the trivial file system counts them itself (the kernel sends both
targets the same ones). CPU is the server's on-CPU time from ``/proc/<pid>/task/*/schedstat``
(nanoseconds, all threads), taken after a ``sync`` that ends each measurement.

The trivial file system is ``benchmarks/pyfuse3_memfs.py``: in memory, a dict lookup per
request, mounted with GalleonFS's options and kernel settings so that both get the same
requests. JSON goes to ``benchmarks/results/fuse-requests-<time>.json``, tables to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peer_targets import FuseProcess, Galleon, Target, TargetError, clear_stale_mounts  # noqa: E402
from benchmarks.peer_workloads import make_tarball  # noqa: E402
from benchmarks.run import machine  # noqa: E402

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("fuse_request_send", "fuse_request_end")
BUFFER_KB = 32768                  # per CPU; ~40 B per event, 2 events per request
SETTLE_S = 0.3                     # after the sync that ends a step, before the next one
ALL_TARGETS = ["memfs", "galleonfs", "galleonfs-enc"]
TAR_CACHE = Path("/var/cache/galleonfs-bench")


# --- counting requests in the kernel -------------------------------------------------------------
class Tracer:
    """The FUSE trace points of one connection, in a tracefs instance of our own (the global
    buffer and other users' instances are left alone)."""

    _line = re.compile(r"\s(\d+\.\d+): fuse_request_(send|end): connection \d+ req (\d+) "
                       r"(?:opcode \d+ \((\w+)\)|len \d+ error (-?\d+))")

    def __init__(self, mountpoint: Path) -> None:
        st = os.stat(mountpoint)
        # The trace point prints the kernel's dev_t: major << 20 | minor.
        self.connection = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
        self.dir = TRACEFS / "instances" / f"galleonfs-fuse-requests-{os.getpid()}-{self.connection}"

    @staticmethod
    def available() -> str | None:
        """None if the trace points can be used, else why not."""
        if not (TRACEFS / "instances").is_dir():
            done = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
            if done.returncode != 0:
                return f"tracefs is not mounted at {TRACEFS} and mounting it failed: {done.stderr.strip()}"
        if not (TRACEFS / "events" / "fuse" / "fuse_request_send").is_dir():
            return "this kernel has no fuse:fuse_request_send trace point (Linux 6.16 or later has it)"
        return None

    def __enter__(self) -> Tracer:
        self.dir.mkdir()
        (self.dir / "buffer_size_kb").write_text(str(BUFFER_KB))
        for event in EVENTS:
            (self.dir / "events" / "fuse" / event / "filter").write_text(f"connection == {self.connection}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._enable(False)
        self.dir.rmdir()

    def _enable(self, on: bool) -> None:
        for event in EVENTS:
            (self.dir / "events" / "fuse" / event / "enable").write_text("1" if on else "0")

    def start(self) -> None:
        (self.dir / "trace").write_text("")        # empty the buffer
        self._enable(True)

    def stop(self) -> Requests:
        self._enable(False)
        lost = sum(int(m) for cpu in (self.dir / "per_cpu").iterdir()
                   for m in re.findall(r"overrun: (\d+)", (cpu / "stats").read_text()))
        if lost:
            raise SystemExit(f"the trace buffer overran ({lost} events lost): raise BUFFER_KB")
        sent: dict[str, tuple[str, float]] = {}
        result = Requests()
        for m in self._line.finditer((self.dir / "trace").read_text()):
            stamp, kind, unique, opcode, error = m.groups()
            if kind == "send":
                name = opcode.removeprefix("FUSE_")
                sent[unique] = (name, float(stamp))
                result.counts[name] += 1
            elif unique in sent:
                name, t0 = sent.pop(unique)
                result.round_trip_us.setdefault(name, []).append((float(stamp) - t0) * 1e6)
                if error != "0":
                    result.errors[f"{name} {error}"] += 1
        return result


@dataclass
class Requests:
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    round_trip_us: dict[str, list[float]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# --- targets -------------------------------------------------------------------------------------
def cpu_ns(pids: list[int]) -> int:
    """On-CPU nanoseconds of every thread of ``pids`` (``schedstat``: finer than clock ticks)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total


class MemFs(FuseProcess):
    """The trivial in-memory pyfuse3 file system (``benchmarks/pyfuse3_memfs.py``)."""

    key = "memfs"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.label = "trivial pyfuse3"
        self.counts_file = base / "counts.json"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.pyfuse3_memfs", str(self.root),
                "--counts-file", str(self.counts_file)]

    def counts(self) -> Counter[str]:
        """The requests it has handled, by name (SIGUSR1 makes it write them)."""
        assert self.proc is not None
        self.counts_file.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.counts_file.exists():
            if time.monotonic() > deadline:
                raise TargetError("the trivial file system did not write its counts")
            time.sleep(0.01)
        return Counter(json.loads(self.counts_file.read_text()))


def make_target(key: str, scratch: Path, volume_size: int) -> Target:
    base = scratch / key
    if key == "memfs":
        return MemFs(base)
    if key in ("galleonfs", "galleonfs-enc"):
        return Galleon(base, encrypt=key == "galleonfs-enc", size=volume_size)
    raise SystemExit(f"unknown target {key!r}; known: {', '.join(ALL_TARGETS)}")


# --- one measurement -----------------------------------------------------------------------------
@dataclass
class Phase:
    target: str
    name: str
    ops: int
    seconds: float
    cpu_s: float
    requests: Requests
    forgets: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "name": self.name, "ops": self.ops, "seconds": self.seconds,
                "cpu_s": self.cpu_s, "requests": dict(self.requests.counts), "errors": dict(self.requests.errors),
                "round_trip_us_median": {op: statistics.median(v) for op, v in self.requests.round_trip_us.items()},
                "forgets": self.forgets}


def settle() -> None:
    os.sync()
    time.sleep(SETTLE_S)


def measure(target: Target, tracer: Tracer, name: str, ops: int, fn: Callable[[], object]) -> Phase:
    """Run ``fn`` with the trace on; CPU up to the end of a ``sync`` after it."""
    memfs = target if isinstance(target, MemFs) else None
    forgets0 = memfs.counts()["forget"] if memfs else 0
    tracer.start()
    cpu0 = cpu_ns(target.pids())
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    os.sync()
    cpu1 = cpu_ns(target.pids())
    requests = tracer.stop()
    forgets = memfs.counts()["forget"] - forgets0 if memfs else None
    return Phase(target.key, name, ops, seconds, (cpu1 - cpu0) / 1e9, requests, forgets)


# --- the workloads -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    files: int
    dirs: int
    tar_files: int
    tar_bytes: int
    appends: int
    loop: int                      # iterations of each opcode loop


FULL = Sizes(files=10_000, dirs=100, tar_files=4_300, tar_bytes=97_000_000, appends=1_000, loop=5_000)
QUICK = Sizes(files=1_000, dirs=10, tar_files=430, tar_bytes=9_700_000, appends=200, loop=500)


def workloads(target: Target, tracer: Tracer, sizes: Sizes, tarball: Path) -> Iterator[Phase]:
    """Issue 11's metadata workloads, as ``peer_workloads`` runs them."""
    root = target.root
    base = root / "small"
    pool = memoryview(os.urandom(4096 + 16 * sizes.files))
    paths = [base / f"d{i % sizes.dirs}" / f"f{i}" for i in range(sizes.files)]

    def create() -> None:
        base.mkdir()
        for i in range(sizes.dirs):
            (base / f"d{i}").mkdir()
        for i, path in enumerate(paths):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, pool[16 * i:16 * i + 4096])
            os.close(fd)

    def stat() -> None:
        for path in paths:
            if os.stat(path).st_size != 4096:
                raise SystemExit(f"{target.label}: {path} is not 4096 bytes long")

    def delete() -> None:
        for path in paths:
            os.unlink(path)
        for i in range(sizes.dirs):
            (base / f"d{i}").rmdir()
        base.rmdir()

    for name, fn in (("create", create), ("stat warm", stat), ("delete", delete)):
        yield measure(target, tracer, name, sizes.files, fn)
        settle()
    tree = root / "tree"
    tree.mkdir()
    yield measure(target, tracer, "tar x", sizes.tar_files,
                  lambda: subprocess.run(["tar", "xf", str(tarball), "-C", str(tree)], check=True))
    settle()
    yield measure(target, tracer, "rm -rf", sizes.tar_files, lambda: shutil.rmtree(tree))
    settle()
    log = root / "log.bin"
    appends = os.urandom(4096 * sizes.appends)

    def append() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for i in range(sizes.appends):
                os.write(fd, appends[4096 * i:4096 * (i + 1)])
                os.fsync(fd)
        finally:
            os.close(fd)
    yield measure(target, tracer, "append+fsync", sizes.appends, append)
    log.unlink()
    settle()


# --- one loop per opcode -------------------------------------------------------------------------
AT_FDCWD = -100
AT_STATX_FORCE_SYNC = 0x2000
STATX_BASIC_STATS = 0x7FF
_libc = ctypes.CDLL(None, use_errno=True)


def statx_force_sync(path: Path) -> None:
    """``statx(AT_STATX_FORCE_SYNC)``: the kernel asks the server (GETATTR) every time."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statx(AT_FDCWD, os.fsencode(path), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def drop_dentries() -> None:
    """Evict unused dentries and inodes (the kernel FORGETs them): their next use is a LOOKUP."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2")
    time.sleep(1.0)           # the FORGETs reach the server in the background


@dataclass
class Loop:
    """``run`` does ``n`` operations whose requests are mostly ``opcode``."""

    name: str
    opcode: str
    run: Callable[[Path, int], object]
    setup: Callable[[Path, int], object]
    teardown: Callable[[Path, int], object] = lambda d, n: shutil.rmtree(d)


def _files(d: Path, n: int, size: int = 0) -> None:
    d.mkdir()
    for i in range(n):
        with open(d / f"f{i}", "wb") as f:
            f.write(os.urandom(size))


def _one_file(d: Path, n: int) -> None:
    _files(d, 1, 1 << 20)


def _direct_io(d: Path, n: int, write: bool) -> None:
    fd = os.open(d / "f0", (os.O_RDWR if write else os.O_RDONLY) | os.O_DIRECT)
    buf = ctypes.create_string_buffer(8192)         # O_DIRECT wants an aligned buffer
    view = memoryview(buf).cast("B")[(-ctypes.addressof(buf)) % 4096:][:4096]
    try:
        for i in range(n):
            offset = (i * 7 % 256) * 4096
            if write:
                view[:8] = i.to_bytes(8, "little")
                os.pwritev(fd, [view], offset)
            else:
                os.preadv(fd, [view], offset)
    finally:
        os.close(fd)


def _unlink_all(d: Path, n: int) -> None:
    for i in range(n):
        os.unlink(d / f"f{i}")


def _create_all(d: Path, n: int) -> None:
    for i in range(n):
        os.close(os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _statx_loop(d: Path, n: int) -> None:
    for _ in range(n):
        statx_force_sync(d / "f0")


def _stat_loop(d: Path, n: int) -> None:
    for i in range(n):
        os.stat(d / f"f{i}")


def _missing_loop(d: Path, n: int) -> None:
    for i in range(n):
        os.path.exists(d / f"none{i}")


def _getxattr_loop(d: Path, n: int) -> None:
    for _ in range(n):
        with contextlib.suppress(OSError):
            os.getxattr(d / "f0", "user.none")


def _utime_loop(d: Path, n: int) -> None:
    for i in range(n):
        os.utime(d / "f0", ns=(i, i))


def _open_loop(d: Path, n: int) -> None:
    for _ in range(n):
        os.close(os.open(d / "f0", os.O_RDONLY))


def _mkdir_loop(d: Path, n: int) -> None:
    for i in range(n):
        (d / f"d{i}").mkdir()


def _rmdir_loop(d: Path, n: int) -> None:
    for i in range(n):
        (d / f"d{i}").rmdir()


def _listdir_loop(d: Path, n: int) -> None:
    for _ in range(max(1, n // 100)):
        os.listdir(d)


def _statfs_loop(d: Path, n: int) -> None:
    for _ in range(n):
        os.statvfs(d)


def _fsync_loop(d: Path, n: int) -> None:
    fd = os.open(d / "f0", os.O_RDONLY)
    try:
        for _ in range(n):
            os.fsync(fd)
    finally:
        os.close(fd)


def _read_loop(d: Path, n: int) -> None:
    _direct_io(d, n, write=False)


def _write_loop(d: Path, n: int) -> None:
    _direct_io(d, n, write=True)


def _mkdir(d: Path, n: int) -> None:
    d.mkdir()


def _uncached_files(d: Path, n: int) -> None:
    _files(d, n)
    drop_dentries()


def _dirs(d: Path, n: int) -> None:
    d.mkdir()
    _mkdir_loop(d, n)


def _thousand_files(d: Path, n: int) -> None:
    _files(d, 1000)


LOOPS = [
    Loop("getattr (statx, forced)", "GETATTR", _statx_loop, _one_file),
    Loop("lookup, name not cached", "LOOKUP", _stat_loop, _uncached_files),
    Loop("lookup, no such name", "LOOKUP", _missing_loop, _mkdir),
    Loop("getxattr, no such attribute", "GETXATTR", _getxattr_loop, _one_file),
    Loop("setattr (utimes)", "SETATTR", _utime_loop, _one_file),
    Loop("open + release (read-only)", "OPEN", _open_loop, _one_file),
    Loop("create (empty file, close)", "CREATE", _create_all, _mkdir),
    Loop("unlink", "UNLINK", _unlink_all, _files),
    Loop("mkdir", "MKDIR", _mkdir_loop, _mkdir),
    Loop("rmdir", "RMDIR", _rmdir_loop, _dirs),
    Loop("readdirplus (1 000 entries)", "READDIRPLUS", _listdir_loop, _thousand_files),
    Loop("statfs", "STATFS", _statfs_loop, _mkdir),
    Loop("read 4 KiB (O_DIRECT, cached block)", "READ", _read_loop, _one_file),
    Loop("write 4 KiB (O_DIRECT)", "WRITE", _write_loop, _one_file),
    Loop("fsync, nothing dirty", "FSYNC", _fsync_loop, _one_file),
]


def opcode_loops(target: Target, tracer: Tracer, sizes: Sizes, only: set[str] | None) -> Iterator[Phase]:
    for loop in LOOPS:
        if only and loop.opcode not in only:
            continue
        d = target.root / "loop"
        loop.setup(d, sizes.loop)
        settle()
        yield measure(target, tracer, loop.name, sizes.loop, functools.partial(loop.run, d, sizes.loop))
        loop.teardown(d, sizes.loop)
        settle()


# --- the report ----------------------------------------------------------------------------------
def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def by(phases: list[Phase], target: str, name: str) -> list[Phase]:
    return [p for p in phases if p.target == target and p.name == name]


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}".replace(",", " ")


def composition(phases: list[Phase], ops: int) -> str:
    """Requests per operation by opcode (the first round's: the kernel sends the same each time)."""
    counts = phases[0].requests.counts
    forgets = phases[0].forgets
    parts = [f"{name} {n / ops:.2f}" for name, n in counts.most_common() if n / ops >= 0.005]
    if forgets:
        parts.append(f"(FORGET msgs {forgets / ops:.2f})")
    return ", ".join(parts)


def report(phases: list[Phase], targets: list[str], names: list[str], loops: list[str]) -> str:
    out: list[str] = []
    ref = "memfs" if "memfs" in targets else targets[0]
    out.append("### Requests per operation (kernel trace), and what they cost\n")
    out.append("| workload | requests per op, by opcode | " +
               " | ".join(f"{t} ops/s | {t} CPU µs/req" for t in targets) + " |")
    out.append("|---|---|" + "---:|---:|" * len(targets))
    for name in names:
        first = by(phases, ref, name)
        if not first:
            continue
        row = [name, composition(first, first[0].ops)]
        for t in targets:
            ps = by(phases, t, name)
            row.append(fmt(med([p.ops / p.seconds for p in ps]), 0))
            row.append(fmt(med([p.cpu_s * 1e6 / max(1, p.requests.total) for p in ps])))
        out.append("| " + " | ".join(row) + " |")
    same = [(name, t) for name in names for t in targets
            if by(phases, t, name) and by(phases, ref, name)
            and by(phases, t, name)[0].requests.total != by(phases, ref, name)[0].requests.total]
    if same:
        out.append("\nRequest totals that differ from the trivial file system's: " + ", ".join(
            f"{t} {n}: {by(phases, t, n)[0].requests.total} vs {by(phases, ref, n)[0].requests.total}"
            for n, t in same))
    out.append("\n### Server CPU per request, by opcode (one loop per opcode)\n")
    out.append("| loop | requests per op | " + " | ".join(
        f"{t} µs/req" + (f" | {t} added" if t != ref else "") for t in targets) + " | round trip µs (" + ref + ", " +
        targets[-1] + ") |")
    out.append("|---|---|" + "---:|" * (2 * len(targets) - 1) + "---:|")
    for name in loops:
        first = by(phases, ref, name)
        if not first:
            continue
        row = [name, composition(first, first[0].ops)]
        base = med([p.cpu_s * 1e6 / max(1, p.requests.total) for p in first])
        for t in targets:
            value = med([p.cpu_s * 1e6 / max(1, p.requests.total) for p in by(phases, t, name)])
            row.append(fmt(value))
            if t != ref:
                row.append(fmt(value - base))
        loop = next(lp for lp in LOOPS if lp.name == name)
        trips = [med([med(p.requests.round_trip_us.get(loop.opcode, [])) for p in by(phases, t, name)])
                 for t in (ref, targets[-1])]
        row.append(f"{fmt(trips[0], 0)}, {fmt(trips[1], 0)}")
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------------
def code_version() -> str:
    """The commit of the ``galleonfs`` package this run imports (and whether it is changed):
    two runs compared A/B must say which code each measured."""
    import galleonfs

    where = Path(galleonfs.__file__).parent
    done = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty"], capture_output=True,
                          text=True)
    return f"{where.parent} {done.stdout.strip() or '?'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (1 000 files, 430-file tarball, "
                        "500 per opcode loop)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default=",".join(ALL_TARGETS))
    parser.add_argument("--only", default="", help="opcode loops to run, e.g. GETATTR,LOOKUP (default all)")
    parser.add_argument("--no-workloads", action="store_true", help="run only the opcode loops")
    parser.add_argument("--loop", type=int, default=0, help="iterations of each opcode loop (default: 5 000, "
                        "500 with --quick)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/galleonfs-fuse-requests"))
    parser.add_argument("--volume-size", type=int, default=8 << 30)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the trace points, drop_caches and FUSE's allow_other need it")
    why = Tracer.available()
    if why:
        raise SystemExit(f"cannot count FUSE requests: {why}")
    sizes = QUICK if args.quick else FULL
    if args.loop:
        sizes = dataclasses.replace(sizes, loop=args.loop)
    version = code_version()
    keys = [k.strip() for k in args.targets.split(",") if k.strip()]
    only = {o.strip().upper() for o in args.only.split(",") if o.strip()} or None
    TAR_CACHE.mkdir(parents=True, exist_ok=True)
    tarball = TAR_CACHE / f"tree-{sizes.tar_files}-{sizes.tar_bytes}.tar"
    if not tarball.exists():
        make_tarball(tarball, sizes.tar_files, sizes.tar_bytes)
    clear_stale_mounts(args.dir)
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    targets = [make_target(k, args.dir, args.volume_size) for k in keys]
    phases: list[Phase] = []
    loads: list[float] = []
    started = time.time()
    try:
        for t in targets:
            t.start()
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for t in order:
                loads.append(os.getloadavg()[0])
                with Tracer(t.root) as tracer:
                    if not args.no_workloads:
                        for phase in workloads(t, tracer, sizes, tarball):
                            phases.append(phase)
                            print(f"round {r + 1} {t.key:14s} {phase.name:36s} {phase.requests.total:7d} req "
                                  f"{phase.cpu_s:6.2f} s CPU {phase.seconds:6.2f} s", file=sys.stderr)
                    for phase in opcode_loops(t, tracer, sizes, only):
                        phases.append(phase)
                        print(f"round {r + 1} {t.key:14s} {phase.name:36s} {phase.requests.total:7d} req "
                              f"{phase.cpu_s:6.2f} s CPU", file=sys.stderr)
    finally:
        for t in targets:
            with contextlib.suppress(TargetError):
                t.stop()
    names = [] if args.no_workloads else ["create", "stat warm", "delete", "tar x", "rm -rf", "append+fsync"]
    loops = [lp.name for lp in LOOPS if not only or lp.opcode in only]
    text = report(phases, keys, names, loops)
    print(f"\n{version}: {args.rounds} rounds, {'quick' if args.quick else 'full'} sizes, load average "
          f"{min(loads):.2f}-{max(loads):.2f}, {time.time() - started:.0f} s\n")
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"fuse-requests-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(), "code": version, "sizes": sizes.__dict__, "targets": keys, "loads": loads,
                               "phases": [p.as_json() for p in phases]}, indent=1))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
