"""Space back after deletes, and what the paced reclaimer costs foreground requests (issue 11).

    python -m benchmarks.reclaim [--files 96] [--rounds 2] [--dir /path/on/the/disk]

On one fresh volume per case (real mount worker), write ``--files`` x 4 MiB of random data,
then run a foreground probe: 4 KiB overwrite at a random offset of a 64 MiB file + fsync,
back to back, one latency sample each. After a quiet-ish baseline window, delete 3 of every
4 files (every 64 MiB segment stays a quarter live: work for the reclaimer to copy) and keep
probing. Reported per case: probe p50/p99/max before and after the delete, seconds until
the volume directory's ``du`` is <= 1.2 x live + the fixed reserve of
``tests/mount/test_space_back.py`` (polled every 0.25 s, up to 60 s), and ``du`` at the end.

Cases: ``reclaim`` (the default worker), ``no-reclaim`` (``GALLEONFS_RECLAIM=0``: GC after
each 30 s checkpoint, the behaviour before), and ``plain`` (the same probe and deletes on a
plain directory of the same disk: the floor). Cases alternate, ``--rounds`` times.
Not a test: numbers go to docs/benchmarks.md with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from galleonfs import limits  # noqa: E402
from galleonfs.testing.mount import MountedVolume  # noqa: E402

MiB = 1 << 20
FILE_BYTES = 4 * MiB
PROBE_FILE_BYTES = 64 * MiB
BASELINE_S = 4.0
AFTER_S = 12.0
FIXED_BYTES = (limits.reclaim_slack_bytes + limits.segment_size_max_bytes
               + limits.volume_reserve_bytes + 24 * MiB)


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-s", "-B1", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


class Probe(threading.Thread):
    """4 KiB overwrite + fsync in a loop; (time, latency) per operation."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(3)
        fd = os.open(self.path, os.O_RDWR)
        try:
            while not self.stop.is_set():
                offset = rng.randrange(PROBE_FILE_BYTES // 4096) * 4096
                start = time.perf_counter()
                os.pwrite(fd, rng.randbytes(4096), offset)
                os.fsync(fd)
                self.samples.append((start, time.perf_counter() - start))
        finally:
            os.close(fd)

    def window(self, t0: float, t1: float) -> dict[str, float]:
        lat = [lat for t, lat in self.samples if t0 <= t < t1]
        if len(lat) < 2:
            return {"ops": len(lat)}
        cuts = statistics.quantiles(lat, n=100)
        return {"ops": len(lat), "p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3,
                "max_ms": max(lat) * 1e3}


def run_case(case: str, base: Path, files: int) -> dict[str, Any]:
    base.mkdir(parents=True)
    vol: MountedVolume | None = None
    if case == "plain":
        root, data_dir = base / "plain", base / "plain"
        root.mkdir()
    else:
        env = {"GALLEONFS_RECLAIM": "0"} if case == "no-reclaim" else None
        vol = MountedVolume.create(base, size=64 << 30, env=env)
        root, data_dir = vol.mountpoint, vol.volume_dir
    try:
        names = []
        for i in range(files):
            (root / f"f{i:03d}").write_bytes(os.urandom(FILE_BYTES))
            names.append(f"f{i:03d}")
        (root / "probe").write_bytes(os.urandom(PROBE_FILE_BYTES))
        os.sync()
        probe = Probe(root / "probe")
        probe.start()
        t_base = time.perf_counter()
        time.sleep(BASELINE_S)
        t_delete = time.perf_counter()
        kept = [n for i, n in enumerate(names) if i % 4 == 0]
        for n in names:
            if n not in kept:
                os.unlink(root / n)
        live = len(kept) * FILE_BYTES + PROBE_FILE_BYTES
        bound = 1.2 * live + FIXED_BYTES
        back_s: float | None = None
        while time.perf_counter() - t_delete < max(AFTER_S, 60.0 if back_s is None else 0.0):
            if back_s is None and du_bytes(data_dir) <= bound:
                back_s = time.perf_counter() - t_delete
            if back_s is not None and time.perf_counter() - t_delete >= AFTER_S:
                break
            time.sleep(0.25)
        t_end = time.perf_counter()
        probe.stop.set()
        probe.join()
        return {"case": case, "before": probe.window(t_base, t_delete),
                "after": probe.window(t_delete, min(t_end, t_delete + AFTER_S)),
                "space_back_s": back_s, "du_end_mib": du_bytes(data_dir) / MiB,
                "bound_mib": bound / MiB, "live_mib": live / MiB}
    finally:
        if vol is not None and vol.proc is not None:
            code = vol.unmount()
            if code != 0:
                print(vol.log(), file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=str(ROOT / "bench-data" / "reclaim"))
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=args.dir))
    results = []
    try:
        for r in range(args.rounds):
            for case in ("reclaim", "no-reclaim", "plain"):
                res = run_case(case, scratch / f"{case}-{r}", args.files)
                res["round"] = r
                res["loadavg"] = os.getloadavg()
                results.append(res)
                print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n| case | round | probe p50 / p99 / max ms before | after delete | space back s | du end MiB (bound) | load 1m |")
    print("|---|---:|---|---|---:|---:|---:|")
    for res in results:
        b, a = res["before"], res["after"]
        back = "-" if res["space_back_s"] is None else f"{res['space_back_s']:.1f}"
        print(f"| {res['case']} | {res['round']} | {b.get('p50_ms', 0):.2f} / {b.get('p99_ms', 0):.2f} / "
              f"{b.get('max_ms', 0):.1f} | {a.get('p50_ms', 0):.2f} / {a.get('p99_ms', 0):.2f} / "
              f"{a.get('max_ms', 0):.1f} | {back} | {res['du_end_mib']:.0f} ({res['bound_mib']:.0f}) | "
              f"{res['loadavg'][0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
