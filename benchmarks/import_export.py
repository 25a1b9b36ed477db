"""Folder import/export (issue 15) against ``rsync -a``, in the same run. Not in CI.

    python benchmarks/import_export.py [--dir DIR] [--small-files 50000] [--large-mib 4096]

Needs rsync (``GALLEONFS_EXTRA_APT=rsync source .ci/bootstrap.sh``). A real galleond
(``galleonfs.testing.daemon``) on DIR; two trees on DIR's disk:

* **small**: ``--small-files`` files of 1 to 8 KiB in 100 directories;
* **large**: 4 random files, ``--large-mib`` in all.

For each tree, timed with the wall clock as a user sees it:

* ``rsync -a SRC/ PLAIN/`` into a plain directory on the same disk, then ``sync`` (the
  baseline the issue sets: GalleonFS's import should reach >= 0.7x its speed);
* ``galleonctl volume import VOL SRC`` into a fresh, unmounted volume (it mounts, copies,
  unmounts: unmount commits, so the data is durable when it returns);
* the same import again with nothing changed (target: <= 10 % of the first run);
* ``rsync -a`` into a mount of another fresh volume, to tell the tool from the file system;
* ``galleonctl volume export VOL@SNAP DEST`` of the imported tree.

The 1-minute load average is recorded before each part (the machine is shared).
Results also go to ``benchmarks/results/import_export-<time>.json``.
"""

from __future__ import annotations

import argparse
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

from galleonfs.testing.daemon import RunningDaemon  # noqa: E402

MiB = 1 << 20


def load() -> float:
    return os.getloadavg()[0]


def small_tree(root: Path, files: int, seed: int = 15) -> int:
    rng = random.Random(seed)
    total = 0
    for d in range(100):
        (root / f"d{d:03d}").mkdir(parents=True)
    for i in range(files):
        data = rng.randbytes(rng.randint(1024, 8192))
        (root / f"d{i % 100:03d}" / f"f{i:06d}.dat").write_bytes(data)
        total += len(data)
    return total


def large_tree(root: Path, mib: int, seed: int = 16) -> int:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    per = mib // 4
    block = rng.randbytes(MiB)
    for i in range(4):
        with open(root / f"big{i}.bin", "wb") as f:
            for j in range(per):
                f.write(block[j % 997:] + block[:j % 997])        # unlike blocks: no dedup help
    return 4 * per * MiB


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return elapsed


def run_tree(d: RunningDaemon, base: Path, name: str, src: Path, nbytes: int, files: int,
             volume_size: str) -> dict[str, Any]:
    ctl = [sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", d.address]
    work = base / "work"
    work.mkdir(exist_ok=True)
    row: dict[str, Any] = {"tree": name, "files": files, "bytes": nbytes}
    subprocess.run(["sync"], check=True)
    row["load_rsync"] = load()
    plain = base / f"plain-{name}"
    row["rsync_s"] = timed(["sh", "-c", f"rsync -a '{src}/' '{plain}/' && sync"])
    row["load_import"] = load()
    d.ctl("volume", "create", f"imp-{name}", "--size", volume_size, check=True)
    row["import_s"] = timed([*ctl, "volume", "import", f"imp-{name}", str(src), "--work-dir", str(work)])
    row["load_rerun"] = load()
    row["rerun_s"] = timed([*ctl, "volume", "import", f"imp-{name}", str(src), "--work-dir", str(work)])
    row["rsync_rerun_s"] = timed(["rsync", "-a", f"{src}/", f"{plain}/"])
    d.ctl("volume", "create", f"rs-{name}", "--size", volume_size, check=True)
    mnt = base / f"mnt-{name}"
    mnt.mkdir()
    d.ctl("volume", "mount", f"rs-{name}", str(mnt), check=True)
    row["load_rsync_into_mount"] = load()
    try:
        row["rsync_into_mount_s"] = timed(["rsync", "-a", f"{src}/", f"{mnt}/"])
    finally:
        d.ctl("volume", "unmount", str(mnt), check=True)
    d.ctl("snapshot", "create", f"imp-{name}@bench", check=True)
    row["load_export"] = load()
    row["export_s"] = timed([*ctl, "volume", "export", f"imp-{name}@bench", str(base / f"out-{name}"),
                             "--work-dir", str(work)])
    row["import_vs_rsync"] = row["rsync_s"] / row["import_s"]
    row["rerun_share"] = row["rerun_s"] / row["import_s"]
    for path in (plain, base / f"out-{name}"):
        shutil.rmtree(path)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None, help="where trees, daemon and volumes go (default: a temp dir)")
    parser.add_argument("--small-files", type=int, default=50_000)
    parser.add_argument("--large-mib", type=int, default=4096)
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed: GALLEONFS_EXTRA_APT=rsync source .ci/bootstrap.sh")
    base = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.dir))
    d = RunningDaemon(base, env={"GALLEONFS_MOUNT_ROOTS": str(base)})
    rows = []
    try:
        d.start()
        nbytes = small_tree(base / "src-small", args.small_files)
        rows.append(run_tree(d, base, "small", base / "src-small", nbytes, args.small_files,
                             f"{max(1, 4 * nbytes // (1 << 30) + 1)}G"))
        shutil.rmtree(base / "src-small")
        nbytes = large_tree(base / "src-large", args.large_mib)
        rows.append(run_tree(d, base, "large", base / "src-large", nbytes, 4,
                             f"{max(1, 3 * nbytes // (1 << 30) + 1)}G"))
    finally:
        d.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print("| tree | rsync -a (s) | import (s) | import/rsync speed | re-run (s, % of import) | "
          "rsync re-run (s) | rsync into a mount (s) | export (s) | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tree']} ({r['files']} files, {r['bytes'] / MiB:.0f} MiB) | {r['rsync_s']:.1f} | "
              f"{r['import_s']:.1f} | {r['import_vs_rsync']:.2f}x | {r['rerun_s']:.2f} ({100 * r['rerun_share']:.0f} %) | "
              f"{r['rsync_rerun_s']:.2f} | {r['rsync_into_mount_s']:.1f} | {r['export_s']:.1f} | "
              f"{r['load_rsync']:.1f}-{r['load_export']:.1f} |")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"import_export-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"rows": rows, "nproc": os.cpu_count()}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
