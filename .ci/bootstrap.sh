#!/usr/bin/env bash
# Install everything GalleonFS needs on a fresh Debian machine, idempotently:
# system packages (FUSE 3 and the headers pyfuse3 compiles against), a venv in .venv,
# and the package with its test and dev dependencies. Sourced by tests/run.sh, .ci/run
# and the demos (or by hand: `source .ci/bootstrap.sh`); puts the venv first on PATH.
#
# The no-op path is one dpkg-query call and one checksum, silent: the venv is reinstalled
# only when pyproject.toml's *content* changed since the last install (a checkout that
# only touches its mtime does not count), and apt runs only for a package that is
# missing. Root (or sudo) is needed only for that apt step.
#
# Sourced into the caller's shell, so it leaves the caller's shell options alone: the
# install steps run in a subshell with `set -euo pipefail` of their own.

_galleonfs_bootstrap() (
    set -euo pipefail
    local root venv python stamp want pkg status
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="${GALLEONFS_VENV:-$root/.venv}"
    python="${PYTHON:-python3}"
    local apt_packages=(fuse3 libfuse3-dev pkg-config python3-venv python3-dev gcc)
    # Cluster mode's tests start a real etcd on loopback (tests/cluster); they fail, not
    # skip, without it.
    local cluster_apt_packages=(etcd-server)
    apt_packages+=("${cluster_apt_packages[@]}")
    # shellcheck disable=SC2206  # a space-separated list by design (benchmarks/run.sh)
    apt_packages+=(${GALLEONFS_EXTRA_APT:-})

    local missing=()
    # One dpkg-query for the whole list; a package it does not know prints nothing.
    local installed
    installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${apt_packages[@]}" 2>/dev/null || true)"
    for pkg in "${apt_packages[@]}"; do
        status="$(printf '%s\n' "$installed" | awk -v p="$pkg" '$1 == p {print $2, $3, $4}')"
        [ "$status" = "install ok installed" ] || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "bootstrap: installing ${missing[*]}"
        _galleonfs_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _galleonfs_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi

    if [ ! -x "$venv/bin/python" ]; then
        echo "bootstrap: creating $venv"
        "$python" -m venv "$venv"
    fi
    stamp="$venv/.galleonfs-installed"
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "bootstrap: installing galleonfs and its dependencies into $venv"
        "$venv/bin/pip" install -q --upgrade pip >/dev/null
        "$venv/bin/pip" install -q -e "$root[test,dev]"
        printf '%s\n' "$want" > "$stamp"
    fi
)

_galleonfs_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "bootstrap: need root (or sudo) to run: $*" >&2; return 1; fi
}

if _galleonfs_bootstrap; then
    PATH="${GALLEONFS_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}/bin:$PATH"
    export PATH
else
    echo "bootstrap: failed (see above)" >&2
    # `return` when sourced, `exit` when run as a script.
    unset -f _galleonfs_bootstrap _galleonfs_as_root
    return 1 2>/dev/null || exit 1
fi
unset -f _galleonfs_bootstrap _galleonfs_as_root
