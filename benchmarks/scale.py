"""Does a cost depend on the volume's size? Curves over file counts (issue 11, target 3).

    python -m benchmarks.scale [--counts 1000,10000,100000] [--dir /path/on/the/disk]

For each count N: a fresh volume with N files of 4 KiB in one directory, filled through the
VFS in-process (the kernel is not what this measures, and 100 000 creates through FUSE take
minutes), checkpointed and closed. Then, on a real mount:

* mount time (``galleonfs`` worker start until the kernel's INIT is answered) and the
  worker's RSS right after it, and after listing the big directory;
* statfs: µs per call (1 000 calls);
* lookup: ``stat`` of 1 000 random existing names, each once, first thing after the mount
  (no entry cache yet): µs each;
* readdir of the N-entry directory (fresh mount, ``scandir``): µs per entry;
* create: 1 000 new empty files in the N-entry directory: µs each;
* fsck of the unmounted volume: inodes/s.

The same readdir/lookup/create on a plain directory with N files, in the same run, give the
floor. Each number is one measurement (the curve's shape is the point; the machine is shared:
the load average is printed with each row).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from galleonfs.engine.engine import Engine  # noqa: E402
from galleonfs.engine.fsck import fsck  # noqa: E402
from galleonfs.testing.mount import MountedVolume  # noqa: E402
from galleonfs.vfs.vfs import ROOT_CTX, Vfs  # noqa: E402

PROBES = 1000


def fill_volume(vol: str, count: int) -> float:
    """N files of 4 KiB (distinct content) in /big, through the VFS; seconds taken."""
    start = time.perf_counter()
    engine = Engine.open(vol)
    try:
        vfs = Vfs(engine, atime=False)
        big = vfs.mkdir(1, b"big", 0o755, ROOT_CTX).ino
        for i in range(count):
            ino = vfs.create(big, f"f{i:07d}".encode(), 0o644, ROOT_CTX).ino
            vfs.write(ino, 0, i.to_bytes(8, "little") * 512)
            vfs.release(ino)
            vfs.forget([(ino, 1)])
            if i % 5000 == 4999:
                engine.checkpoint()
        vfs.forget([(big, 1)])
    finally:
        engine.close()
    return time.perf_counter() - start


def fill_plain(d: Path, count: int) -> None:
    d.mkdir()
    for i in range(count):
        (d / f"f{i:07d}").write_bytes(i.to_bytes(8, "little") * 512)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def dir_ops(d: Path, count: int, rng: random.Random) -> dict[str, float]:
    """lookup of random names (µs; first, before a readdir fills the kernel's entry
    cache), readdir (µs/entry), create (µs) in ``d``."""
    names = [f"f{i:07d}" for i in rng.sample(range(count), min(PROBES, count))]
    start = time.perf_counter()
    for name in names:
        os.stat(d / name)
    lookup_us = (time.perf_counter() - start) * 1e6 / len(names)
    start = time.perf_counter()
    with os.scandir(d) as it:
        listed = sum(1 for _ in it)
    readdir_us = (time.perf_counter() - start) * 1e6 / max(1, listed)
    assert listed == count, (listed, count)
    start = time.perf_counter()
    for i in range(PROBES):
        os.close(os.open(d / f"new{i:05d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    create_us = (time.perf_counter() - start) * 1e6 / PROBES
    return {"readdir_us_per_entry": readdir_us, "lookup_us": lookup_us, "create_us": create_us}


def measure(base: Path, count: int) -> dict[str, Any]:
    rng = random.Random(count)
    row: dict[str, Any] = {"files": count}
    vol = str(base / "vol")
    (base / "mnt").mkdir(parents=True)
    Engine.create(vol, size=64 << 30)
    row["fill_s"] = fill_volume(vol, count)
    mounted = MountedVolume(vol, base / "mnt")
    start = time.perf_counter()
    mounted.mount()
    row["mount_s"] = time.perf_counter() - start
    try:
        row["rss_mib_mounted"] = rss_mib(mounted.pid)
        start = time.perf_counter()
        for _ in range(PROBES):
            os.statvfs(mounted.mountpoint)
        row["statfs_us"] = (time.perf_counter() - start) * 1e6 / PROBES
        row.update(dir_ops(mounted.mountpoint / "big", count, rng))
        row["rss_mib_listed"] = rss_mib(mounted.pid)
    finally:
        code = mounted.unmount()
        if code != 0:
            print(mounted.log(), file=sys.stderr)
    start = time.perf_counter()
    report = fsck(vol)
    seconds = time.perf_counter() - start
    assert report.clean, report.render()
    row["fsck_inodes_per_s"] = report.inodes / seconds
    row["fsck_mb_per_s"] = report.bytes_verified / seconds / 1e6
    plain = base / "plain"
    fill_plain(plain, count)
    os.sync()
    row["plain"] = dir_ops(plain, count, rng)
    row["load1"] = os.getloadavg()[0]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,10000,100000")
    parser.add_argument("--dir", default=str(ROOT / "bench-data" / "scale"))
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c]
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=args.dir))
    rows = []
    try:
        for count in counts:
            row = measure(scratch / str(count), count)
            rows.append(row)
            print(row, flush=True)
            shutil.rmtree(scratch / str(count), ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n| files | fill s (VFS) | mount s | RSS MiB mounted / listed | statfs µs | readdir µs/entry "
          "(plain) | lookup µs (plain) | create µs (plain) | fsck inodes/s | load 1m |")
    print("|---:|---:|---:|---|---:|---|---|---|---:|---:|")
    for r in rows:
        p = r["plain"]
        print(f"| {r['files']:,} | {r['fill_s']:.1f} | {r['mount_s']:.2f} | {r['rss_mib_mounted']:.0f} / "
              f"{r['rss_mib_listed']:.0f} | {r['statfs_us']:.0f} | {r['readdir_us_per_entry']:.1f} "
              f"({p['readdir_us_per_entry']:.1f}) | {r['lookup_us']:.0f} ({p['lookup_us']:.0f}) | "
              f"{r['create_us']:.0f} ({p['create_us']:.0f}) | {r['fsck_inodes_per_s']:,.0f} | "
              f"{r['load1']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
