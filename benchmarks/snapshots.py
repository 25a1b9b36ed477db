"""Snapshots and clones: what they cost (issue 4). Not in CI.

    python -m benchmarks.snapshots [--dir DIR] [--runs 3] [--sizes small,medium,large] [--quick]

(as root; ``--dir`` on the disk to measure, default ``/var/tmp``). Everything runs on a
real galleond in ``DIR``; its volumes are mounted by real mount workers. Three parts:

* **create/delete latency by volume size.** Volumes of 100 MiB in 100 files, 2 GiB in
  20 000 files and 20 GiB in 200 000 files (``--sizes`` picks), created through galleond
  and filled in process through the VFS while unmounted (minutes instead of an hour
  through FUSE), then mounted. Create and delete are gRPC calls to galleond, as
  ``galleonctl`` makes them (less its Python start-up), forwarded to the mount worker, so
  the time includes flushing the kernel's dirty pages (``syncfs``) and the commit. Each
  delete comes after the same change (the first 64 KiB of 100 files rewritten), so it has
  the same history to drop at every size. The engine's own step (``snapshots.create`` in
  process, after unmounting) is shown too. DESIGN: O(1), the same milliseconds at every size.
* **live throughput with 0 and with 50 snapshots.** Two identical volumes with one 512 MiB
  file; one gets 50 snapshots, each after 8 MiB of that file was rewritten. Then,
  alternating the volumes: rewrite the whole file in 1 MiB writes + fsync (MB/s), read it
  cold (unmounted and mounted again, page cache dropped; MB/s) and create 2 000 small files
  in a directory that every snapshot holds (files/s). Target: within 10 %.
* **diff time.** A 100 000-file volume (4 KiB each, 100 directories) and, for scale, a
  1 000-file one: a snapshot, then 100 paths changed through the mount (20 created, 40
  modified, 20 deleted, 20 renamed), then ``snapshot diff`` of it against the live volume.
  DESIGN: cost proportional to the change, not to the volume.

The 1-minute load average is recorded with every part: other work on the machine shows up
there. Results also go to ``benchmarks/results/snapshots-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import drop_caches, machine  # noqa: E402
from galleonfs.engine import snapshots  # noqa: E402
from galleonfs.engine.engine import Engine  # noqa: E402
from galleonfs.rpc.client import Client  # noqa: E402
from galleonfs.testing.daemon import RunningDaemon  # noqa: E402
from galleonfs.vfs.vfs import ROOT_CTX, Vfs  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
BLOCK = 64 * 1024
# name: (bytes, files)
SIZES = {"small": (100 * MiB, 100), "medium": (2 * GiB, 20_000), "large": (20 * GiB, 200_000)}
FILES_PER_DIR = 1000
CHECKPOINT_EVERY_BYTES = 256 * MiB      # in-process fill: checkpoint this often
DELETE_CHANGE_FILES = 100


def load() -> float:
    return round(os.getloadavg()[0], 2)


def ms(values: list[float]) -> list[float]:
    return [round(x * 1000, 2) for x in values]


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# --- filling a volume in process -------------------------------------------------------------------
class Filler:
    """Writes unique blocks (a random 64 KiB buffer stamped with a counter: no dedup, and
    no cost of generating random bytes) through the VFS of an engine opened in process."""

    def __init__(self, volume_dir: str) -> None:
        self.engine = Engine.open(volume_dir)
        self.vfs = Vfs(self.engine, atime=False)
        self.pattern = bytearray(random.Random(1).randbytes(BLOCK))
        self.counter = 0
        self.since_checkpoint = 0

    def data(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            self.counter += 1
            self.pattern[:8] = self.counter.to_bytes(8, "little")
            out += self.pattern
        return bytes(out[:size])

    def mkdir(self, parent: int, name: str) -> int:
        inode = self.vfs.mkdir(parent, name.encode(), 0o755, ROOT_CTX)
        self.vfs.forget([(inode.ino, 1)])
        return inode.ino

    def file(self, parent: int, name: str, size: int) -> None:
        inode = self.vfs.create(parent, name.encode(), 0o644, ROOT_CTX)
        for offset in range(0, size, 16 * BLOCK):
            self.vfs.write(inode.ino, offset, self.data(min(16 * BLOCK, size - offset)))
        self.vfs.release(inode.ino)
        self.vfs.forget([(inode.ino, 1)])
        self.since_checkpoint += size + 4096
        if self.since_checkpoint >= CHECKPOINT_EVERY_BYTES:
            self.engine.checkpoint()
            self.since_checkpoint = 0

    def close(self) -> None:
        self.engine.close()


class Node:
    """A galleond on the benchmark's directory, and the volumes made on it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        (base / "node").mkdir()
        self.daemon = RunningDaemon(base / "node").start()
        self.client = Client(self.daemon.address, timeout_s=600)

    def close(self) -> None:
        self.client.close()
        self.daemon.cleanup()

    def make_volume(self, name: str, size: int, files: int, *, file_size: int | None = None) -> float:
        """Create through galleond, then fill ``files`` files of ``size / files`` bytes (in
        directories of 1000) in process while it is unmounted; return the fill time."""
        per_file = file_size if file_size is not None else size // files
        quota = 2 * max(size, GiB)
        volume = self.client.create_volume(name, quota)
        started = time.perf_counter()
        filler = Filler(str(self.daemon.data_dir / "volumes" / volume.id))
        parent = 1
        for i in range(files):
            if i % FILES_PER_DIR == 0:
                parent = filler.mkdir(1, f"d{i // FILES_PER_DIR:04d}")
            filler.file(parent, f"f{i:07d}", per_file)
        filler.close()
        return time.perf_counter() - started

    def volume_dir(self, name: str) -> Path:
        return self.daemon.data_dir / "volumes" / self.client.get_volume(name).id

    def mount(self, name: str) -> Path:
        path = self.base / "mnt" / name
        self.client.mount_volume(name, str(path))
        return path

    def unmount(self, name: str) -> None:
        self.client.unmount_volume(name=name)

    def delete(self, name: str) -> None:
        self.client.delete_volume(name, force=True)


