"""Commit latency by what the commit had to make durable: plain, new zeros, a preallocation.

In process, 3 000 x (VFS write of 4 KiB at the end of a file + the commit an fsync waits
for), on a 64 KiB-block volume. Each commit is classed by what its append did to the
journal file: nothing but a record (``plain``), a top-up of the zeros written ahead
(``zeros``: 1 MiB more file to sync, and its new size), or an fallocate ahead
(``prealloc``). Shows what the zeros ahead buy (the plain commit) and cost (the top-up).

    python -m benchmarks.commit_kinds [--zero-ahead BYTES] [--count 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from galleonfs import limits
from galleonfs.engine.engine import Engine
from galleonfs.storage import File
from galleonfs.vfs.vfs import ROOT_CTX, Vfs

events = {"prealloc": 0, "zeros": 0}
_preallocate, _append = File.preallocate, File.append


def _counting_preallocate(self: File, length: int) -> bool:
    events["prealloc"] += 1
    return _preallocate(self, length)


def _counting_append(self: File, bufs: Sequence[bytes | bytearray | memoryview]) -> int:
    if self.path.endswith(".wal") and len(bufs) == 1 and not bytes(bufs[0]).strip(b"\0"):
        events["zeros"] += 1
    return _append(self, bufs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zero-ahead", type=int, default=limits.journal_zero_ahead_bytes)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    limits.journal_zero_ahead_bytes = args.zero_ahead
    File.preallocate = _counting_preallocate          # type: ignore[method-assign]
    File.append = _counting_append                    # type: ignore[method-assign]
    root = Path(__file__).resolve().parent.parent / "bench-data"
    root.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix="commit-kinds-"))
    try:
        Engine.create(str(scratch / "vol"), size=8 << 30)
        engine = Engine.open(str(scratch / "vol"))
        vfs = Vfs(engine, atime=False)
        ino = vfs.create(1, b"log", 0o644, ROOT_CTX).ino
        data = os.urandom(4096)
        rows: list[tuple[str, float]] = []
        for i in range(args.count):
            before = dict(events)
            engine.check_writable()
            vfs.write(ino, i * 4096, data)
            start = time.perf_counter()
            batch = engine.begin_commit()
            batch.run()
            engine.end_commit(batch)
            took = time.perf_counter() - start
            kind = ("prealloc" if events["prealloc"] > before["prealloc"]
                    else "zeros" if events["zeros"] > before["zeros"] else "plain")
            rows.append((kind, took))
        vfs.release(ino)
        engine.close()
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"zero ahead {args.zero_ahead} bytes, {args.count} commits, load average {load}")
        for kind in ("plain", "zeros", "prealloc"):
            took = sorted(t for k, t in rows if k == kind)
            if took:
                print(f"  {kind:9} {len(took):5}  median {statistics.median(took) * 1e3:.3f} ms  "
                      f"p90 {took[int(len(took) * 0.9)] * 1e3:.3f} ms  max {took[-1] * 1e3:.2f} ms")
        every = sorted(t for _, t in rows)
        print(f"  all       {len(every):5}  median {statistics.median(every) * 1e3:.3f} ms  "
              f"p99 {every[int(len(every) * 0.99)] * 1e3:.3f} ms")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
