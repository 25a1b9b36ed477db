"""Encryption and compression: what they cost through a real mount (issue 5). Not in CI.

    python benchmarks/crypto.py [--dir DIR] [--runs 3] [--quick]      (as root, with fio)

Three volumes on the same disk, made and mounted with the standalone ``galleonfs`` tool,
identical but for one setting: ``plain`` (no encryption, no compression), ``encrypted``
(``--encrypt --key-file``, AES-256-GCM) and ``lz4`` (``--compression lz4``). Each run
measures every volume in turn (so drift in the machine hits all three alike):

* sequential write of 1 GiB of random bytes in 1 MiB writes, then fsync;
* cold sequential read of it (unmount, drop the page cache, mount again: the worker's
  block cache and the kernel's page cache are both empty);
* fio 4 KiB random writes, O_DIRECT, psync, iodepth 1, on a 256 MiB file;
* cold fio 4 KiB random reads on it (remounted and dropped first, like the sequential read).

All data is incompressible (``os.urandom``, fio's ``refill_buffers``): lz4 finds nothing to
gain, so its row is its pure cost. Medians of ``--runs`` runs; ratios are encrypted/plain
and lz4/plain. Before the mounts, the raw per-64 KiB-block cost of AES-256-GCM, lz4 and the
engine's ``BlockCodec`` is measured in this process, as the floor the mounts cannot beat.
The 1-minute load average is recorded around every measurement: other work on the machine
shows up there. Results also go to ``benchmarks/results/crypto-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import drop_caches, machine, read_through  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
BLOCK = 64 * 1024
VARIANTS = {                     # name: mkfs arguments beyond the size
    "plain": [],
    "encrypted": ["--encrypt"],
    "lz4": ["--compression", "lz4"],
}
# (benchmark, unit, target for encrypted/plain, target for lz4/plain); higher is better.
BENCHES = [
    ("seq_write_1g_fsync", "MB/s", 0.90, 0.95),
    ("seq_read_cold", "MB/s", 0.90, 0.95),
    ("fio_randwrite_4k_direct", "IOPS", 0.85, 0.95),
    ("fio_randread_4k_cold_direct", "IOPS", 0.85, 0.95),
]
CPU_UNIT = {"seq_write_1g_fsync": "ms/MiB", "seq_read_cold": "ms/MiB",
            "fio_randwrite_4k_direct": "us/IO", "fio_randread_4k_cold_direct": "us/IO"}


def galleonfs(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonfs", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"galleonfs {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


class Volume:
    """One volume directory and its mount point, driven by the ``galleonfs`` tool."""

    def __init__(self, base: Path, name: str, mkfs_args: list[str], key_file: Path) -> None:
        self.name = name
        self.dir = base / name / "vol"
        self.mnt = base / name / "mnt"
        self.mnt.mkdir(parents=True)
        self.key_args = ["--key-file", str(key_file)] if "--encrypt" in mkfs_args else []
        galleonfs("mkfs", str(self.dir), "--size", "64G", *mkfs_args, *self.key_args)
        self.mounted = False

    def mount(self) -> None:
        galleonfs("mount", str(self.dir), str(self.mnt), *self.key_args)
        self.mounted = True
        self.pid = worker_pid(self.dir)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the mount worker has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def umount(self) -> None:
        if self.mounted:
            galleonfs("umount", str(self.mnt))
            self.mounted = False

    def cold(self) -> None:
        """Empty every cache between the application and the disk."""
        self.umount()
        drop_caches()
        self.mount()


def worker_pid(volume_dir: Path) -> int:
    """The mount worker serving ``volume_dir``, found by its command line."""
    wanted = str(volume_dir).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"galleonfs.fuse.worker" in argv and wanted in argv:
                return int(entry)
    raise SystemExit(f"no mount worker found for {volume_dir}")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def settle() -> None:
    """Before each measurement: write back what the previous one left dirty, drop the page
    cache and let the disk go idle, so that no variant pays for another's writeback."""
    os.sync()
    drop_caches()
    time.sleep(2)