def change_files(paths: list[Path], length: int = BLOCK) -> None:
    for path in paths:
        with open(path, "r+b") as f:
            f.write(os.urandom(min(length, max(1, path.stat().st_size))))
    os.sync()


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- part 1: create and delete latency by size -------------------------------------------------------
REFERENCE = "lat-ref"          # a 1 MiB, 1-file volume, measured in turn with every size
SETTLE_S = 20.0                # after a fill: let the disk write back before measuring


def latency(node: Node, size_name: str, runs: int) -> dict[str, Any]:
    """Create and delete on the sized volume, each right after the same call on the small
    reference volume: the ratio of the two cancels the drift of a busy machine."""
    size, files = SIZES[size_name]
    name = f"lat-{size_name}"
    fill_s = node.make_volume(name, size, files)
    print(f"  {size_name}: filled {size / GiB:.2f} GiB in {files} files in {fill_s:.0f} s", flush=True)
    os.sync()
    time.sleep(SETTLE_S)
    mnt = node.mount(name)
    ref = node.base / "mnt" / REFERENCE
    all_files = sorted(p for d in sorted(mnt.iterdir()) for p in d.iterdir())
    ref_files = sorted(p for d in sorted(ref.iterdir()) for p in d.iterdir())
    rng = random.Random(2)
    times: dict[str, list[float]] = {"create": [], "delete": [], "ref_create": [], "ref_delete": []}
    freed, engine_create = [], []
    load_before = load()
    for i in range(max(runs, 5)):
        for volume, files_, key in ((REFERENCE, ref_files, "ref_"), (name, all_files, "")):
            times[key + "create"].append(timed(lambda v=volume, i=i: node.client.create_snapshot(v, f"s{i}")))
            change_files(rng.sample(files_, min(DELETE_CHANGE_FILES, len(files_))))
            started = time.perf_counter()
            reply = node.client.delete_snapshot(volume, f"s{i}")
            times[key + "delete"].append(time.perf_counter() - started)
            if not key:
                freed.append(reply.freed_bytes)
    node.unmount(name)
    vol = node.volume_dir(name)
    engine = Engine.open(str(vol))           # the engine's own step, without syncfs and commit
    try:
        for i in range(max(runs, 5)):
            engine_create.append(timed(lambda i=i: snapshots.create(engine, f"e{i}")))
            snapshots.delete(engine, f"e{i}")
    finally:
        engine.close()
    result: dict[str, Any] = {"size": size_name, "bytes": size, "files": files, "fill_s": round(fill_s, 1),
                              "disk_bytes": disk_bytes(vol)}
    for what in ("create", "delete"):
        result[f"{what}_ms"] = median_ms(times[what])
        result[f"ref_{what}_ms"] = median_ms(times["ref_" + what])
        result[f"{what}_vs_ref"] = round(statistics.median(
            x / r for x, r in zip(times[what], times["ref_" + what], strict=True)), 2)
        result[f"{what}_ms_all"] = ms(times[what])
        result[f"ref_{what}_ms_all"] = ms(times["ref_" + what])
    result.update({"engine_create_ms": median_ms(engine_create), "freed_bytes_median": statistics.median(freed),
                   "load_1m": [load_before, load()]})
    node.delete(name)
    return result


