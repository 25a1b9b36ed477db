"""GalleonFS benchmarks against a plain directory on the same disk, in the same run.

    benchmarks/run.sh [--only NAME ...] [--runs 3] [--dir /path/on/the/disk] [--quick]

Each benchmark runs ``--runs`` times (default 3) on both targets, alternating plain and
GalleonFS so drift hits both alike; the table shows medians, the ratio GalleonFS/plain
(higher is better for rates; for times the ratio is time GalleonFS/plain, lower is
better) and the target from the engine issue. Results also go to
``benchmarks/results/<time>.json``. Cold runs drop the page cache (root only).

The GalleonFS side is one volume mounted by a real mount worker (``MountedVolume``),
created on the same file system as the plain directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from galleonfs.engine.engine import Engine
from galleonfs.testing.mount import MountedVolume

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class Result:
    name: str
    unit: str
    higher_is_better: bool
    target: float | None          # ratio GalleonFS/plain the issue asks for
    plain: list[float] = field(default_factory=list)
    galleon: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.galleon) / statistics.median(self.plain)

    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        if ok:
            return "met"
        missed = (self.target - self.ratio) / self.target if self.higher_is_better else (self.ratio - self.target) / self.target
        return f"missed by {missed:.0%}"


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- the benchmarks: each takes a directory and returns one number -------------------------------
def seq_write(d: Path, size: int) -> float:
    """MB/s writing ``size`` random bytes in 1 MiB writes, then fsync."""
    block = os.urandom(MiB)
    path = d / "seq.bin"
    path.unlink(missing_ok=True)
    drop_caches()

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i in range(size // MiB):
                # Vary each MiB so that dedup cannot help: a real file is not one block repeated.
                os.write(fd, block[i % 4096:] + block[: i % 4096])
            os.fsync(fd)
        finally:
            os.close(fd)
    return size / MiB / timed(run)


def read_through(path: Path) -> None:
    """Read a whole file in 1 MiB reads (the sequential-read workload)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, MiB):
            pass
    finally:
        os.close(fd)


def seq_read_cold(d: Path, size: int) -> float:
    """MB/s reading the file seq_write left, after dropping the page cache."""
    path = d / "seq.bin"
    if not path.exists() or path.stat().st_size != size:
        seq_write(d, size)
    drop_caches()

    return size / MiB / timed(lambda: read_through(path))


def fio(d: Path, rw: str, size_mb: int, runtime_s: int, *, direct: bool, cold: bool) -> float:
    """IOPS of fio 4 KiB ``rw`` at iodepth 1 (psync) on a ``size_mb`` file."""
    path = d / "fio.bin"
    if not path.exists() or path.stat().st_size != size_mb * MiB:
        subprocess.run(["fio", "--name=prep", f"--filename={path}", "--rw=write", "--bs=1M",
                        f"--size={size_mb}M", "--refill_buffers", "--end_fsync=1"],
                       check=True, capture_output=True)
    if cold:
        drop_caches()
    done = subprocess.run(
        ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", "--bs=4k", f"--size={size_mb}M",
         "--ioengine=psync", "--iodepth=1", f"--direct={int(direct)}", f"--runtime={runtime_s}",
         "--time_based", "--refill_buffers", "--randrepeat=0", "--output-format=json"],
        check=True, capture_output=True, text=True)
    job = json.loads(done.stdout)["jobs"][0]
    return float(job["write" if "write" in rw else "read"]["iops"])


