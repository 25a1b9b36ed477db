#!/usr/bin/env bash
# GalleonFS quickstart (the README's first command). Installs what is missing, then runs
# the main job on an embedded single-node default:
#   a node (galleond on a temporary data directory),
#   a volume created and mounted through galleonctl, written to and shown,
#   a snapshot (browsed, diffed, cloned), its stats, an online expansion, an unmount,
#   and a clean daemon stop.
# Leaves nothing running or mounted; KEEP=1 keeps the temporary directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"

WORK="$(mktemp -d /tmp/galleonfs-quickstart.XXXXXX)"
export GALLEONFS_ADDRESS="unix:$WORK/galleond.sock"
# Volumes may only be mounted inside the node's mount roots (default /mnt, /media, /srv,
# /run/galleonfs/mounts, /var/lib/kubelet); this demo keeps everything in $WORK.
export GALLEONFS_MOUNT_ROOTS="$WORK/mnt"
mkdir -p "$WORK/mnt"
MNT="$WORK/mnt/data"
DAEMON_PID=""
cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true
    fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "start a node: galleond on $WORK/data"
galleond --data-dir "$WORK/data" --listen "$GALLEONFS_ADDRESS" --config /dev/null \
         --log-format text 2> "$WORK/galleond.log" &
DAEMON_PID=$!
for _ in $(seq 100); do galleonctl node status >/dev/null 2>&1 && break; sleep 0.1; done
galleonctl node status

step "create a 1 GiB volume and mount it on $MNT"
galleonctl volume create data --size 1G --label app=quickstart
galleonctl volume mount data "$MNT"

step "write to it with ordinary tools"
mkdir -p "$MNT/docs"
echo "hello from GalleonFS" > "$MNT/docs/hello.txt"
head -c 64M /dev/urandom > "$MNT/random.bin"
sha256sum "$MNT/random.bin" | tee "$WORK/random.sha256"
sync "$MNT/random.bin"
ls -la "$MNT" "$MNT/docs"
df -h "$MNT"

step "show it"
galleonctl volume list
galleonctl volume stats data

step "snapshot it, change it, and see both"
galleonctl snapshot create data@first
echo "changed after the snapshot" > "$MNT/docs/hello.txt"
rm "$MNT/random.bin"
echo "live:     $(cat "$MNT/docs/hello.txt")"
echo "snapshot: $(cat "$MNT/.snapshots/first/docs/hello.txt")   (read-only, under .snapshots/)"
galleonctl snapshot list data
galleonctl snapshot diff data@first

step "clone the snapshot into a new writable volume"
galleonctl volume clone data@first data-copy
galleonctl volume mount data-copy "$WORK/mnt/copy"
sha256sum "$WORK/mnt/copy/random.bin"
galleonctl volume unmount data-copy

step "grow it online to 2 GiB (df sees it at once)"
galleonctl volume expand data --size 2G
df -h "$MNT"

step "unmount, mount again, verify"
galleonctl volume unmount data
galleonctl volume mount data "$MNT"
cat "$MNT/docs/hello.txt"
# random.bin was deleted after the snapshot: the snapshot still has it, bit for bit
(cd "$MNT/.snapshots/first" && sed "s|$MNT/||" "$WORK/random.sha256" | sha256sum -c)
galleonctl volume unmount data

step "stop the node"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; DAEMON_PID=""
for volume in "$WORK/data/volumes/"*; do galleonfs fsck "$volume"; done
echo
echo "quickstart finished: node started, volume created, mounted, written, snapshotted, cloned, shown, expanded, checked."
