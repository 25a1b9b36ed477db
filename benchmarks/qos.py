"""QoS accuracy: do limits hold, and do competing volumes get their guarantees?

    python -m benchmarks.qos [--seconds 30] [--threads 4] [--dir /var/tmp]

A real galleond on a scratch data directory, volumes mounted through it, and writer
threads in this process doing O_DIRECT ``pwrite``s (one FUSE WRITE each, so the rate the
application sees is the rate the worker admits). Three runs, each measured over
``--seconds`` after a warm-up of 3 s (the daemon re-splits the budget once a second):

1. ``iops``: one volume limited to 500 IOPS / 20 MB/s, 4 KiB writes: the IOPS limit binds.
2. ``throughput``: the same volume, 128 KiB writes: the 20 MB/s limit binds (152 IOPS).
3. ``guarantees``: a node budget of 1000 IOPS, volume A guaranteed 600, volume B 200, no
   limits, both writing flat out: expected A 700, B 300 (floors, then the rest halved).

Pass: each measured rate within +-10 % of its target (runs 1 and 2), and each volume at
least its floor (run 3). First, for reference, the unthrottled rate of the same workload.
Not part of CI: it takes about two minutes and measures speed.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from galleonfs.testing.daemon import RunningDaemon

KiB = 1024
MB = 1_000_000
WARMUP_S = 3.0
REGION_BYTES = 32 * 1024 * KiB          # each writer rewrites its own 32 MiB file


@dataclass
class Writers:
    """Threads doing O_DIRECT writes of ``size`` bytes to files under ``directory``."""

    directory: Path
    threads: int
    size: int
    ops: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.ops = [0] * self.threads
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for t in self._threads:
            t.start()

    def _run(self, index: int) -> None:
        buf = mmap.mmap(-1, self.size)
        buf.write(os.urandom(self.size))
        fd = os.open(self.directory / f"w{index}", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
        slots = REGION_BYTES // self.size
        try:
            n = 0
            while not self.stop.is_set():
                if os.pwritev(fd, [buf], (n % slots) * self.size) != self.size:
                    self.errors.append("short write")
                n += 1
                self.ops[index] = n
        except OSError as exc:
            self.errors.append(str(exc))
        finally:
            os.close(fd)

    def total(self) -> int:
        return sum(self.ops)

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join()


def measure(groups: dict[str, Writers], seconds: float) -> dict[str, dict[str, float]]:
    """Start every group, warm up, then count for ``seconds``: ops/s and MB/s of each."""
    for g in groups.values():
        g.start()
    time.sleep(WARMUP_S)
    start = {k: g.total() for k, g in groups.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    end = {k: g.total() for k, g in groups.items()}
    for g in groups.values():
        g.join()
        assert not g.errors, g.errors[:3]
    return {k: {"iops": (end[k] - start[k]) / elapsed,
                "mbps": (end[k] - start[k]) * groups[k].size / elapsed / MB} for k in groups}


def ctl(daemon: RunningDaemon, *args: str) -> None:
    done = daemon.ctl(*args)
    if done.returncode != 0:
        raise SystemExit(f"galleonctl {' '.join(args)}: {done.stderr.strip()}")


def within(value: float, target: float, tolerance: float = 0.10) -> bool:
    return abs(value - target) <= tolerance * target


def run_limits(base: Path, seconds: float, threads: int) -> dict[str, object]:
    (base / "limits").mkdir()
    daemon = RunningDaemon(base / "limits").start()
    mnt = base / "limits" / "m"
    try:
        ctl(daemon, "volume", "create", "bench", "--size", "1G")
        ctl(daemon, "volume", "mount", "bench", str(mnt))
        free = measure({"bench": Writers(mnt, threads, 4 * KiB)}, min(seconds, 10))["bench"]
        ctl(daemon, "qos", "create", "limited", "--iops-limit", "500", "--throughput-limit-mbps", "20")
        ctl(daemon, "qos", "assign", "limited", "bench")
        iops = measure({"bench": Writers(mnt, threads, 4 * KiB)}, seconds)["bench"]
        tput = measure({"bench": Writers(mnt, threads, 128 * KiB)}, seconds)["bench"]
        ctl(daemon, "volume", "unmount", "bench")
    finally:
        daemon.cleanup()
    return {"unthrottled_4k": free, "iops_run": iops, "throughput_run": tput,
            "iops_ok": within(iops["iops"], 500), "throughput_ok": within(tput["mbps"], 20)}


def run_guarantees(base: Path, seconds: float, threads: int) -> dict[str, object]:
    (base / "shared").mkdir()
    daemon = RunningDaemon(base / "shared", env={"GALLEONFS_QOS_NODE_IOPS": "1000"}).start()
    try:
        groups = {}
        for name, floor in (("a", 600), ("b", 200)):
            mnt = base / "shared" / name
            ctl(daemon, "volume", "create", name, "--size", "1G")
            ctl(daemon, "volume", "mount", name, str(mnt))
            ctl(daemon, "qos", "create", f"floor-{name}", "--iops-guarantee", str(floor))
            ctl(daemon, "qos", "assign", f"floor-{name}", name)
            groups[name] = Writers(mnt, threads, 4 * KiB)
        got = measure(groups, seconds)
        for name in groups:
            ctl(daemon, "volume", "unmount", name)
    finally:
        daemon.cleanup()
    return {"a": got["a"], "b": got["b"], "expected": {"a": 700, "b": 300},
            "floors_ok": got["a"]["iops"] >= 600 and got["b"]["iops"] >= 200}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.qos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=4, help="writer threads per volume")
    parser.add_argument("--dir", default="/var/tmp", help="where the scratch data directories go")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="galleonfs-qos-", dir=args.dir))
    try:
        load = os.getloadavg()
        limits = run_limits(base, args.seconds, args.threads)
        shares = run_guarantees(base, args.seconds, args.threads)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    free, iops, tput = limits["unthrottled_4k"], limits["iops_run"], limits["throughput_run"]
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"unthrottled, 4 KiB O_DIRECT, {args.threads} threads: {free['iops']:.0f} IOPS")  # type: ignore[index]
    print(f"limit 500 IOPS / 20 MB/s, 4 KiB:   {iops['iops']:.1f} IOPS "  # type: ignore[index]
          f"({'ok' if limits['iops_ok'] else 'OUT OF +-10 %'})")
    print(f"limit 500 IOPS / 20 MB/s, 128 KiB: {tput['mbps']:.2f} MB/s "  # type: ignore[index]
          f"({'ok' if limits['throughput_ok'] else 'OUT OF +-10 %'})")
    print(f"budget 1000 IOPS, floors 600 / 200: A {shares['a']['iops']:.1f} IOPS, "  # type: ignore[index]
          f"B {shares['b']['iops']:.1f} IOPS (expected 700 / 300; "  # type: ignore[index]
          f"{'floors held' if shares['floors_ok'] else 'FLOOR MISSED'})")
    out = Path(__file__).parent / "results" / time.strftime("qos-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"limits": limits, "guarantees": shares, "load": load,
                               "seconds": args.seconds, "threads": args.threads}, indent=2))
    print(f"results: {out}")
    return 0 if limits["iops_ok"] and limits["throughput_ok"] and shares["floors_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
