#!/usr/bin/env bash
# One command for every benchmark (not part of CI): installs fio and the package if needed,
# then runs benchmarks/run.py. Arguments pass through, e.g. `benchmarks/run.sh --quick`.
# `benchmarks/run.sh --peers [...]` instead runs benchmarks/peers.py, GalleonFS against its
# FUSE peers (issue 11), and also installs bindfs and gocryptfs for it.
# Snapshot costs (create/delete latency by volume size, throughput with 50 snapshots, diff):
# `python -m benchmarks.snapshots` (docs/benchmarks.md, "Snapshots").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--peers" ]; then
    shift
    GALLEONFS_EXTRA_APT="fio bindfs gocryptfs" source "$ROOT/.ci/bootstrap.sh"
    cd "$ROOT"
    exec python -m benchmarks.peers "$@"
fi
GALLEONFS_EXTRA_APT="fio" source "$ROOT/.ci/bootstrap.sh"
cd "$ROOT"
exec python benchmarks/run.py "$@"
