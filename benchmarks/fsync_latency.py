"""Append 4 KiB + fsync through a mounted volume: write and fsync latency percentiles.

``run.py append_4k_fsync`` gives the rate against a plain directory; this gives the
latency split (the WRITE the application makes, the fsync it waits for: p50/p90/p99) and
the slowest fsyncs with their time into the run, to tell a periodic stall (a commit
interval, a checkpoint) from scheduling noise on a loaded machine.

    python -m benchmarks.fsync_latency [--count 2000]

Run it with ``PYTHONPATH`` pointing at another checkout to compare versions in one sitting
(the mount worker inherits the environment).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from galleonfs.engine.engine import Engine
from galleonfs.testing.mount import MountedVolume


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--dir", default="/tmp", help="scratch directory (default /tmp)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(dir=args.dir, prefix="fsync-latency-"))
    (base / "mnt").mkdir()
    Engine.create(str(base / "vol"), size=8 << 30)
    vol = MountedVolume(base / "vol", base / "mnt").mount()
    try:
        data = os.urandom(4096)
        writes, fsyncs, at = [], [], []
        fd = os.open(base / "mnt" / "log.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        start = time.perf_counter()
        try:
            for _ in range(args.count):
                t0 = time.perf_counter()
                os.write(fd, data)
                t1 = time.perf_counter()
                os.fsync(fd)
                t2 = time.perf_counter()
                writes.append(t1 - t0)
                fsyncs.append(t2 - t1)
                at.append(t1 - start)
        finally:
            os.close(fd)
        seconds = time.perf_counter() - start
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"{args.count} x (append 4 KiB + fsync): {args.count / seconds:.0f}/s, load average {load}")
        print(f"  write p50 {pct(writes, .5):.3f} p99 {pct(writes, .99):.3f} ms; fsync p50 "
              f"{pct(fsyncs, .5):.3f} p90 {pct(fsyncs, .9):.3f} p99 {pct(fsyncs, .99):.3f} ms")
        slow = sorted(sorted(range(args.count), key=lambda i: -fsyncs[i])[:10])
        print("  slowest fsyncs (s into the run: ms): " +
              ", ".join(f"{at[i]:.2f}: {fsyncs[i] * 1e3:.1f}" for i in slow))
    finally:
        vol.unmount()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
