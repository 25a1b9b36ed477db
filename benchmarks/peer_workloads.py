"""The workloads of issue 11, run the same way on every target of ``benchmarks/peers.py``.

Each workload takes a target and returns its samples: the speed a user sees (timed without
the final ``sync``) and the CPU seconds the target's FUSE server spent on it (counted up to
the end of a ``sync`` after the timed part, so work a server defers past the timed window,
such as writing back the kernel's dirty pages, is still charged to the workload that caused
it). Every workload leaves its directory as it found it (empty), so that a run writes and
deletes the same amount on every target and the next run starts alike.

Data is never repeated where GalleonFS would deduplicate it and a plain directory could not
(fresh random bytes per file, per append and per run); the tarball is the same bytes every
time, as a real one extracted twice would be. This module must not look inside a target:
it only uses the directory (POSIX calls, ``fio``, ``tar``) and the server's pid.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.peer_targets import Target
from benchmarks.run import drop_caches

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Sizes:
    seq_bytes: int
    fio_bytes: int
    fio_runtime_s: int
    files: int
    dirs: int
    tar_files: int
    tar_bytes: int
    appends: int
    settle_s: float                       # idle time before each measurement (see Bench.settle)
    space_offsets_s: tuple[float, ...]    # when to measure host space after a delete


FULL = Sizes(seq_bytes=GiB, fio_bytes=GiB, fio_runtime_s=20, files=10_000, dirs=100, tar_files=4_300,
             tar_bytes=97_000_000, appends=1_000, settle_s=2.0, space_offsets_s=(0.0, 10.0, 30.0))
QUICK = Sizes(seq_bytes=64 * MiB, fio_bytes=64 * MiB, fio_runtime_s=3, files=1_000, dirs=100, tar_files=430,
              tar_bytes=9_700_000, appends=200, settle_s=0.3, space_offsets_s=(0.0, 2.0, 5.0))


@dataclass
class Sample:
    metric: str
    value: float
    cpu_s: float | None          # the FUSE server's CPU for this sample (None: no server)
    ops: int                     # operations done, for CPU per operation
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    """What every workload needs besides its target."""

    sizes: Sizes
    tarball: Path
    run: int

    def settle(self) -> None:
        """Write back what the last step left dirty, empty the page cache, let the disk go
        idle: no target pays for another's writeback (benchmarks/crypto.py saw 2-3x worker
        CPU on whichever variant came last without this)."""
        os.sync()
        if not drop_caches():
            raise SystemExit("cannot drop the page cache: run as root")
        time.sleep(self.sizes.settle_s)


def measure(target: Target, fn: Callable[[], object]) -> tuple[float, float | None]:
    """(seconds of ``fn``, server CPU seconds of ``fn`` plus the ``sync`` after it)."""
    cpu = target.cpu_s()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    os.sync()
    after = target.cpu_s()
    return seconds, (None if cpu is None or after is None else after - cpu)


# --- sequential ----------------------------------------------------------------------------------
def seq_write(target: Target, bench: Bench) -> list[Sample]:
    """1 GiB in 1 MiB writes, then fsync: MB/s."""
    block = os.urandom(MiB)
    count = bench.sizes.seq_bytes // MiB
    path = target.root / "seq.bin"

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i in range(count):
                os.write(fd, block[i % 4096:] + block[: i % 4096])   # no two MiB alike
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds, cpu = measure(target, run)
    return [Sample("seq_write", count / seconds, cpu, count, seconds)]


def seq_read_cold(target: Target, bench: Bench) -> list[Sample]:
    """Read it back in 1 MiB reads with the page cache dropped: MB/s. Then delete it."""
    path = target.root / "seq.bin"
    got = [0]

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while chunk := os.read(fd, MiB):
                got[0] += len(chunk)
        finally:
            os.close(fd)
    drop_caches()
    seconds, cpu = measure(target, run)
    if got[0] != bench.sizes.seq_bytes:
        raise SystemExit(f"{target.label}: read {got[0]} bytes of seq.bin, wrote {bench.sizes.seq_bytes}")
    path.unlink()
    count = bench.sizes.seq_bytes // MiB
    return [Sample("seq_read_cold", count / seconds, cpu, count, seconds)]


# --- fio -----------------------------------------------------------------------------------------
def fio(path: Path, bench: Bench, rw: str) -> dict[str, Any]:
    """fio 4 KiB ``rw``, psync, iodepth 1, buffered, time based; its JSON job result."""
    args = ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", "--bs=4k",
            f"--size={bench.sizes.fio_bytes}", "--ioengine=psync", "--iodepth=1", "--direct=0",
            f"--runtime={bench.sizes.fio_runtime_s}", "--time_based", "--refill_buffers",
            # The same offsets on every target within a run, other offsets in the next run.
            f"--randseed={1000 + bench.run}", "--output-format=json"]
    if "write" in rw:
        args.append("--end_fsync=1")      # fio's runtime (and so its IOPS) includes this fsync
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fio {rw} on {path} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    job: dict[str, Any] = json.loads(done.stdout)["jobs"][0]
    return job


def rand_write(target: Target, bench: Bench) -> list[Sample]:
    """Lay out a 1 GiB file (untimed), then 4 KiB random writes for 20 s with end_fsync: IOPS."""
    path = target.root / "fio.bin"
    prep = subprocess.run(["fio", "--name=prep", f"--filename={path}", "--rw=write", "--bs=1M",
                           f"--size={bench.sizes.fio_bytes}", "--refill_buffers", "--end_fsync=1"],
                          capture_output=True, text=True)
    if prep.returncode != 0:
        raise SystemExit(f"fio layout of {path} failed: {prep.stderr.strip()[-1000:]}")
    bench.settle()
    result: dict[str, Any] = {}
    seconds, cpu = measure(target, lambda: result.update(fio(path, bench, "randwrite")))
    io = result["write"]
    return [Sample("rand_write", float(io["iops"]), cpu, int(io["total_ios"]), seconds,
                   {"fio_runtime_ms": io["runtime"], "clat_p99_us": clat_p99_us(io)})]


def rand_read_cold(target: Target, bench: Bench) -> list[Sample]:
    """4 KiB random reads for 20 s on that file, page cache dropped first: IOPS. Then delete it."""
    path = target.root / "fio.bin"
    if path.stat().st_size != bench.sizes.fio_bytes:
        raise SystemExit(f"{target.label}: fio.bin has {path.stat().st_size} bytes, not {bench.sizes.fio_bytes}")
    drop_caches()
    result: dict[str, Any] = {}
    seconds, cpu = measure(target, lambda: result.update(fio(path, bench, "randread")))
    path.unlink()
    io = result["read"]
    return [Sample("rand_read_cold", float(io["iops"]), cpu, int(io["total_ios"]), seconds,
                   {"fio_runtime_ms": io["runtime"], "clat_p99_us": clat_p99_us(io)})]


def clat_p99_us(io: dict[str, Any]) -> float | None:
    percentiles = io.get("clat_ns", {}).get("percentile", {})
    value = percentiles.get("99.000000")
    return None if value is None else value / 1000


# --- metadata ------------------------------------------------------------------------------------
def small_files(target: Target, bench: Bench) -> list[Sample]:
    """10 000 files of 4 KiB in 100 directories: create, stat (warm, right after), delete."""
    count, dirs = bench.sizes.files, bench.sizes.dirs
    base = target.root / "small"
    pool = memoryview(os.urandom(4096 + 16 * count))     # file i gets pool[16 i : 16 i + 4096]
    paths = [base / f"d{i % dirs}" / f"f{i}" for i in range(count)]

    def create() -> None:
        base.mkdir()
        for i in range(dirs):
            (base / f"d{i}").mkdir()
        for i, path in enumerate(paths):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, pool[16 * i:16 * i + 4096])
            os.close(fd)

    def stat() -> None:
        for path in paths:
            if os.stat(path).st_size != 4096:
                raise SystemExit(f"{target.label}: {path} is not 4096 bytes long after create")

    def delete() -> None:
        for path in paths:
            os.unlink(path)
        for i in range(dirs):
            (base / f"d{i}").rmdir()
        base.rmdir()
    samples = []
    for name, fn in (("create", create), ("stat", stat), ("delete", delete)):
        seconds, cpu = measure(target, fn)
        samples.append(Sample(name, count / seconds, cpu, count, seconds))
    return samples


# --- tarball -------------------------------------------------------------------------------------
def tarball(target: Target, bench: Bench) -> list[Sample]:
    """``tar xf`` of the source tarball (seconds), check it, then ``rm -rf`` of the tree (seconds)."""
    tree = target.root / "tree"
    tree.mkdir()
    seconds, cpu = measure(target, lambda: subprocess.run(["tar", "xf", str(bench.tarball), "-C", str(tree)],
                                                          check=True))
    files = sum(len(names) for _, _, names in os.walk(tree))
    if files != bench.sizes.tar_files:
        raise SystemExit(f"{target.label}: tar extracted {files} files, the tarball has {bench.sizes.tar_files}")
    rm_seconds, rm_cpu = measure(target, lambda: shutil.rmtree(tree))
    return [Sample("tar_x", seconds, cpu, files, seconds),
            Sample("tar_rm", rm_seconds, rm_cpu, files, rm_seconds)]


def make_tarball(path: Path, files: int, total_bytes: int, seed: int = 11) -> str:
    """A source-tree-like tarball, the same bytes for the same arguments: ``files`` text files
    of mixed sizes (log-normal, median ~10 KB, up to 1 MiB) in a tree of directories up to 5
    deep, ``total_bytes`` of content in all. Returns its SHA-256."""
    rng = random.Random(seed)
    corpus = source_text(rng, min(4 * MiB, total_bytes + 2 * MiB))     # > the largest file (1 MiB)
    sizes = scaled_sizes(rng, files, total_bytes)
    dirs = ["src"]
    for _ in range(max(1, files // 12)):
        parent = rng.choice(dirs)
        if parent.count("/") < 5:
            dirs.append(f"{parent}/{rng.choice(IDENTS)}{len(dirs)}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in dirs:
            tar.addfile(tar_info(d, 0, tarfile.DIRTYPE, 0o755))
        for i, size in enumerate(sizes):
            name = f"{rng.choice(dirs)}/{rng.choice(IDENTS)}_{i}.{rng.choice(EXTENSIONS)}"
            start = rng.randrange(len(corpus) - size)
            body = f"/* {name} */\n".encode() + corpus[start:start + size]
            body = body[:size]
            tar.addfile(tar_info(name, len(body), tarfile.REGTYPE, 0o644), io.BytesIO(body))
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


IDENTS = ["alloc", "buf", "cache", "ctx", "dev", "entry", "fd", "flags", "hash", "init", "inode", "io",
          "list", "lock", "map", "node", "page", "queue", "read", "ref", "req", "sched", "slot", "state",
          "sync", "task", "tree", "util", "walk", "write"]
KEYWORDS = ["if", "else", "for", "while", "return", "static", "struct", "const", "int", "void", "unsigned",
            "goto", "break", "switch", "case", "sizeof", "NULL"]
EXTENSIONS = ["c", "c", "c", "h", "h", "py", "rs", "go", "md", "txt", "json", "S"]


def source_text(rng: random.Random, size: int) -> bytes:
    """Lines that look like C: indentation, keywords, identifiers, operators, numbers."""
    out = []
    total = 0
    while total < size:
        words = [rng.choice(KEYWORDS) if rng.random() < 0.3 else
                 f"{rng.choice(IDENTS)}_{rng.choice(IDENTS)}" for _ in range(rng.randint(1, 9))]
        line = " " * (4 * rng.randint(0, 3)) + " ".join(words) + rng.choice(
            [";", " {", " }", "(x, 4096);", " = 0;", " += 1;", ""]) + "\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def scaled_sizes(rng: random.Random, files: int, total_bytes: int) -> list[int]:
    """Log-normal sizes scaled so they sum to ``total_bytes`` (each 64 B to 1 MiB)."""
    raw = [rng.lognormvariate(8.6, 1.3) for _ in range(files)]
    scale = total_bytes / sum(raw)
    sizes = [64] * files
    for _ in range(8):       # clipping moves the sum away from the goal: a few rounds settle it
        sizes = [min(MiB, max(64, int(x * scale))) for x in raw]
        scale *= total_bytes / sum(sizes)
    return sizes


def tar_info(name: str, size: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, mode
    info.mtime = 1_700_000_000          # fixed: the same tarball every time
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# --- append + fsync ------------------------------------------------------------------------------
def append_fsync(target: Target, bench: Bench) -> list[Sample]:
    """1 000 x (append 4 KiB + fsync): appends per second, and the fsync latency p50 / p99."""
    count = bench.sizes.appends
    pool = os.urandom(4096 * count)
    path = target.root / "log.bin"
    latencies: list[float] = []

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for i in range(count):
                os.write(fd, pool[4096 * i:4096 * (i + 1)])
                start = time.perf_counter()
                os.fsync(fd)
                latencies.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    seconds, cpu = measure(target, run)
    if path.stat().st_size != 4096 * count:
        raise SystemExit(f"{target.label}: log.bin has {path.stat().st_size} bytes after {count} appends")
    path.unlink()
    cuts = statistics.quantiles(latencies, n=100)
    return [Sample("append", count / seconds, cpu, count, seconds,
                   {"fsync_p50_ms": cuts[49] * 1e3, "fsync_max_ms": max(latencies) * 1e3}),
            Sample("fsync_p99", cuts[98] * 1e3, None, count, seconds)]


# (name, function, the delete phase it ends with, for the space probe)
WORKLOADS: list[tuple[str, Callable[[Target, Bench], list[Sample]], str | None]] = [
    ("seq_write", seq_write, None),
    ("seq_read_cold", seq_read_cold, "seq"),
    ("rand_write", rand_write, None),
    ("rand_read_cold", rand_read_cold, "fio"),
    ("small_files", small_files, "meta"),
    ("tarball", tarball, "tar"),
    ("append_fsync", append_fsync, None),
]


# --- space ---------------------------------------------------------------------------------------
def allocated_bytes(path: Path) -> int:
    """Bytes the host has allocated under ``path`` (``du``: sparse files count what they use)."""
    total = 0
    for parent, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(FileNotFoundError):        # removed while we walked
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total


def live_bytes(path: Path) -> int:
    """Bytes of file content visible under ``path`` (what the user has stored)."""
    total = 0
    for parent, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


class SpaceProbe(threading.Thread):
    """Host bytes of a target's data directory at fixed offsets after a delete phase.

    Runs beside the benchmark (it only stats a few files) while other targets are measured;
    ``join`` it before this target's next workload so that nothing it measures overlaps
    with new writes on the same target."""

    def __init__(self, target: Target, phase: str, run: int, offsets_s: tuple[float, ...]) -> None:
        super().__init__(name=f"space-{target.key}-{phase}", daemon=True)
        self.target, self.phase, self.run_index, self.offsets_s = target, phase, run, offsets_s
        self.samples: list[dict[str, Any]] = []
        self.t0 = time.monotonic()

    def run(self) -> None:
        for offset in self.offsets_s:
            time.sleep(max(0.0, self.t0 + offset - time.monotonic()))
            self.samples.append({"target": self.target.key, "run": self.run_index, "phase": self.phase,
                                 "after_s": offset, "host_bytes": allocated_bytes(self.target.data_dir),
                                 "live_bytes": live_bytes(self.target.root)})


# --- pre-aging -----------------------------------------------------------------------------------
def preage(target: Target, total_bytes: int, round_bytes: int, seed: int = 7) -> dict[str, float | None]:
    """Write and delete ``total_bytes`` of mixed files (3/4 of them 1-64 KiB, a fifth 64 KiB
    to 4 MiB, the rest 4-64 MiB), at most ``round_bytes`` alive at a time."""
    rng = random.Random(seed)
    pool = os.urandom(2 * MiB)
    written = 0
    files = 0
    base = target.root / "preage"
    cpu0 = target.cpu_s()
    start = time.perf_counter()
    while written < total_bytes:
        base.mkdir()
        paths = []
        in_round = 0
        while in_round < min(round_bytes, total_bytes - written):
            pick = rng.random()
            low, high = (KiB, 64 * KiB) if pick < 0.75 else (64 * KiB, 4 * MiB) if pick < 0.97 else (4 * MiB, 64 * MiB)
            size = int(math.exp(rng.uniform(math.log(low), math.log(high))))
            path = base / f"d{files % 100}" / f"f{files}"
            path.parent.mkdir(exist_ok=True)
            with open(path, "wb") as f:
                left = size
                while left:
                    offset = rng.randrange(MiB)          # varied bytes: little to deduplicate
                    chunk = min(left, MiB)
                    f.write(pool[offset:offset + chunk])
                    left -= chunk
            paths.append(path)
            in_round += size
            files += 1
        written += in_round
        rng.shuffle(paths)
        for path in paths:
            path.unlink()
        shutil.rmtree(base)
    cpu1 = target.cpu_s()
    return {"bytes": written, "files": files, "seconds": time.perf_counter() - start,
            "cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None}
