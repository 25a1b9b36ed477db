#!/usr/bin/env bash
# The test command (README): install what is missing, then run every test tier.
# Extra arguments go to pytest, e.g. `tests/run.sh tests/unit -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"
cd "$ROOT"
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the mount tests switch users and create device nodes: run as root" >&2
    exit 2
fi
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
    echo "tests/run.sh: FUSE is not usable here (/dev/fuse or fusermount3 missing); mount tests cannot run" >&2
    exit 1
fi
if [ $# -eq 0 ]; then set -- tests; fi
exec python -m pytest -p no:cacheprovider "$@"
