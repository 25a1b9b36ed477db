"""The VFS and engine without a kernel: microseconds per operation, and index lookups per
write (issue 10: the restructure must not make the hot path slower). Not in CI.

    python benchmarks/vfs_ops.py [--dir DIR] [--runs 5] [--json FILE]

Each workload runs on a fresh volume (64 KiB blocks) in ``DIR`` (default: a temporary
directory under /var/tmp), ``--runs`` times; the table shows the median and the spread
(max - min) of the runs. The calls are the VFS's own (``Vfs.create/write/read/getattr``),
the ones the FUSE adapter makes, so what is measured is the Python work per request: the
~76 µs floor of a FUSE round trip comes on top. It runs against any commit that has
``galleonfs.vfs.vfs.Vfs``, so two commits can be compared in one session.

``lookups/write`` counts the block index reads (``Db.BLOCKS`` gets) of one 1 MiB overwrite of
16 blocks: each of its 32 entries (16 replaced, 16 new) should be read once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from galleonfs.engine.engine import Engine
from galleonfs.meta.schema import Db
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BS = 64 * 1024
MiB = 1 << 20


def fresh(base: Path) -> Vfs:
    path = base / "vol"
    shutil.rmtree(path, ignore_errors=True)
    Engine.create(str(path), size=8 << 30, block_size=BS)
    return Vfs(Engine.open(str(path)), atime=False)


def timed(n: int, fn: Callable[[int], object]) -> float:
    """Microseconds per call of ``fn(i)`` for i in range(n)."""
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6


def overwrite_1m(v: Vfs) -> float:
    """1 MiB writes (16 blocks) over a 64 MiB file: replace, hash, quota, index."""
    f = v.create(1, b"f", 0o644, ROOT_CTX)
    chunks = [os.urandom(MiB) for _ in range(8)]
    for i in range(64):
        v.write(f.ino, i * MiB, chunks[i % 8])
    return timed(256, lambda i: v.write(f.ino, (i % 64) * MiB, chunks[(i + 3) % 8]))


def append_4k(v: Vfs) -> float:
    """4 KiB appends: a read-modify-write of the last block each time."""
    f = v.create(1, b"log", 0o644, ROOT_CTX)
    data = os.urandom(4096)
    return timed(4000, lambda i: v.write(f.ino, i * 4096, data))


def small_files(v: Vfs) -> float:
    """create + 4 KiB write + release + forget, as ``cp`` of a small file makes them."""
    data = os.urandom(4096)

    def one(i: int) -> None:
        f = v.create(1, b"f%06d" % i, 0o644, ROOT_CTX)
        v.write(f.ino, 0, data)
        v.release(f.ino)
        v.forget([(f.ino, 1)])
    return timed(3000, one)


def getattr_(v: Vfs) -> float:
    f = v.create(1, b"f", 0o644, ROOT_CTX)
    return timed(20000, lambda i: v.getattr(f.ino))


def read_128k(v: Vfs) -> float:
    """128 KiB reads of a 16 MiB file (the block cache holds it: the Python path only)."""
    f = v.create(1, b"f", 0o644, ROOT_CTX)
    v.write(f.ino, 0, os.urandom(16 * MiB))
    return timed(4000, lambda i: v.read(f.ino, (i % 128) * 128 * 1024, 128 * 1024))


def lookups_per_write(v: Vfs) -> float:
    f = v.create(1, b"f", 0o644, ROOT_CTX)
    v.write(f.ino, 0, os.urandom(MiB))
    meta = v.engine.meta
    real_get = meta.get
    count = 0

    def counting_get(db: Db, key: bytes) -> bytes | None:
        nonlocal count
        count += db == Db.BLOCKS
        return real_get(db, key)

    meta.get = counting_get  # type: ignore[method-assign]
    v.write(f.ino, 0, os.urandom(MiB))
    meta.get = real_get  # type: ignore[method-assign]
    return float(count)


WORKLOADS: dict[str, tuple[str, Callable[[Vfs], float]]] = {
    "overwrite_1m": ("µs/write", overwrite_1m),
    "append_4k": ("µs/write", append_4k),
    "small_files": ("µs/file", small_files),
    "getattr": ("µs/call", getattr_),
    "read_128k": ("µs/read", read_128k),
    "lookups_per_write": ("lookups", lookups_per_write),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="scratch directory (default: a new one under /var/tmp)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", action="append", help="run only these workloads")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vfs-ops-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[float]] = {}
    try:
        for run in range(args.runs):
            for name, (_unit, fn) in WORKLOADS.items():
                if args.only and name not in args.only:
                    continue
                v = fresh(base)
                try:
                    results.setdefault(name, []).append(fn(v))
                finally:
                    v.engine.close()
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'workload':<20}{'median':>10}{'spread':>10}  unit")
    for name, values in results.items():
        print(f"{name:<20}{statistics.median(values):>10.1f}{max(values) - min(values):>10.1f}  {WORKLOADS[name][0]}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
