#!/usr/bin/env bash
# GalleonFS without the daemon: install what is missing, then create
# a volume in a temporary directory, mount it, use it with ordinary tools, unmount it and
# check it. Leaves nothing mounted; the temporary directory is removed at the end unless
# KEEP=1 is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"

WORK="$(mktemp -d /tmp/galleonfs-quickstart.XXXXXX)"
VOL="$WORK/volume"
MNT="$WORK/mnt"
mkdir -p "$MNT"
cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then galleonfs umount "$MNT" || fusermount3 -uz "$MNT"; fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "create a 1 GiB volume"
galleonfs mkfs "$VOL" --size 1G --name quickstart

step "mount it on $MNT"
galleonfs mount "$VOL" "$MNT"

step "use it like any directory"
mkdir -p "$MNT/docs"
echo "hello from GalleonFS" > "$MNT/docs/hello.txt"
head -c 32M /dev/urandom > "$MNT/random.bin"
sha256sum "$MNT/random.bin" | tee "$WORK/random.sha256"
ln -s docs/hello.txt "$MNT/link"
setfattr -n user.owner -v quickstart "$MNT/docs/hello.txt" 2>/dev/null || true
sync "$MNT/random.bin"
ls -la "$MNT" "$MNT/docs"
df -h "$MNT"

step "unmount, remount and verify the data"
galleonfs umount "$MNT"
galleonfs mount "$VOL" "$MNT"
cat "$MNT/link"
sha256sum -c "$WORK/random.sha256"
galleonfs umount "$MNT"

step "check the volume"
galleonfs fsck "$VOL"
echo
echo "quickstart finished: the volume was created, mounted, written, remounted and checked."
