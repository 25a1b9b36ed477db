"""GalleonFS against its FUSE peers, side by side in one run (issue 11). Not in CI; as root.

    benchmarks/run.sh --peers [--runs 3] [--targets plain,bindfs,...] [--quick]
    benchmarks/run.sh --peers --aging [K]      (default 5) [--preage 10 --volume-size 8G]
    python -m benchmarks.peers ...             (the same, once fio, bindfs and gocryptfs are installed)

Targets, all on the same disk: a plain directory, ``bindfs -o big_writes``, gocryptfs (a
fresh cipher dir), pyfuse3's own ``examples/passthroughfs.py`` from the sdist of the
installed pyfuse3 (writeback cache, 1 s timeouts, a real fsync: ``pyfuse3_passthrough``),
GalleonFS and GalleonFS encrypted (real mount workers). Each is mounted once and keeps that
mount for every run, so that aging shows.

Workloads (``peer_workloads``): 1 GiB sequential write + fsync and cold read; fio psync 4 KiB
iodepth 1 for 20 s on a 1 GiB file (random write with end_fsync, cold random read); 10 000 x
4 KiB files in 100 directories (create, warm stat, delete); ``tar xf`` of a seeded ~4 300-file /
~97 MB source tarball (and ``rm -rf`` of it); 1 000 x (append 4 KiB + fsync) with the fsync
p99. For every FUSE target, the CPU seconds of its server process per workload ("worker CPU s").

A run is every workload on every target: workload by workload, the targets in an order that
rotates from run to run, each measurement after ``sync``, a page-cache drop and a pause. The
report gives medians over runs, each GalleonFS value against the plain directory and the best
peer, and the host bytes of each target's data directory 0/10/30 s after its delete phases.
``--aging K`` runs the set K times and reports each run's speed and CPU per operation against
run 1. JSON goes to ``benchmarks/results/peers-<time>.json``, the tables (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peer_targets import (  # noqa: E402
    ALL,
    PEERS,
    Target,
    TargetError,
    clear_stale_mounts,
    ensure_example,
    make_targets,
)
from benchmarks.peer_workloads import (  # noqa: E402
    FULL,
    QUICK,
    WORKLOADS,
    Bench,
    GiB,
    Sample,
    Sizes,
    SpaceProbe,
    make_tarball,
    preage,
)
from benchmarks.run import machine  # noqa: E402

# metric: (label, higher is better, what one "op" is for CPU per op, short name)
METRICS: dict[str, tuple[str, bool, str, str]] = {
    "seq_write": ("seq write MB/s", True, "MiB", "seq write"),
    "seq_read_cold": ("seq read cold MB/s", True, "MiB", "seq read cold"),
    "rand_write": ("4K random write IOPS", True, "write", "4K random write"),
    "rand_read_cold": ("4K random read cold IOPS", True, "read", "4K random read cold"),
    "create": ("create/s", True, "file", "create"),
    "stat": ("stat/s warm", True, "file", "stat warm"),
    "delete": ("delete/s", True, "file", "delete"),
    "tar_x": ("tar x s", False, "file", "tar x"),
    "tar_rm": ("rm -rf of the tree s", False, "file", "rm -rf of the tree"),
    "append": ("append+fsync /s", True, "append", "append+fsync"),
    "fsync_p99": ("fsync p99 ms", False, "append", "fsync p99"),
}
# Issue 11, target 2, for GalleonFS encrypted: at least this share of the plain directory.
PLAIN_TARGETS = {"seq_write": 0.9, "seq_read_cold": 0.7, "append": 0.5}
FSYNC_P99_MAX_MS = 1.0
AGING_CPU_MAX, AGING_SPEED_MIN = 1.1, 0.9       # issue 11, target 1: last run against the first
SPACE_LIVE_FACTOR = 1.2                         # issue 11, target 1: host bytes against live bytes


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.getuid() != 0:
        raise SystemExit("run as root: cold reads drop the page cache and the peers mount as root")
    if shutil.which("fio") is None:
        raise SystemExit("fio is missing: run `benchmarks/run.sh --peers` (it installs fio, bindfs and gocryptfs)")
    sizes = QUICK if args.quick else FULL
    scratch = Path(args.dir).resolve()
    clear_stale_mounts(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    need = 6 * GiB if args.quick else 24 * GiB
    if shutil.disk_usage(scratch).free < need:
        raise SystemExit(f"{scratch} has less than {need // GiB} GiB free: give --dir a disk with more room")
    try:
        example = ensure_example(Path(args.cache_dir)) if "passthrough" in args.targets else None
        targets = make_targets(args.targets, scratch, example, args.volume_size)
    except TargetError as exc:
        raise SystemExit(str(exc)) from None
    tarball = scratch / "src.tar"
    tar_sha = make_tarball(tarball, sizes.tar_files, sizes.tar_bytes)
    print(f"tarball: {sizes.tar_files} files, {tarball.stat().st_size / 1e6:.1f} MB, sha256 {tar_sha[:16]}",
          flush=True)
    started: list[Target] = []
    record: dict[str, Any] = {"samples": [], "space": [], "mount_s": {}, "preage": {}, "orders": []}
    start = time.monotonic()
    try:
        for target in targets:
            t0 = time.perf_counter()
            target.start()
            started.append(target)
            record["mount_s"][target.key] = time.perf_counter() - t0
        if args.preage:
            for target in targets:
                print(f"pre-aging {target.label}: {args.preage} x {args.volume_size / GiB:.0f} GiB ...", flush=True)
                record["preage"][target.key] = preage(target, int(args.preage * args.volume_size),
                                                      args.volume_size // 2)
        run_all(targets, sizes, tarball, args.runs, record)
    except (TargetError, SystemExit, KeyboardInterrupt) as exc:
        # Keep what was measured: a failure late in a 30-minute run should not cost it all.
        record["failed"] = str(exc) or type(exc).__name__
    finally:
        record["stop_problems"] = stop_all(started)
    record["elapsed_s"] = time.monotonic() - start
    if record["samples"]:
        report(targets, record, args, sizes, tar_sha)
    if "failed" in record or record["stop_problems"]:
        raise SystemExit("\n".join([f"stopped early: {record['failed']}"] * ("failed" in record)
                                    + record["stop_problems"]))
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def stop_all(started: list[Target]) -> list[str]:
    """Unmount every target we mounted, even when one of them fails to stop cleanly; return
    what went wrong (the report still comes first)."""
    failed = []
    for target in reversed(started):
        try:
            target.stop()
        except TargetError as exc:
            failed.append(str(exc))
    return failed


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(ROOT / "bench-data" / "peers"),
                        help="scratch directory on the disk to measure (default ./bench-data/peers)")
    parser.add_argument("--cache-dir", default="/var/cache/galleonfs-bench",
                        help="where the pyfuse3 sdist is kept (outside the repository)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    parser.add_argument("--aging", type=int, nargs="?", const=5, default=0, metavar="K",
                        help="run the whole set K times (default 5) and report run k against run 1")
    parser.add_argument("--targets", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--preage", type=float, default=0.0, metavar="X",
                        help="first write and delete X times --volume-size of mixed files on every target")
    parser.add_argument("--volume-size", default="64G", help="GalleonFS volume size (default 64G)")
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 run: proves it works (~2 min)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory afterwards")
    args = parser.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(ALL)
    if unknown or not args.targets:
        parser.error(f"unknown target {', '.join(sorted(unknown)) or '(none given)'}: choose from {', '.join(ALL)}")
    args.volume_size = parse_size(args.volume_size, parser)
    if args.aging:
        args.runs = args.aging
    elif args.quick:
        args.runs = 1
    if args.runs < 1:
        parser.error("--runs and --aging need at least 1")
    return args


def parse_size(text: str, parser: argparse.ArgumentParser) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, unit = (text[:-1], text[-1].upper()) if text[-1:].upper() in units else (text, "")
    try:
        return int(float(number) * units.get(unit, 1))
    except ValueError:
        parser.error(f"--volume-size {text!r} is not a size: write e.g. 8G or 512M")
        raise


def run_all(targets: list[Target], sizes: Sizes, tarball: Path, runs: int, record: dict[str, Any]) -> None:
    """Every run: each workload on each target, targets in an order rotated per run."""
    probes: dict[str, SpaceProbe] = {}
    for run in range(runs):
        order = targets[run % len(targets):] + targets[:run % len(targets)]
        record["orders"].append([t.key for t in order])
        bench = Bench(sizes, tarball, run)
        print(f"run {run + 1}/{runs}: order {', '.join(t.label for t in order)}", flush=True)
        for _name, workload, phase in WORKLOADS:
            for position, target in enumerate(order):
                if target.key in probes:      # nothing new on this target while its probe measures
                    probe = probes.pop(target.key)
                    probe.join()
                    record["space"].extend(probe.samples)
                bench.settle()
                load = loadavg()
                for sample in workload(target, bench):
                    record["samples"].append(sample_row(sample, target, run, position, load))
                    print(progress(sample, target, run, load), flush=True)
                if phase is not None:
                    probes[target.key] = SpaceProbe(target, phase, run, sizes.space_offsets_s)
                    probes[target.key].start()
    for probe in probes.values():
        probe.join()
        record["space"].extend(probe.samples)


def sample_row(s: Sample, target: Target, run: int, position: int, load: float) -> dict[str, Any]:
    per_op = None if s.cpu_s is None or not s.ops else s.cpu_s * 1e6 / s.ops
    return {"run": run, "target": target.key, "position": position, "metric": s.metric, "value": s.value,
            "cpu_s": s.cpu_s, "ops": s.ops, "cpu_us_per_op": per_op, "seconds": s.seconds, "load1": load,
            **s.extra}


def progress(s: Sample, target: Target, run: int, load: float) -> str:
    cpu = "" if s.cpu_s is None else f"  worker CPU {s.cpu_s:6.2f} s"
    return f"  run {run + 1} {target.label:22} {METRICS[s.metric][0]:24} {s.value:12.2f}{cpu}  (load {load:.2f})"


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# --- the report ----------------------------------------------------------------------------------
def values(record: dict[str, Any], target: str, metric: str, field: str = "value") -> list[float]:
    return [row[field] for row in sorted(record["samples"], key=lambda r: r["run"])
            if row["target"] == target and row["metric"] == metric and row[field] is not None]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def speed_ratio(a: float | None, b: float | None, higher: bool) -> float | None:
    """How many times as good ``a`` is as ``b`` (>= 1: at least as good), for either direction."""
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if higher else b / a


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}" if abs(x) >= 100 or digits == 0 else f"{x:.{digits}f}"


def digits_for(metric: str) -> int:
    return 2 if metric in ("tar_x", "tar_rm", "fsync_p99") else 0


def report(targets: list[Target], record: dict[str, Any], args: argparse.Namespace, sizes: Sizes,
           tar_sha: str) -> None:
    info = machine()
    loads = [row["load1"] for row in record["samples"]]
    keys = [t.key for t in targets]
    labels = {t.key: t.label for t in targets}
    if "failed" in record:
        print(f"\nPARTIAL RESULTS: the run stopped early ({record['failed']})")
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['memory']}, kernel {info['kernel']}, "
          f"Python {info['python']}, disk {info['disk']}; {args.runs} run(s), "
          f"{'quick sizes' if args.quick else 'full sizes'}, {record['elapsed_s'] / 60:.1f} min; load average "
          f"(1 min) median {statistics.median(loads):.2f}, max {max(loads):.2f}\n")
    print("mount s: " + ", ".join(f"{labels[k]} {record['mount_s'][k]:.2f}" for k in keys))
    for key, aged in record["preage"].items():
        cpu = "" if aged["cpu_s"] is None else f", worker CPU {aged['cpu_s']:.1f} s"
        print(f"pre-aged {labels[key]}: wrote and deleted {aged['bytes'] / GiB:.1f} GiB in {aged['files']} files "
              f"in {aged['seconds']:.0f} s{cpu}")
    print()
    medians = {k: {m: median(values(record, k, m)) for m in METRICS} for k in keys}
    cpus = {k: {m: median(values(record, k, m, "cpu_s")) for m in METRICS} for k in keys}
    per_op = {k: {m: median(values(record, k, m, "cpu_us_per_op")) for m in METRICS} for k in keys}
    print_main_table(keys, labels, medians, cpus, per_op)
    comparisons = print_ratios(keys, labels, medians)
    space = print_space(keys, labels, record)
    aging = print_aging(keys, labels, record) if args.aging else {}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("peers-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({
        "machine": info, "args": {k: v for k, v in vars(args).items()}, "sizes": vars(sizes),
        "tarball_sha256": tar_sha, "targets": labels, "medians": medians, "worker_cpu_s_medians": cpus,
        "worker_cpu_us_per_op_medians": per_op,
        "comparisons": comparisons, "space": space, "aging": aging, **record}, indent=1, default=str))
    print(f"\nresults written to {path}")


def print_main_table(keys: list[str], labels: dict[str, str], medians: dict[str, dict[str, float | None]],
                     cpus: dict[str, dict[str, float | None]], per_op: dict[str, dict[str, float | None]]) -> None:
    print("| workload (medians) | " + " | ".join(labels[k] for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for metric, (label, *_) in METRICS.items():
        if metric == "fsync_p99":
            continue
        cells = [fmt(medians[k][metric], digits_for(metric)) for k in keys]
        if metric == "append":
            cells = [f"{c} ({fmt(medians[k]['fsync_p99'], 2)})" for c, k in zip(cells, keys, strict=True)]
            label += " (fsync p99 ms)"
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n| worker CPU s (medians; in brackets CPU µs per op) | " + " | ".join(labels[k] for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for metric, (_, _, op, short) in METRICS.items():
        if metric == "fsync_p99":
            continue
        cells = ["-" if cpus[k][metric] is None else
                 f"{cpus[k][metric]:.2f} ({fmt(per_op[k][metric])})" for k in keys]
        print(f"| {short} (per {op}) | " + " | ".join(cells) + " |")


def print_ratios(keys: list[str], labels: dict[str, str],
                 medians: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Each GalleonFS column against the plain directory and the best peer in the same run."""
    peers = [k for k in keys if k in PEERS]
    out: dict[str, Any] = {}
    for key in (k for k in keys if k.startswith("galleonfs")):
        print(f"\n| {labels[key]} | value | x plain | best peer | x best peer | issue 11 target |")
        print("|---|---:|---:|---|---:|---|")
        rows = {}
        for metric, (label, higher, *_) in METRICS.items():
            mine = medians[key][metric]
            plain = speed_ratio(mine, medians["plain"][metric], higher) if "plain" in keys else None
            ranked = [(speed_ratio(medians[p][metric], mine, higher) or 0.0, p) for p in peers
                      if medians[p][metric] is not None]
            best = max(ranked)[1] if ranked else None
            vs_best = speed_ratio(mine, medians[best][metric], higher) if best else None
            verdict = target_verdict(metric, mine, plain, vs_best) if key == "galleonfs-enc" else ""
            rows[metric] = {"value": mine, "x_plain": plain, "best_peer": best, "x_best_peer": vs_best,
                            "verdict": verdict}
            print(f"| {label} | {fmt(mine, digits_for(metric))} | {fmt(plain, 2)} | "
                  f"{labels[best] if best else '-'} | {fmt(vs_best, 2)} | {verdict} |")
        out[key] = rows
    print("\n(x = how many times as good: rates divided, times and latencies inverted; >= 1.00 is as "
          "good or better.)")
    return out


