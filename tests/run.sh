#!/usr/bin/env bash
# The test command (README): install what is missing, then run the test tiers.
# Extra arguments go to pytest, e.g. `tests/run.sh tests/unit -x`.
#
# The whole suite needs root and a usable FUSE (mount tests switch users, create device
# nodes and mount). The kernel-free tiers below do not: when every path given lies in one
# of them, neither is required, so a newcomer without root can run them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"
cd "$ROOT"

KERNEL_FREE=(tests/unit tests/vfs)

needs_kernel() {
    local arg tier paths=0
    for arg in "$@"; do
        case "$arg" in -*) continue ;; esac
        [ -e "${arg%%::*}" ] || continue          # an option's value, not a path
        paths=1
        local rel
        rel="$(realpath --relative-to="$ROOT" "${arg%%::*}")"
        local free=0
        for tier in "${KERNEL_FREE[@]}"; do
            case "$rel/" in "$tier"/*) free=1 ;; esac
        done
        [ "$free" = 1 ] || return 0
    done
    [ "$paths" = 0 ]    # no path at all: the whole suite
}

if needs_kernel "$@"; then
    if [ "$(id -u)" != 0 ]; then
        echo "tests/run.sh: the mount tests switch users and create device nodes: run as root" \
             "(without root: tests/run.sh ${KERNEL_FREE[*]})" >&2
        exit 2
    fi
    if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
        echo "tests/run.sh: FUSE is not usable here (/dev/fuse or fusermount3 missing); mount tests cannot run" >&2
        exit 1
    fi
fi
if [ $# -eq 0 ]; then set -- tests; fi
exec python -m pytest -p no:cacheprovider "$@"
