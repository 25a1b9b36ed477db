"""Backups of a volume through galleond, end to end (issue 13). Not in CI.

    python benchmarks/backup_volume.py [--dir DIR] [--size-mib 512] [--no-s3]

A real galleond (``galleonfs.testing.daemon``), a volume mounted by a real worker, filled
with ``--size-mib`` of files (half random, half log-like text that zstd shrinks ~4x; 16
files), then, timed with the wall clock as a user sees it (``galleonctl``-equivalent API
calls):

* **full backup** to a directory target (``DIR/bench-target``) and to a moto S3 server on
  loopback (unless ``--no-s3``): MB/s of the volume's used bytes;
* **incremental after changing 1 %** of the bytes (64 KiB writes spread over the files):
  its time as a share of the full backup's, and the bytes it sent against those changed;
* **restore** of the incremental (every backup restores on its own) into a new volume:
  MB/s; the restored files are read back and compared;
* the baseline, in the same run: ``cp -a`` of the same tree from a plain directory on the
  same disk to another plain directory, then ``sync``.

The 1-minute load average is recorded before each part. Results also go to
``benchmarks/results/backup_volume-<time>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from galleonfs.backup.testing import start_moto  # noqa: E402
from galleonfs.rpc.client import Client  # noqa: E402
from galleonfs.testing.daemon import RunningDaemon  # noqa: E402

MiB = 1 << 20
KEY_ENV = "BENCH_BACKUP_KEY"
CRED = "BENCHS3"


def load() -> float:
    return os.getloadavg()[0]


def fill(root: Path, size: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    files = 16
    per = size // files
    words = [b"GET", b"/api/v1/items", b"200", b"user=alice", b"latency_ms=", b"INFO", b"WARN", b"\n"]
    for i in range(files):
        with open(root / f"f{i:02d}", "wb") as f:
            if i % 2:
                f.write(os.urandom(per))
            else:
                text = b" ".join(rng.choice(words) + str(rng.randrange(10**6)).encode() for _ in range(per // 8))
                f.write(text[:per])
            f.flush()
            os.fsync(f.fileno())


def change(root: Path, fraction: float) -> int:
    rng = random.Random(11)
    files = sorted(root.glob("f*"))
    total = sum(p.stat().st_size for p in files)
    chunks = int(total * fraction) // (64 * 1024)
    for _ in range(chunks):
        p = rng.choice(files)
        with open(p, "r+b") as f:
            f.seek(rng.randrange(0, p.stat().st_size - 65536) // 65536 * 65536)
            f.write(os.urandom(65536))
            os.fsync(f.fileno())
    return chunks * 65536


def digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("f*"))}


def backup(client: Client, volume: str, target: str) -> tuple[float, Any]:
    t0 = time.monotonic()
    events = list(client.create_backup(volume, target))
    return time.monotonic() - t0, events[-1].backup


def run_target(d: RunningDaemon, base: Path, kind: str, target_args: list[str], size: int) -> dict[str, Any]:
    out: dict[str, Any] = {"target": kind}
    name = f"t{kind}"
    assert d.ctl("backup-target", "create", name, *target_args, "--key-env", KEY_ENV).returncode == 0
    vol = f"v{kind}"
    mnt = base / vol
    mnt.mkdir()
    with Client(d.address, timeout_s=600) as c:
        c.create_volume(vol, 2 * size + 256 * MiB)
        c.mount_volume(vol, str(mnt))
        fill(mnt, size)
        expected_full = digest(mnt)
        out["load_before_full"] = load()
        secs, full = backup(c, vol, name)
        out.update(full_s=secs, full_mb_s=size / secs / 1e6, full_bytes_new=full.bytes_new)
        changed = change(mnt, 0.01)
        expected = digest(mnt)
        out["load_before_incremental"] = load()
        secs, incr = backup(c, vol, name)
        out.update(incremental_s=secs, incremental_share_of_full=secs / out["full_s"],
                   changed_bytes=changed, incremental_bytes_new=incr.bytes_new,
                   incremental_sent_over_changed=incr.bytes_new / changed)
        c.unmount_volume(name=vol)
        out["load_before_restore"] = load()
        t0 = time.monotonic()
        events = list(c.restore_backup(f"{vol}@{incr.id}", f"{vol}-r"))
        secs = time.monotonic() - t0
        assert events[-1].WhichOneof("event") == "volume"
        out.update(restore_s=secs, restore_mb_s=size / secs / 1e6)
        rmnt = base / f"{vol}-r"
        rmnt.mkdir()
        c.mount_volume(f"{vol}-r", str(rmnt))
        assert digest(rmnt) == expected and expected != expected_full
        c.unmount_volume(name=f"{vol}-r")
    return out


def baseline(base: Path, size: int) -> dict[str, Any]:
    src, dst = base / "plain-src", base / "plain-dst"
    src.mkdir()
    fill(src, size)
    subprocess.run(["sync"], check=True)
    out: dict[str, Any] = {"load_before_copy": load()}
    t0 = time.monotonic()
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    secs = time.monotonic() - t0
    out.update(copy_s=secs, copy_mb_s=size / secs / 1e6)
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MiB
    base = Path(tempfile.mkdtemp(prefix="backup-volume-bench-", dir=args.dir))
    results: dict[str, Any] = {"size_mib": args.size_mib, "cpus": os.cpu_count(), "parts": []}
    moto = None
    env = {KEY_ENV: "benchmark passphrase", f"{CRED}_ACCESS_KEY_ID": "testing",
           f"{CRED}_SECRET_ACCESS_KEY": "testing", "GALLEONFS_MOUNT_ROOTS": str(base)}
    (base / "node").mkdir()
    d = RunningDaemon(base / "node", env=env)
    d.start()
    try:
        results["parts"].append(baseline(base, size))
        results["parts"].append(run_target(d, base, "dir", [f"file://{base / 'bench-target'}"], size))
        if not args.no_s3:
            moto = start_moto(base / "moto.log")
            import boto3

            boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="bench")
            results["parts"].append(run_target(d, base, "s3", [
                "s3://bench/galleon", "--endpoint", moto.endpoint, "--region", "us-east-1",
                "--credentials-env", CRED], size))
    except BaseException:
        print(d.log()[-6000:], file=sys.stderr)       # what went wrong, from galleond's side
        raise
    finally:
        d.stop()
        d.cleanup()
        if moto is not None:
            moto.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=2))
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"backup_volume-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