def seq_write(vol: Volume, size: int) -> tuple[float, float]:
    """(MB/s, worker CPU ms per MiB) writing ``size`` random bytes, then fsync."""
    block = os.urandom(MiB)
    path = vol.mnt / "seq.bin"

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i in range(size // MiB):
                os.write(fd, block[i % 4096:] + block[: i % 4096])   # no two blocks alike
            os.fsync(fd)
        finally:
            os.close(fd)
    cpu = vol.cpu_s()
    seconds = timed(run)
    return size / MiB / seconds, (vol.cpu_s() - cpu) * 1e3 / (size / MiB)


def seq_read_cold(vol: Volume, size: int) -> tuple[float, float]:
    """(MB/s, worker CPU ms per MiB) reading it back with every cache empty."""
    vol.cold()
    path = vol.mnt / "seq.bin"
    assert path.stat().st_size == size
    cpu = vol.cpu_s()
    seconds = timed(lambda: read_through(path))
    return size / MiB / seconds, (vol.cpu_s() - cpu) * 1e3 / (size / MiB)


def fio(vol: Volume, rw: str, size_mb: int, runtime_s: int) -> tuple[float, float]:
    """(IOPS, worker CPU us per I/O) of fio 4 KiB ``rw``, O_DIRECT, psync, iodepth 1."""
    path = vol.mnt / "fio.bin"
    if not path.exists() or path.stat().st_size != size_mb * MiB:
        subprocess.run(["fio", "--name=prep", f"--filename={path}", "--rw=write", "--bs=1M",
                        f"--size={size_mb}M", "--refill_buffers", "--end_fsync=1"],
                       check=True, capture_output=True)
    if "read" in rw:
        vol.cold()
    cpu = vol.cpu_s()
    done = subprocess.run(
        ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", "--bs=4k", f"--size={size_mb}M",
         "--ioengine=psync", "--iodepth=1", "--direct=1", f"--runtime={runtime_s}", "--time_based",
         "--refill_buffers", "--randrepeat=0", "--output-format=json"],
        check=True, capture_output=True, text=True)
    job = json.loads(done.stdout)["jobs"][0]["write" if "write" in rw else "read"]
    return float(job["iops"]), (vol.cpu_s() - cpu) * 1e6 / max(1, int(job["total_ios"]))


