#!/usr/bin/env bash
# GalleonFS cluster mode, first part (issue 12): membership, placement, scheduling.
#   etcd (Debian's etcd-server) and three galleond nodes on loopback, in zones a, b, c, their
#   peer channel on mutual TLS with certificates from `galleond cluster-ca|cluster-cert`;
#   `cluster status` (with the PEER column: each node reached over mTLS); a volume created
#   with 3 replicas (its placement recorded in etcd; replication is not built yet, and the
#   output says so); a read-write mount that takes the volume's primary lease (epoch 1, then
#   2 after a remount) and another node's mount refused while it lives; a cordon and a
#   refusal it causes; kill -9 of a node, shown DOWN once its 6 s lease expires; the node back.
# Leaves nothing running; KEEP=1 keeps the temporary directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"

WORK="$(mktemp -d /tmp/galleonfs-cluster.XXXXXX)"
export GALLEONFS_METRICS_LISTEN="127.0.0.1:0"    # three daemons on one host: a free port each
export GALLEONFS_MOUNT_ROOTS="$WORK/mnt"          # volumes may only be mounted under the roots
mkdir -p "$WORK/mnt"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ETCD_URL="http://127.0.0.1:$(free_port)"
ETCD_PEER="http://127.0.0.1:$(free_port)"
declare -A PIDS=()
cleanup() {
    for name in "${!PIDS[@]}"; do
        if kill -0 "${PIDS[$name]}" 2>/dev/null; then kill -TERM "${PIDS[$name]}"; wait "${PIDS[$name]}" || true; fi
    done
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ctl() { local node=$1; shift; galleonctl --address "unix:$WORK/$node/galleond.sock" "$@"; }

step "start etcd on $ETCD_URL"
etcd --name demo --data-dir "$WORK/etcd" --listen-client-urls "$ETCD_URL" \
     --advertise-client-urls "$ETCD_URL" --listen-peer-urls "$ETCD_PEER" \
     --initial-advertise-peer-urls "$ETCD_PEER" --initial-cluster "demo=$ETCD_PEER" \
     --logger zap --log-level error > "$WORK/etcd.log" 2>&1 &
PIDS[etcd]=$!

step "make the cluster CA and one peer certificate per node (mTLS between nodes)"
galleond cluster-ca init "$WORK/ca"
for name in n1 n2 n3; do
    galleond cluster-cert issue --ca "$WORK/ca" --node "$name" --host 127.0.0.1 --out "$WORK/$name/peer"
done
declare -A PEER_PORTS=([n1]="$(free_port)" [n2]="$(free_port)" [n3]="$(free_port)")

start_node() {
    local name=$1 zone=$2
    mkdir -p "$WORK/$name"
    galleond --data-dir "$WORK/$name/data" --listen "unix:$WORK/$name/galleond.sock" --config /dev/null \
             --log-format text --cluster "etcd=$ETCD_URL" --node-name "$name" \
             --peer-listen "127.0.0.1:${PEER_PORTS[$name]}" --peer-cert "$WORK/$name/peer/node.crt" \
             --peer-key "$WORK/$name/peer/node.key" --peer-ca "$WORK/$name/peer/ca.crt" \
             --zone "$zone" 2>> "$WORK/$name/galleond.log" &
    PIDS[$name]=$!
}
step "start three nodes in zones a, b, c"
wait_ready() {      # a node answers, or its log says why it stopped
    local name=$1
    for _ in $(seq 300); do
        ctl "$name" node status >/dev/null 2>&1 && return 0
        kill -0 "${PIDS[$name]}" 2>/dev/null || { tail -3 "$WORK/$name/galleond.log"; return 1; }
        sleep 0.2
    done
    echo "$name did not start in time" >&2; return 1
}
for _ in $(seq 300); do curl -fs "$ETCD_URL/health" >/dev/null 2>&1 && break; sleep 0.1; done
start_node n1 a; start_node n2 b; start_node n3 c
for name in n1 n2 n3; do wait_ready "$name"; done
ctl n1 cluster status

step "create a volume with 3 replicas on n1: one per zone, recorded in etcd"
ctl n1 volume create db --size 1G --replicas 3
ctl n2 cluster placement db

step "mount db read-write on n1: n1 takes its primary lease (epoch 1); n2 is refused while it lives"
ctl n1 volume mount db "$WORK/mnt/n1"
echo "written on n1 at epoch 1" > "$WORK/mnt/n1/hello"
ctl n1 cluster placement db
ctl n2 volume mount db "$WORK/mnt/n2" || echo "(refused, exit $?; nothing was mounted)"
ctl n1 volume unmount db
ctl n1 volume mount db "$WORK/mnt/n1"
ctl n1 cluster placement db | grep epoch
cat "$WORK/mnt/n1/hello"
ctl n1 volume unmount db

step "cordon n3: a 3-replica volume no longer fits, one line says why"
ctl n1 node cordon n3
ctl n1 cluster status
ctl n1 volume create db2 --size 1G --replicas 3 || echo "(refused, exit $?; nothing was created)"
ctl n1 volume create db2 --size 1G --replicas 3 --allow-degraded
ctl n1 node uncordon n3

step "kill -9 n2: shown DOWN once etcd expires its 6 s lease"
kill -KILL "${PIDS[n2]}"; wait "${PIDS[n2]}" 2>/dev/null || true
start=$(date +%s)
until ctl n1 cluster status -o json | grep '"state": "down"' >/dev/null; do sleep 0.5; done
echo "n2 shown down after $(( $(date +%s) - start )) s"
ctl n1 cluster status     # n2: DOWN, and its PEER column says UNREACHABLE

step "start n2 again: it rejoins under its name"
start_node n2 b
wait_ready n2
ctl n3 cluster status

step "clean up: delete the volumes (their placements leave etcd), stop every node"
ctl n1 volume delete db
ctl n1 volume delete db2
echo
echo "cluster demo finished: etcd and three nodes, placement across zones, cordon, a killed node shown down and back."
