#!/usr/bin/env bash
# Install everything GalleonFS needs on a fresh Debian machine, idempotently:
# system packages (FUSE 3 and the headers pyfuse3 compiles against), a venv in .venv,
# and the package with its test dependencies. Sourced by tests/run.sh and
# demos/quickstart.sh; prints what it does, quietly when there is nothing to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GALLEONFS_VENV:-$ROOT/.venv}"
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config python3-venv python3-dev gcc)
APT_PACKAGES+=(${GALLEONFS_EXTRA_APT:-})

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "bootstrap: need root (or sudo) to run: $*" >&2; return 1; fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.galleonfs-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "bootstrap: installing galleonfs and its dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT[test,dev]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