# --- the floor: per-block costs in this process --------------------------------------------------
def per_block_us(fn: Callable[[], object], n: int) -> float:
    """The best of 20 short loops: on a shared 2-core machine a long loop is always preempted."""
    fn()
    loop = max(1, n // 20)

    def run() -> None:
        for _ in range(loop):
            fn()          # results dropped at once, as the engine does: no page faults for fresh memory
    return min(timed(run) for _ in range(20)) / loop * 1e6


def floor(n: int) -> dict[str, float]:
    """Microseconds per 64 KiB block of incompressible data, best of 3 loops of ``n``."""
    import lz4.block
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from galleonfs.crypto.codec import BlockCodec, VolumeCrypto
    from galleonfs.engine import frames

    data = os.urandom(BLOCK)
    block_id = os.urandom(32)
    aead = AESGCM(os.urandom(32))
    nonce, aad = os.urandom(12), os.urandom(16 + 37)
    sealed = aead.encrypt(nonce, data, aad)
    crypto = VolumeCrypto(os.urandom(16), {1: os.urandom(32)}, 1, names_key=os.urandom(32))
    codecs = {"none": BlockCodec("none"), "encrypted": BlockCodec("none", crypto),
              "lz4": BlockCodec("lz4")}
    out = {
        "aes_gcm_encrypt": per_block_us(lambda: aead.encrypt(nonce, data, aad), n),
        "aes_gcm_decrypt": per_block_us(lambda: aead.decrypt(nonce, sealed, aad), n),
        "lz4_compress_incompressible": per_block_us(lambda: lz4.block.compress(data, store_size=False), n),
        "copy_64k (bytes(memoryview))": per_block_us(lambda: bytes(memoryview(data)), n),
    }
    for name, codec in codecs.items():
        flags, payload, frame_nonce, epoch = codec.pack(block_id, data)
        header = frames.FrameHeader(flags, epoch, len(payload), BLOCK, block_id, frame_nonce, 0)
        view = memoryview(bytes(payload))
        out[f"codec_pack_{name}"] = per_block_us(lambda c=codec: c.pack(block_id, data), n)
        out[f"codec_unpack_{name}"] = per_block_us(
            lambda c=codec, h=header, v=view: c.unpack(h, v, "bench"), n)
    return out


def engine_cpu(base: Path, size: int, runs: int) -> dict[str, dict[str, float]]:
    """Median CPU ms per MiB of the engine alone (VFS calls in this process, no FUSE, no
    kernel round trips): writing ``size`` random bytes in 1 MiB writes and committing, then
    reading them back after reopening (empty block cache). Process CPU time barely depends
    on what else runs on the machine, unlike throughput."""
    from galleonfs.crypto.keys import KeyFile
    from galleonfs.engine.engine import Engine
    from galleonfs.vfs.vfs import Ctx, Vfs

    block = os.urandom(MiB)
    samples: dict[str, dict[str, list[float]]] = {v: {"write": [], "read": []} for v in VARIANTS}
    for _ in range(runs):
        for name, mkfs in VARIANTS.items():
            path = str(base / f"engine-{name}")
            shutil.rmtree(path, ignore_errors=True)
            keys = KeyFile(str(base / "kek")) if "--encrypt" in mkfs else None
            Engine.create(path, size=8 * GiB, keys=keys,
                          compression="lz4" if "lz4" in mkfs else "none")
            vfs = Vfs(Engine.open(path, keys=keys))
            ino = vfs.create(1, b"f", 0o644, Ctx(0, 0)).ino
            cpu = time.process_time()
            for i in range(size // MiB):
                vfs.write(ino, i * MiB, block[i % 4096:] + block[: i % 4096])
            vfs.engine.commit()
            samples[name]["write"].append((time.process_time() - cpu) * 1e3 / (size / MiB))
            vfs.release(ino)
            vfs.engine.close()
            vfs = Vfs(Engine.open(path, keys=keys))
            cpu = time.process_time()
            for i in range(size // MiB):
                vfs.read(ino, i * MiB, MiB)
            samples[name]["read"].append((time.process_time() - cpu) * 1e3 / (size / MiB))
            vfs.engine.close()
            shutil.rmtree(path)
    return {v: {op: statistics.median(xs) for op, xs in ops.items()} for v, ops in samples.items()}


# --- the run -------------------------------------------------------------------------------------
def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(ROOT / "bench-data" / "crypto"),
                        help="scratch directory on the disk to measure (default ./bench-data/crypto)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    if os.getuid() != 0:
        raise SystemExit("run as root: cold runs drop the page cache")
    if shutil.which("fio") is None:
        raise SystemExit("fio is missing: apt-get install -y fio")
    seq_size = (128 if args.quick else 1024) * MiB
    fio_mb, fio_s = (32, 3) if args.quick else (256, 15)

    print("floor: per 64 KiB block, in-process ...", flush=True)
    floor_us = floor(200 if args.quick else 2000)
    for name, us in floor_us.items():
        print(f"  {name:36} {us:8.1f} us  ({BLOCK / us:7.0f} MB/s)")

    scratch = Path(args.dir)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    key_file = scratch / "kek"
    print("engine CPU per MiB, in-process (no FUSE) ...", flush=True)
    engine_ms = engine_cpu(scratch, (64 if args.quick else 256) * MiB, args.runs)
    for name, ops in engine_ms.items():
        print(f"  {name:9} write {ops['write']:6.3f} ms/MiB   read {ops['read']:6.3f} ms/MiB")
    vols = {name: Volume(scratch, name, mkfs, key_file) for name, mkfs in VARIANTS.items()}
    results: dict[str, dict[str, list[float]]] = {b: {v: [] for v in vols} for b, *_ in BENCHES}
    cpu: dict[str, dict[str, list[float]]] = {b: {v: [] for v in vols} for b, *_ in BENCHES}
    loads: list[float] = []
    fns: dict[str, Callable[[Volume], tuple[float, float]]] = {
        "seq_write_1g_fsync": lambda v: seq_write(v, seq_size),
        "seq_read_cold": lambda v: seq_read_cold(v, seq_size),
        "fio_randwrite_4k_direct": lambda v: fio(v, "randwrite", fio_mb, fio_s),
        "fio_randread_4k_cold_direct": lambda v: fio(v, "randread", fio_mb, fio_s),
    }
    try:
        for vol in vols.values():
            vol.mount()
        for run in range(args.runs):
            # Each run starts with another variant: whichever goes last pays for the dirty
            # pages and page-cache reclaim the others left (seen as 2-3x worker CPU on lz4
            # when the order was fixed plain, encrypted, lz4).
            order = list(vols.values())
            order = order[run % len(order):] + order[:run % len(order)]
            for bench, unit, *_ in BENCHES:
                for vol in order:
                    settle()
                    loads.append(loadavg())
                    value, cost = fns[bench](vol)
                    loads.append(loadavg())
                    results[bench][vol.name].append(value)
                    cpu[bench][vol.name].append(cost)
                    print(f"  run {run + 1} {bench:28} {vol.name:9} {value:9.1f} {unit}  worker CPU "
                          f"{cost:7.2f} {CPU_UNIT[bench]}  (load {loads[-1]:.2f})", flush=True)
    finally:
        for vol in vols.values():
            vol.umount()
    report(results, cpu, floor_us, engine_ms, loads, args)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio >= target else f"missed by {(target - ratio) / target:.0%}"


def report(results: dict[str, dict[str, list[float]]], cpu: dict[str, dict[str, list[float]]],
           floor_us: dict[str, float], engine_ms: dict[str, dict[str, float]], loads: list[float],
           args: argparse.Namespace) -> None:
    info = machine()
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['memory']}, kernel {info['kernel']}, "
          f"disk {info['disk']}; load average (1 min) during the run: median "
          f"{statistics.median(loads):.2f}, max {max(loads):.2f}")
    header = (f"{'benchmark':30} {'plain':>9} {'encrypted':>9} {'lz4':>9}  {'enc/plain':>9} "
              f"{'target':>6} {'verdict':14} {'lz4/plain':>9} {'target':>6} verdict")
    print(header)
    print("-" * len(header))
    rows = []
    for bench, unit, enc_target, lz4_target in BENCHES:
        med = {v: statistics.median(xs) for v, xs in results[bench].items()}
        enc, lz = med["encrypted"] / med["plain"], med["lz4"] / med["plain"]
        print(f"{bench + ' (' + unit + ')':30} {med['plain']:9.1f} {med['encrypted']:9.1f} {med['lz4']:9.1f}  "
              f"{enc:9.2f} {enc_target:6.2f} {verdict(enc, enc_target):14} {lz:9.2f} {lz4_target:6.2f} "
              f"{verdict(lz, lz4_target)}")
        rows.append({"name": bench, "unit": unit, "runs": results[bench], "medians": med,
                     "encrypted_ratio": enc, "encrypted_target": enc_target,
                     "lz4_ratio": lz, "lz4_target": lz4_target,
                     "worker_cpu_unit": CPU_UNIT[bench], "worker_cpu_runs": cpu[bench],
                     "worker_cpu_medians": {v: statistics.median(xs) for v, xs in cpu[bench].items()}})
    print(f"\nworker CPU per unit of work (less depends on what else runs): "
          f"{'plain':>9} {'encrypted':>9} {'lz4':>9}  {'enc/plain':>9} {'lz4/plain':>9}")
    for row in rows:
        m = row["worker_cpu_medians"]
        print(f"{row['name'] + ' (' + row['worker_cpu_unit'] + ')':62} {m['plain']:9.2f} "
              f"{m['encrypted']:9.2f} {m['lz4']:9.2f}  {m['encrypted'] / m['plain']:9.2f} "
              f"{m['lz4'] / m['plain']:9.2f}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("crypto-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"machine": info, "runs": args.runs, "quick": args.quick,
                                "floor_us_per_64k_block": floor_us, "engine_cpu_ms_per_mib": engine_ms,
                                "loadavg": loads,
                                "results": rows}, indent=2))
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    sys.exit(main())