def small_files(d: Path, count: int) -> float:
    """Seconds to create (4 KiB each), stat and delete ``count`` files in 100 directories."""
    base = d / "small"
    shutil.rmtree(base, ignore_errors=True)
    data = os.urandom(4096)

    def run() -> None:
        base.mkdir()
        for i in range(100):
            (base / f"d{i}").mkdir()
        for i in range(count):
            fd = os.open(base / f"d{i % 100}" / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
        for i in range(count):
            os.stat(base / f"d{i % 100}" / f"f{i}")
        for i in range(count):
            os.unlink(base / f"d{i % 100}" / f"f{i}")
        for i in range(100):
            (base / f"d{i}").rmdir()
        base.rmdir()
    return timed(run)


def make_tarball(path: Path, files: int) -> None:
    """A source-tree-like tarball: nested directories, text files of 0.5-40 KiB."""
    rng = random.Random(42)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_(){};= \n") for _ in range(rng.randint(2, 12)))
             for _ in range(2000)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        for i in range(files):
            sub = root / f"mod{i % 40}" / f"pkg{i % 7}"
            sub.mkdir(parents=True, exist_ok=True)
            size = int(rng.lognormvariate(8.5, 1.0)) % (40 * 1024) + 512
            body = b" ".join(rng.choice(words) for _ in range(size // 7))[:size]
            (sub / f"file{i}.c").write_bytes(body)
        with tarfile.open(path, "w") as tar:
            tar.add(root, arcname="src")


def tarball(d: Path, tar_path: Path) -> tuple[float, float, float]:
    """Seconds to extract (tar xf, then sync), read back every file, and delete the tree."""
    target = d / "tree"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    extract = timed(lambda: subprocess.run(["tar", "xf", str(tar_path), "-C", str(target)], check=True))
    drop_caches()
    read = timed(lambda: subprocess.run(f"find {target} -type f -exec cat {{}} + > /dev/null",
                                        shell=True, check=True))
    delete = timed(lambda: shutil.rmtree(target))
    return extract, read, delete


def append_fsync(d: Path, count: int, latencies: list[float] | None = None) -> float:
    """Operations per second of (append 4 KiB + fsync); each fsync's seconds into ``latencies``."""
    path = d / "log.bin"
    path.unlink(missing_ok=True)
    data = os.urandom(4096)
    spent = latencies if latencies is not None else []

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(count):
                os.write(fd, data)
                start = time.perf_counter()
                os.fsync(fd)
                spent.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    return count / timed(run)


def append_fsync_p99_ms(d: Path, count: int) -> float:
    """The 99th percentile of the fsync latency in ``append_fsync``, in milliseconds."""
    latencies: list[float] = []
    append_fsync(d, count, latencies)
    latencies.sort()
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3


def reread_warm(d: Path, size: int) -> float:
    """MB/s reading a file a second time, after close and reopen (the page cache's worth)."""
    path = d / "reread.bin"
    if not path.exists() or path.stat().st_size != size:
        seq_write(d, size)
        os.rename(d / "seq.bin", path)

    read_through(path)
    return size / MiB / timed(lambda: read_through(path))


def worker_rss(vol: MountedVolume, size: int) -> tuple[float, float]:
    """The worker's resident memory (MB), now and at its peak, after writing ``size`` bytes."""
    seq_write(vol.mountpoint, size)
    status = Path(f"/proc/{vol.pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status.splitlines()
              if line.startswith(("VmRSS", "VmHWM"))}
    (vol.mountpoint / "seq.bin").unlink()
    return values["VmRSS"], values["VmHWM"]


# --- the run -------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    mem = next((line.split()[1] for line in meminfo if line.startswith("MemTotal")), "0")
    disk = subprocess.run(["df", "-h", "--output=source,fstype,size", "."], capture_output=True, text=True).stdout
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{int(mem) / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(),
            "disk": " ".join(disk.split()[3:]) if disk else "?"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(Path(__file__).resolve().parent.parent / "bench-data"),
                        help="scratch directory on the disk to measure (default ./bench-data)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--ablation", action="store_true",
                        help="instead: measure each kernel-side setting against its alternative")
    args = parser.parse_args(argv)
    if args.ablation:
        return ablation(args)
    if os.getuid() != 0:
        print("note: not root, so cold-cache runs cannot drop the page cache", file=sys.stderr)
    scratch = Path(args.dir)
    shutil.rmtree(scratch, ignore_errors=True)
    plain = scratch / "plain"
    plain.mkdir(parents=True)
    gdir = scratch / "galleon"
    gdir.mkdir()
    (gdir / "mnt").mkdir()
    Engine.create(str(gdir / "vol"), size=64 * GiB)
    vol = MountedVolume(gdir / "vol", gdir / "mnt").mount()
    quick = args.quick
    seq_size = (256 if quick else 1024) * MiB
    fio_mb, fio_s = (64, 5) if quick else (256, 15)
    nfiles = 1000 if quick else 10000
    tar_path = scratch / "src.tar"
    make_tarball(tar_path, 500 if quick else 3000)

    results: list[Result] = []
    want = set(args.only or [])

    def bench(name: str, unit: str, higher: bool, target: float | None,
              fn: Callable[[Path], float], note: str = "") -> None:
        if want and name not in want:
            return
        r = Result(name, unit, higher, target, note=note)
        for i in range(args.runs):
            r.plain.append(fn(plain))
            r.galleon.append(fn(vol.mountpoint))
            print(f"  {name} run {i + 1}: plain {r.plain[-1]:.1f}, galleonfs {r.galleon[-1]:.1f} {unit}", flush=True)
        results.append(r)

    try:
        bench("seq_write_1g_fsync", "MB/s", True, 0.9, lambda d: seq_write(d, seq_size))
        bench("seq_read_cold", "MB/s", True, 0.7, lambda d: seq_read_cold(d, seq_size))
        bench("fio_randwrite_4k_direct", "IOPS", True, 0.3,
              lambda d: fio(d, "randwrite", fio_mb, fio_s, direct=True, cold=False), "O_DIRECT, psync, iodepth 1")
        bench("fio_randread_4k_cold_direct", "IOPS", True, 0.7,
              lambda d: fio(d, "randread", fio_mb, fio_s, direct=True, cold=True), "O_DIRECT, psync, iodepth 1")
        bench("fio_randwrite_4k_buffered", "IOPS", True, None,
              lambda d: fio(d, "randwrite", fio_mb, fio_s, direct=False, cold=False), "page cache, no fsync")
        bench("fio_randread_4k_cold_buffered", "IOPS", True, None,
              lambda d: fio(d, "randread", fio_mb, fio_s, direct=False, cold=True), "page cache dropped first")
        bench("small_files_create_stat_delete", "s", False, 1 / 0.35, lambda d: small_files(d, nfiles),
              f"{nfiles} files of 4 KiB; target: create rate >= 0.35x")
        if not want or "tarball" in want:
            phases = [Result("tarball_extract", "s", False, 2.5, note="tar xf of a source tree"),
                      Result("tarball_read_cold", "s", False, None, note="cat every file, cache dropped"),
                      Result("tarball_delete", "s", False, None, note="rm -rf")]
            for i in range(args.runs):
                for side, d in (("plain", plain), ("galleon", vol.mountpoint)):
                    for r, seconds in zip(phases, tarball(d, tar_path), strict=True):
                        getattr(r, side).append(seconds)
                print(f"  tarball run {i + 1}: " + ", ".join(
                    f"{r.name} {r.plain[-1]:.2f}/{r.galleon[-1]:.2f} s" for r in phases), flush=True)
            results.extend(phases)
        bench("append_4k_fsync", "ops/s", True, 0.5, lambda d: append_fsync(d, 1000))
        bench("append_4k_fsync_p99", "ms", False, None, lambda d: append_fsync_p99_ms(d, 1000),
              "fsync latency, 99th percentile; the issue's target is <= 1 ms")
        if not want or "worker_rss" in want:
            rss, peak = worker_rss(vol, (1 if quick else 4) * GiB)
            results.append(Result("worker_rss_after_4g", "MB", False, None, [200.0], [rss],
                                  note=f"peak {peak:.0f} MB; target < 200 MB (plain column = the limit)"))
    finally:
        code = vol.unmount()
        assert code == 0, vol.log()

    report(results, machine(), args)
    return 0


# --- ablation: one setting at a time -------------------------------------------------------------
VARIANTS = {
    # GALLEONFS_TUNING value: (what it turns off, the benchmarks it should matter for)
    "writeback=0": ("kernel writeback cache", ["seq_write", "small_files", "append_fsync"]),
    "max_ratio=1": ("40 % dirty-page share (kernel default for FUSE: 1 %)", ["seq_write"]),
    "read_ahead_kb=128": ("1 MiB readahead (kernel default: 128 KiB)", ["seq_read_cold"]),
    "flush=1": ("ENOSYS for FLUSH (a no-op handler instead)", ["small_files"]),
    "attr_timeout=1,entry_timeout=1,negative_timeout=0": ("60 s attr/entry timeouts (libfuse default 1 s)",
                                                          ["small_files", "tarball_extract"]),
    "keep_cache=0": ("keep_cache on open", ["reread_warm"]),
}


def ablation(args: argparse.Namespace) -> int:
    scratch = Path(args.dir)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    size = (256 if args.quick else 1024) * MiB
    nfiles = 1000 if args.quick else 5000
    tar_path = scratch / "src.tar"
    make_tarball(tar_path, 500 if args.quick else 3000)
    benches: dict[str, tuple[str, bool, Callable[[Path], float]]] = {
        "seq_write": ("MB/s", True, lambda d: seq_write(d, size)),
        "seq_read_cold": ("MB/s", True, lambda d: seq_read_cold(d, size)),
        "small_files": ("s", False, lambda d: small_files(d, nfiles)),
        "append_fsync": ("ops/s", True, lambda d: append_fsync(d, 1000)),
        "tarball_extract": ("s", False, lambda d: tarball(d, tar_path)[0]),
        "reread_warm": ("MB/s", True, lambda d: reread_warm(d, size // 4)),
    }

    def measure(spec: str, names: list[str]) -> dict[str, list[float]]:
        base = scratch / f"v{abs(hash(spec))}"
        shutil.rmtree(base, ignore_errors=True)
        (base / "mnt").mkdir(parents=True)
        Engine.create(str(base / "vol"), size=64 * GiB)
        vol = MountedVolume(base / "vol", base / "mnt", env={"GALLEONFS_TUNING": spec}).mount()
        try:
            return {n: [benches[n][2](vol.mountpoint) for _ in range(args.runs)] for n in names}
        finally:
            assert vol.unmount() == 0, vol.log()
            shutil.rmtree(base, ignore_errors=True)

    wanted = sorted({n for _, names in VARIANTS.values() for n in names})
    print("default configuration ...", flush=True)
    default = measure("", wanted)
    rows = []
    for spec, (what, names) in VARIANTS.items():
        print(f"{spec} ...", flush=True)
        variant = measure(spec, names)
        for n in names:
            unit, higher, _ = benches[n]
            d, v = statistics.median(default[n]), statistics.median(variant[n])
            gain = d / v if higher else v / d
            rows.append((what, spec, n, d, v, unit, gain))
    info = machine()
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['memory']}, kernel {info['kernel']}")
    print(f"{'setting (GalleonFS default)':52} {'benchmark':16} {'default':>9} {'without':>9} {'unit':6} {'gain':>6}")
    for what, spec, n, d, v, unit, gain in rows:
        print(f"{what:52} {n:16} {d:9.1f} {v:9.1f} {unit:6} {gain:6.2f}x   [{spec}]")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("ablation-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"machine": info, "rows": rows, "default": default}, indent=2))
    print(f"\nresults written to {path}")
    return 0


def report(results: list[Result], info: dict[str, str], args: argparse.Namespace) -> None:
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, kernel {info['kernel']}, "
          f"Python {info['python']}, disk {info['disk']}")
    header = f"{'benchmark':34} {'plain':>10} {'galleonfs':>10} {'unit':6} {'ratio':>6} {'target':>7}  verdict"
    print(header)
    print("-" * len(header))
    rows = []
    for r in results:
        target = "" if r.target is None else (f">={r.target:.2f}" if r.higher_is_better else f"<={r.target:.2f}")
        line = (f"{r.name:34} {statistics.median(r.plain):10.1f} {statistics.median(r.galleon):10.1f} "
                f"{r.unit:6} {r.ratio:6.2f} {target:>7}  {r.verdict()}")
        print(line + (f"  ({r.note})" if r.note else ""))
        rows.append({"name": r.name, "unit": r.unit, "plain": r.plain, "galleonfs": r.galleon,
                     "median_plain": statistics.median(r.plain), "median_galleonfs": statistics.median(r.galleon),
                     "ratio": r.ratio, "target": r.target, "verdict": r.verdict(), "note": r.note})
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"machine": info, "runs": args.runs, "quick": args.quick, "results": rows}, indent=2))
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    sys.exit(main())
