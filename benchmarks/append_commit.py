"""Append 4 KiB + commit, in process: the engine's half of an application's append + fsync.

The FUSE benchmark (``run.py append_4k_fsync``) measures the whole path, but on a loaded
2-core machine its spread hides the engine's part. This drives the VFS and the commit the
mount worker's ``Committer`` runs for an ``fsync`` (``begin_commit``, the syncs, ``end_commit``;
in this thread), against ``os.write`` + ``os.fdatasync`` on a plain file in the same
directory, alternating blocks of 50 so both see the same load. Reports appends/s, commit
latency p50/p99 and file syncs per append.

    python -m benchmarks.append_commit [--count 2000] [--dir DIR]

Run it with ``PYTHONPATH`` pointing at another checkout to compare versions in one sitting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from galleonfs.engine.engine import Engine
from galleonfs.storage import File, Storage
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

BLOCK = 50


class CountingStorage(Storage):
    """The real storage, counting file syncs (data segments and journal)."""

    def __init__(self) -> None:
        self.syncs = 0

    def open_file(self, path: str, *, create: bool = False, writable: bool = True) -> File:
        f = super().open_file(path, create=create, writable=writable)
        owner = self

        class Counted(File):
            def sync(self) -> None:
                owner.syncs += 1
                super().sync()
        return Counted(f.path, f.fd)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir under ./bench-data)")
    args = parser.parse_args()
    root = Path(args.dir or Path(__file__).resolve().parent.parent / "bench-data")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="append-commit-", dir=root))
    try:
        vol = str(scratch / "vol")
        Engine.create(vol, size=16 << 30)
        storage = CountingStorage()
        engine = Engine.open(vol, storage=storage)
        vfs = Vfs(engine, atime=False)
        ino = vfs.create(1, b"log", 0o644, ROOT_CTX).ino
        plain_fd = os.open(scratch / "plain.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = os.urandom(4096 * args.count)
        lat: dict[str, list[float]] = {"plain": [], "galleonfs": []}
        spent = {"plain": 0.0, "galleonfs": 0.0}
        syncs0 = storage.syncs
        for start in range(0, args.count, BLOCK):
            t0 = time.perf_counter()
            for i in range(start, min(start + BLOCK, args.count)):
                os.write(plain_fd, data[4096 * i:4096 * (i + 1)])
                t = time.perf_counter()
                os.fdatasync(plain_fd)
                lat["plain"].append(time.perf_counter() - t)
            t1 = time.perf_counter()
            for i in range(start, min(start + BLOCK, args.count)):
                vfs.write(ino, 4096 * i, data[4096 * i:4096 * (i + 1)])
                t = time.perf_counter()
                batch = engine.begin_commit()
                batch.run()
                engine.end_commit(batch)
                lat["galleonfs"].append(time.perf_counter() - t)
            t2 = time.perf_counter()
            spent["plain"] += t1 - t0
            spent["galleonfs"] += t2 - t1
        syncs = storage.syncs - syncs0
        os.close(plain_fd)
        vfs.release(ino)
        engine.close()
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"{args.count} x (append 4 KiB + commit), load average {' '.join(load)}")
        for name in ("plain", "galleonfs"):
            ls = lat[name]
            print(f"  {name:10} {args.count / spent[name]:8.0f} appends/s   commit p50 "
                  f"{statistics.median(ls) * 1e3:.3f} ms  p99 {pct(ls, 0.99) * 1e3:.3f} ms")
        print(f"  ratio {spent['plain'] / spent['galleonfs']:.2f}; galleonfs file syncs per append "
              f"{syncs / args.count:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