# --- part 2: live throughput with 0 and 50 snapshots -----------------------------------------------
def rewrite(path: Path, size: int) -> float:
    block = os.urandom(MiB)
    started = time.perf_counter()
    with open(path, "r+b", buffering=0) as f:
        for _ in range(size // MiB):
            f.write(block)
        os.fsync(f.fileno())
    return size / MiB / (time.perf_counter() - started)


def read_cold(node: Node, name: str, size: int) -> float:
    node.unmount(name)
    drop_caches()
    mnt = node.mount(name)
    started = time.perf_counter()
    with open(mnt / "d0000" / "f0000000", "rb", buffering=0) as f:
        while f.read(MiB):
            pass
    return size / MiB / (time.perf_counter() - started)


def small_files(directory: Path, count: int) -> float:
    target = directory / f"batch-{time.monotonic_ns()}"
    target.mkdir()
    started = time.perf_counter()
    for i in range(count):
        with open(target / f"f{i}", "wb") as f:
            f.write(b"x" * 100)
    return count / (time.perf_counter() - started)


def throughput(node: Node, runs: int, file_size: int, snaps: int) -> dict[str, Any]:
    names = {0: "tp-0", snaps: f"tp-{snaps}"}
    for count, name in names.items():
        node.make_volume(name, file_size, 1, file_size=file_size)
        mnt = node.mount(name)
        (mnt / "small").mkdir()
        data = mnt / "d0000" / "f0000000"
        rng = random.Random(3)
        for i in range(count):
            with open(data, "r+b") as f:
                f.seek(rng.randrange(0, file_size - 8 * MiB) // BLOCK * BLOCK)
                f.write(os.urandom(8 * MiB))
            node.client.create_snapshot(name, f"s{i:02d}")
    out: dict[str, dict[int, list[float]]] = {"rewrite_mb_s": {}, "read_cold_mb_s": {}, "small_files_per_s": {}}
    load_before = load()
    for _ in range(runs):
        for count, name in names.items():
            mnt = node.base / "mnt" / name
            out["rewrite_mb_s"].setdefault(count, []).append(rewrite(mnt / "d0000" / "f0000000", file_size))
            out["read_cold_mb_s"].setdefault(count, []).append(read_cold(node, name, file_size))
            out["small_files_per_s"].setdefault(count, []).append(small_files(mnt / "small", 2000))
    result: dict[str, Any] = {"snapshots": snaps, "file_bytes": file_size, "load_1m": [load_before, load()]}
    for metric, by_count in out.items():
        none, many = statistics.median(by_count[0]), statistics.median(by_count[snaps])
        # Each run measures both volumes back to back, so the ratio within a run is the
        # fairer estimate on a machine whose load drifts: their median is reported too.
        paired = statistics.median(m / n for n, m in zip(by_count[0], by_count[snaps], strict=True))
        result[metric] = {"0": round(none, 1), str(snaps): round(many, 1), "ratio": round(many / none, 3),
                          "ratio_paired": round(paired, 3),
                          "all": {str(k): [round(x, 1) for x in v] for k, v in by_count.items()}}
    for name in names.values():
        node.delete(name)
    return result


# --- part 3: diff time ------------------------------------------------------------------------------
def diff_time(node: Node, files: int, runs: int) -> dict[str, Any]:
    name = f"diff-{files}"
    fill_s = node.make_volume(name, files * 4096, files, file_size=4096)
    print(f"  diff: filled {files} files in {fill_s:.0f} s", flush=True)
    root = node.mount(name)
    paths = sorted(p for d in sorted(root.iterdir()) for p in d.iterdir())
    chosen = random.Random(4).sample(paths, 80)
    node.client.create_snapshot(name, "before")
    for i in range(20):
        (paths[0].parent / f"new{i}").write_bytes(b"new")
    change_files(chosen[:40], 4096)
    for p in chosen[40:60]:
        p.unlink()
    for i, p in enumerate(chosen[60:80]):
        p.rename(p.parent / f"renamed{i}")
    os.sync()
    times, entries = [], 0
    load_before = load()
    for _ in range(max(runs, 5)):
        started = time.perf_counter()
        entries = len(node.client.diff_snapshots(name, "before"))
        times.append(time.perf_counter() - started)
    node.delete(name)
    return {"files": files, "changed": 100, "entries": entries, "diff_ms": median_ms(times),
            "diff_ms_all": ms(times), "fill_s": round(fill_s, 1), "load_1m": [load_before, load()]}


# --- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp", help="where galleond and its volumes go (the disk to measure)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--snapshots", type=int, default=50)
    parser.add_argument("--diff-files", type=int, default=100_000)
    parser.add_argument("--only", choices=["latency", "throughput", "diff"], action="append")
    parser.add_argument("--quick", action="store_true", help="small sizes, for trying the script")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/snapshots.py: run as root (mounts, drop_caches)", file=sys.stderr)
        return 2
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        print(f"benchmarks/snapshots.py: unknown size {unknown[0]!r}; use {', '.join(SIZES)}", file=sys.stderr)
        return 2
    file_size = 512 * MiB
    if args.quick:
        sizes, file_size, args.snapshots, args.diff_files = ["small"], 64 * MiB, 5, 2000
    base = Path(tempfile.mkdtemp(prefix="galleonfs-snapbench-", dir=args.dir))
    parts = args.only or ["latency", "throughput", "diff"]
    results: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "args": vars(args)}
    node = Node(base)
    try:
        if "latency" in parts:
            node.make_volume(REFERENCE, MiB, 1)
            node.mount(REFERENCE)
            results["latency"] = [step(f"latency {s}", lambda s=s: latency(node, s, args.runs)) for s in sizes]
            node.delete(REFERENCE)
        if "throughput" in parts:
            results["throughput"] = step("throughput", lambda: throughput(node, args.runs, file_size, args.snapshots))
        if "diff" in parts:
            results["diff"] = [step(f"diff {n}", lambda n=n: diff_time(node, n, args.runs))
                               for n in (1000, args.diff_files)]
    finally:
        node.close()
        shutil.rmtree(base, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / f"snapshots-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")
    return 0


def step(what: str, fn: Callable[[], Any]) -> Any:
    print(f"{what} ...", flush=True)
    started = time.perf_counter()
    result = fn()
    print(f"{what}: {json.dumps(result)} ({time.perf_counter() - started:.0f} s)", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