def target_verdict(metric: str, mine: float | None, x_plain: float | None, x_best: float | None) -> str:
    needs = []
    if metric == "fsync_p99":
        ok = mine is not None and mine <= FSYNC_P99_MAX_MS
        return f"<= {FSYNC_P99_MAX_MS:.0f} ms: {'met' if ok else 'missed'}"
    if x_best is not None:
        needs.append(("best peer", 1.0, x_best))
    if metric in PLAIN_TARGETS and x_plain is not None:
        needs.append(("plain", PLAIN_TARGETS[metric], x_plain))
    parts = [f"{'met' if have >= want else 'missed'} (>= {want:.1f} x {what})" for what, want, have in needs]
    return "; ".join(parts)


def print_space(keys: list[str], labels: dict[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """Host bytes of each data directory after each delete phase, against what is still stored."""
    rows: dict[str, Any] = {}
    offsets = sorted({s["after_s"] for s in record["space"]})
    if not offsets:
        return rows
    print("\n| host MB of the data dir after a delete (median of runs, [max]) | phase | "
          + " | ".join(f"{o:.0f} s after" for o in offsets) + " | live MB | excess MB |")
    print("|---|---|" + "---:|" * (len(offsets) + 2))
    for key in keys:
        for phase in dict.fromkeys(s["phase"] for s in record["space"]):
            mine = [s for s in record["space"] if s["target"] == key and s["phase"] == phase]
            if not mine:
                continue
            cells = []
            for offset in offsets:
                host = [s["host_bytes"] / 1e6 for s in mine if s["after_s"] == offset]
                cells.append(f"{statistics.median(host):,.1f} [{max(host):,.1f}]")
            live = max(s["live_bytes"] for s in mine) / 1e6
            # Issue 11, target 1: host bytes <= 1.2 x live (plus a fixed reserve) 30 s after a delete.
            excess = statistics.median((s["host_bytes"] - SPACE_LIVE_FACTOR * s["live_bytes"]) / 1e6
                                       for s in mine if s["after_s"] == offsets[-1])
            rows[f"{key}/{phase}"] = {"host_mb": cells, "live_mb_max": live, "excess_mb_last": excess}
            print(f"| {labels[key]} | {phase} | " + " | ".join(cells) + f" | {live:,.1f} | {excess:,.1f} |")
    print("(phases: seq = the sequential file deleted, fio = the fio file deleted, meta = the small files "
          "deleted, tar = the extracted tree deleted; live = bytes of files still visible in the target; "
          f"excess = host - {SPACE_LIVE_FACTOR} x live at the last sample, median of runs: the reserve it needs)")
    return rows


def print_aging(keys: list[str], labels: dict[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """Run k against run 1, per target and workload: speed and CPU per operation."""
    out: dict[str, Any] = {}
    runs = 1 + max(row["run"] for row in record["samples"])
    plain_spread = {m: spread(values(record, "plain", m), higher) for m, (_, higher, *_) in METRICS.items()}
    later = [f"run {k + 1}" for k in range(1, runs)]
    for key in keys:
        print(f"\n| {labels[key]}: aging | run 1 | " + " | ".join(f"speed {r}" for r in later)
              + " | CPU/op run 1 (µs) | " + " | ".join(f"CPU/op {r}" for r in later) + " | verdict (last run) |")
        print("|---|---:|" + "---:|" * (2 * runs - 1) + "---|")
        rows = {}
        for metric, (label, higher, *_) in METRICS.items():
            speeds = values(record, key, metric)
            cpu = values(record, key, metric, "cpu_us_per_op")
            if not speeds:
                continue
            rel = [speed_ratio(v, speeds[0], higher) for v in speeds[1:]]
            cpu_rel = [c / cpu[0] if cpu[0] > 0 else None for c in cpu[1:]] if cpu else [None] * (runs - 1)
            verdict = "" if key == "plain" else aging_verdict(
                rel[-1] if rel else None, cpu_rel[-1] if cpu_rel else None, plain_spread.get(metric))
            rows[metric] = {"values": speeds, "speed_vs_run1": rel, "cpu_us_per_op": cpu,
                            "cpu_vs_run1": cpu_rel, "verdict": verdict}
            print(f"| {label} | {fmt(speeds[0], digits_for(metric))} | " + " | ".join(fmt(r, 2) for r in rel)
                  + f" | {fmt(cpu[0] if cpu else None)} | " + " | ".join(fmt(r, 2) for r in cpu_rel)
                  + f" | {verdict} |")
        out[key] = rows
    host = [s for s in record["space"] if s["phase"] == "tar" and s["after_s"] == max(
        x["after_s"] for x in record["space"])]
    if host:
        print("\n| host MB of the data dir, last sample after the last delete of each run | "
              + " | ".join(f"run {k + 1}" for k in range(runs)) + " |")
        print("|---|" + "---:|" * runs)
        for key in keys:
            by_run = {s["run"]: s["host_bytes"] / 1e6 for s in host if s["target"] == key}
            print(f"| {labels[key]} | " + " | ".join(fmt(by_run.get(k), 1) for k in range(runs)) + " |")
    print(f"\n(run k = speed of run k ÷ run 1 as in the ratios above; target: last run >= {AGING_SPEED_MIN} x "
          f"run 1 in speed, <= {AGING_CPU_MAX} x in CPU per op, or within the plain directory's spread)")
    out["plain_spread"] = plain_spread
    return out


def spread(xs: list[float], higher: bool) -> tuple[float, float] | None:
    """The lowest and highest of run k ÷ run 1 (as a speed ratio) over runs 2..K."""
    rel = [r for r in (speed_ratio(x, xs[0], higher) for x in xs[1:]) if r is not None] if xs else []
    return (min(rel), max(rel)) if rel else None


def aging_verdict(speed: float | None, cpu: float | None, plain: tuple[float, float] | None) -> str:
    parts = []
    if speed is not None:
        if speed >= AGING_SPEED_MIN:
            parts.append("speed met")
        elif plain is not None and speed >= plain[0]:
            parts.append(f"speed within plain's spread ({plain[0]:.2f})")
        else:
            parts.append("speed missed")
    if cpu is not None:
        parts.append("CPU met" if cpu <= AGING_CPU_MAX else "CPU missed")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
