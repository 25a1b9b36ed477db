"""The backup repository alone: throughput and request counts (issue 13). Not in CI.

    python benchmarks/backup_repo.py [--dir DIR] [--size-mib 1024] [--threads 8] [--no-s3]
                                     [--restic]

What a volume's backup will cost once the volume side feeds the repository, without the
volume: ``--size-mib`` of 64 KiB blocks, half random and half compressible (log-like text,
zstd shrinks it ~4x), every block distinct (no dedup helps), one 40-byte record per block
referencing it, as the volume's extent records will. For each target (the directory
``DIR/backup-bench`` and a local moto S3 server started on loopback):

* **full backup**: blocks hashed (keyed BLAKE3, the volume's cost), compressed, encrypted,
  packed and stored; MB/s of raw block bytes;
* **incremental after changing 1 %** of the blocks (spread over the volume): its time as a
  share of the full backup's, and the bytes it stored against the bytes changed;
* **restore**: every record and every block read back and verified (``BackupReader.walk``);
* S3 requests per GiB backed up (every HTTP request boto3 sends, counted by an event hook).

``--restic`` (needs ``restic`` on PATH, Debian's package) also writes the same blocks as
16 files under ``DIR``, and times ``restic backup`` of that tree to a restic repository in
``DIR`` against this repository backing up the same files (read in 64 KiB blocks) to a
directory target, both from a warm page cache; restic also chunks and hashes the files
itself, which a volume's backup never has to (its blocks and ids exist already).

moto keeps objects in its own Python process, so the S3 numbers measure moto as much as the
client; the directory numbers are the repository's own. The 1-minute load average is
recorded before each part: other work on the machine shows up there. Results also go to
``benchmarks/results/backup_repo-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import blake3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from galleonfs.backup import (  # noqa: E402
    DirectoryTarget,
    Repository,
    RepositoryKey,
    Target,
    begin_backup,
    open_backup,
)
from galleonfs.backup.s3 import S3Target  # noqa: E402
from galleonfs.backup.testing import start_moto  # noqa: E402

MiB = 1 << 20
BLOCK = 64 * 1024
FAMILY_KEY = b"bench-family-key-32-bytes-long!!"
KEY = RepositoryKey.from_key(b"bench-repository-key-32-bytes!!!")


class Blocks:
    """Distinct 64 KiB blocks: even numbers random, odd numbers log-like text."""

    def __init__(self, count: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(2000)]
        lines = []
        for i in range(40000):
            lines.append(b"2026-12-04T02:%02d:%02d host%d %s %s\n" % (
                i % 60, i % 59, i % 7, rng.choice(words), b" ".join(rng.choices(words, k=6))))
        self.text = b"".join(lines)
        self.count = count
        self.version: dict[int, int] = {}

    def data(self, i: int) -> bytes:
        tag = struct.pack("<QQ", i, self.version.get(i, 0))
        if i % 2 == 0:
            return tag + os.urandom(BLOCK - len(tag))
        off = (i * 7919 + self.version.get(i, 0) * 104729) % (len(self.text) - BLOCK)
        return tag + self.text[off:off + BLOCK - len(tag)]


def run_backup(repo: Repository, blocks: Blocks, which: list[int], parent: str | None,
               generation: int) -> tuple[Any, float]:
    started = time.perf_counter()
    with begin_backup(repo, volume_name="bench", volume_id="bench-1", generation=generation,
                      parent=parent) as w:
        for i in which:
            data = blocks.data(i)
            bid = blake3.blake3(data, key=FAMILY_KEY).digest()
            if not w.has_blob(bid):
                w.put_blob(bid, data)
            w.put_record(struct.pack(">Q", i), b"x" * 40, [bid])
        info = w.commit()
    return info, time.perf_counter() - started


def run_restore(repo: Repository, backup_id: str) -> tuple[int, float]:
    started = time.perf_counter()
    got = 0
    with open_backup(repo, backup_id) as r:
        for _records, blobs in r.walk():
            got += sum(len(d) for _k, d in blobs.values())
    return got, time.perf_counter() - started


def measure(name: str, target: Target, size: int, threads: int, requests: Counter[str] | None) -> dict[str, Any]:
    count = size // BLOCK
    blocks = Blocks(count)
    out: dict[str, Any] = {"target": name, "bytes": count * BLOCK, "threads": threads}
    with Repository.init(target, KEY, pool_threads=threads) as repo:
        out["load_before_full"] = os.getloadavg()[0]
        if requests is not None:
            requests.clear()
        full, t_full = run_backup(repo, blocks, list(range(count)), None, 1)
        out["full_s"] = t_full
        out["full_MBps"] = count * BLOCK / t_full / 1e6
        out["full_stored_bytes"] = full.stats["bytes_stored"]
        if requests is not None:
            out["full_requests"] = dict(requests)
            out["requests_per_GiB"] = sum(requests.values()) / (count * BLOCK / (1 << 30))
        changed = sorted(random.Random(2).sample(range(count), max(1, count // 100)))
        for i in changed:
            blocks.version[i] = 1
        out["load_before_incremental"] = os.getloadavg()[0]
        if requests is not None:
            requests.clear()
        incr, t_incr = run_backup(repo, blocks, changed, full.backup_id, 2)
        out["incremental_s"] = t_incr
        out["incremental_share_of_full"] = t_incr / t_full
        out["incremental_changed_bytes"] = len(changed) * BLOCK
        out["incremental_stored_bytes"] = incr.stats["bytes_stored"]
        out["incremental_stored_over_changed"] = incr.stats["bytes_stored"] / (len(changed) * BLOCK)
        if requests is not None:
            out["incremental_requests"] = sum(requests.values())
        out["load_before_restore"] = os.getloadavg()[0]
        if requests is not None:
            requests.clear()
        got, t_restore = run_restore(repo, incr.backup_id)
        assert got == count * BLOCK, (got, count * BLOCK)
        out["restore_s"] = t_restore
        out["restore_MBps"] = got / t_restore / 1e6
        if requests is not None:
            out["restore_requests"] = sum(requests.values())
    return out


def compare_restic(base: Path, size: int, threads: int) -> dict[str, Any]:
    """restic backup of a tree against this repository backing up the same files."""
    count = size // BLOCK
    blocks = Blocks(count)
    tree = base / "tree"
    tree.mkdir(parents=True)
    files = 16
    per_file = count // files
    for f in range(files):
        with open(tree / f"file{f:02d}", "wb") as out:
            for i in range(f * per_file, (f + 1) * per_file):
                out.write(blocks.data(i))
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(base / "restic")}
    subprocess.run(["restic", "init", "--quiet"], env=env, check=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(["restic", "backup", "--quiet", str(tree)], env=env, check=True)
    t_restic = time.perf_counter() - started
    ours_target = DirectoryTarget(base / "ours", create=True)
    with Repository.init(ours_target, KEY, pool_threads=threads) as repo:
        started = time.perf_counter()
        with begin_backup(repo, volume_name="bench", volume_id="bench-1", generation=1) as w:
            for f in range(files):
                with open(tree / f"file{f:02d}", "rb") as src:
                    n = 0
                    while data := src.read(BLOCK):
                        bid = blake3.blake3(data, key=FAMILY_KEY).digest()
                        if not w.has_blob(bid):
                            w.put_blob(bid, data)
                        w.put_record(struct.pack(">QQ", f, n), b"x" * 40, [bid])
                        n += 1
            w.commit()
        t_ours = time.perf_counter() - started
    total = files * per_file * BLOCK
    return {"bytes": total, "load_before": load, "restic_s": t_restic,
            "restic_MBps": total / t_restic / 1e6, "ours_s": t_ours, "ours_MBps": total / t_ours / 1e6,
            "ours_over_restic_speed": t_restic / t_ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--restic", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MiB
    results = []
    scratch = Path(args.dir) / "backup-bench"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        results.append(measure("directory", DirectoryTarget(scratch / "repo", create=True), size,
                               args.threads, None))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not args.no_s3:
        scratch.mkdir(parents=True)
        server = start_moto(scratch / "moto.log")
        try:
            os.environ.setdefault("BENCH_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("BENCH_SECRET_ACCESS_KEY", "testing")
            target = S3Target("bench", "repo", endpoint=server.endpoint, region="us-east-1",
                              credentials_env="BENCH")
            target.client.create_bucket(Bucket="bench")
            requests: Counter[str] = Counter()
            target.client.meta.events.register(
                "before-send.s3", lambda request, **_kw: requests.update([request.method]))
            results.append(measure("s3 (moto on loopback)", target, size, args.threads, requests))
        finally:
            server.stop()
            shutil.rmtree(scratch, ignore_errors=True)
    report: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
                              "results": results}
    if args.restic:
        try:
            report["restic"] = compare_restic(scratch, size, args.threads)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report, indent=2))
    out = ROOT / "benchmarks" / "results" / f"backup_repo-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
