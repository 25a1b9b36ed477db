"""``galleonctl``: drive galleond. Subcommands by noun (DESIGN §6).

Every read command takes ``-o table|json|yaml``; sizes are accepted and printed in human
units; exit codes are the stable ones of ``errors.ExitCode``; a user error prints one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from .. import names
from ..errors import InvalidArgument
from ..managers.model import AccessMode, VolumeType
from ..rpc import convert
from ..units import format_size, parse_size
from . import access, backup, classes, cluster, output, qos, snapshots, transfer
from .common import ProgressLine, parse_labels, run

DEFAULT_ADDRESS = "unix:/run/galleonfs/galleond.sock"

EXAMPLES = """\
examples:
  galleonctl volume create data --size 10G                      a 10 GiB ReadWriteOnce volume
  galleonctl volume create shared --size 1G --access-mode RWX --label team=web
  galleonctl volume mount data /mnt/data                        mount it (bind mount of its worker)
  galleonctl volume mount shared /srv/a && galleonctl volume mount shared /srv/b
  galleonctl volume expand data --size 20G                      online, while mounted
  galleonctl volume list -o json
  galleonctl volume unmount /mnt/data                           by mount point, or by name
  galleonctl volume delete data                                 refused while mounted (--force)
  galleonctl snapshot create data@before-upgrade               constant time, mounted or not
  ls /mnt/data/.snapshots/before-upgrade                        browse it (read-only)
  galleonctl snapshot diff data@before-upgrade                  what changed since
  galleonctl volume clone data@before-upgrade data-test         a writable copy sharing blocks
  galleonctl volume import data /srv/photos --exclude '*.tmp'   copy a directory in (re-runs copy changes only)
  galleonctl volume export data@before-upgrade /backup/data     copy a snapshot out
  galleonctl snapshot-policy create hourly --schedule '0 * * * *' --retention 24 -l backup=yes
  galleonctl qos create gold --iops-limit 500 --throughput-limit-mbps 20 && galleonctl qos assign gold data
  galleonctl storage-class create fast.yaml
  galleonctl node status
  galleonctl cluster status                                     cluster mode: nodes, zones, capacity, states
  galleonctl node cordon n2                                     no new replicas on n2
  galleonctl volume create db --size 10G --replicas 3           cluster mode: placed on 3 nodes in etcd
  galleonctl top                                                all volumes' IOPS, MB/s, latency, live

  The daemon's address comes from --address or GALLEONFS_ADDRESS
  (default unix:/run/galleonfs/galleond.sock). On it, root is admin and members of
  galleond's operator_group are operators; anyone else, and every TCP caller, needs a
  client certificate (--tls-cert/--tls-key) or a token (GALLEONFS_TOKEN or --token-file).
  Shell completion: eval "$(galleonctl completion bash)"

exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 exists, 5 busy, 6 no space,
            7 corrupt, 8 permission, 9 unavailable (daemon not reachable)
"""

def _client(args: argparse.Namespace) -> Any:
    return access.client(args)


def _size(text: str) -> int:
    size = parse_size(text, what="size")
    if size <= 0:
        raise InvalidArgument(what="size", value=repr(text), expected="a volume needs a size above zero")
    return size


# --- volume --------------------------------------------------------------------------------------
def volume_create(args: argparse.Namespace) -> int:
    size = _size(args.size)
    modes = [AccessMode.parse(m) for m in (args.access_mode or ["ReadWriteOnce"])]
    try:
        vtype = VolumeType(args.type.lower())
    except ValueError:
        raise InvalidArgument(f"unknown volume type {args.type!r}: use ephemeral, persistent or shared") from None
    with _client(args) as c:
        v = c.create_volume(args.name, size, storage_class=args.storage_class or "",
                            access_modes=convert.access_modes_to_pb(modes),
                            type=convert.volume_type_to_pb(vtype),
                            labels=parse_labels(args.label), replicas=args.replicas,
                            allow_degraded=args.allow_degraded)
        placed = c.volume_placement(v.name) if args.replicas > 1 else None
    print(f"volume {v.name} created ({format_size(v.size_bytes)}, {v.storage_class}, id {v.id})"
          + (f"; {cluster.placement_line(placed)}" if placed is not None else ""))
    return 0


def volume_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        volumes = [output.to_dict(v) for v in c.list_volumes(parse_labels(args.selector))]
    if args.output == "table":
        print(output.volume_rows(volumes) if volumes else "no volumes")
        return 0
    return output.emit(args, volumes, output.volume_rows)


def volume_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.get_volume(args.name)), output.volume_detail)


def volume_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.delete_volume(args.name, force=args.force)
    print(f"volume {args.name} deleted" + (f"; its data was kept in {reply.retained_path}" if reply.data_retained else ""))
    return 0


def volume_expand(args: argparse.Namespace) -> int:
    with _client(args) as c:
        v = c.expand_volume(args.name, _size(args.size))
    print(f"volume {v.name} is now {format_size(v.size_bytes)}")
    return 0


def volume_stats(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.volume_stats(args.name)), output.stats_detail)


def volume_mount(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.path)
    with _client(args) as c:
        v = c.mount_volume(args.name, path, read_only=args.read_only)
    print(f"volume {v.name} mounted on {path}" + (" (read-only)" if args.read_only else ""))
    return 0


def volume_unmount(args: argparse.Namespace) -> int:
    from ..v1 import types_pb2

    target = args.target
    by_path = target.startswith("/") or target.startswith(".")
    with _client(args) as c:
        if by_path:
            v = c.unmount_volume(path=os.path.abspath(target), force=args.force)
        else:
            v = c.unmount_volume(name=target, force=args.force)
    where = os.path.abspath(target) if by_path else "every mount point"
    deleted = "; it was ephemeral and has been deleted" if v.state == types_pb2.DELETING else ""
    print(f"volume {v.name} unmounted from {where}{deleted}")
    return 0


def volume_clone(args: argparse.Namespace) -> int:
    volume, snap = names.split_snapshot_ref(args.snapshot)
    size = _size(args.size) if args.size else 0
    with _client(args) as c:
        v = c.clone_volume(volume, snap, args.name, size=size, labels=parse_labels(args.label))
    print(f"volume {v.name} cloned from {volume}@{snap} ({format_size(v.size_bytes)}, shares its blocks)")
    return 0


def volume_flatten(args: argparse.Namespace) -> int:
    with _client(args) as c:
        v = c.flatten_volume(args.name)
    print(f"volume {v.name} flattened: it no longer depends on its origin")
    return 0


def volume_rekey(args: argparse.Namespace) -> int:
    """Stream the daemon's progress; one line, rewritten in place on a terminal."""
    progress = ProgressLine(f"rekeying {args.name}")
    epoch = 0
    with _client(args) as c:
        for step in c.rekey_volume(args.name):
            epoch = step.epoch or epoch
            progress(step.done, step.total)
    progress.end()
    print(f"volume {args.name} rekeyed: everything is sealed under a new data key (epoch {epoch})")
    return 0


# Where import/export mount a volume for the copy when it is not mounted: one of galleond's
# default mount roots; a node with other roots needs --work-dir.
WORK_DIR_DEFAULT = "/run/galleonfs/mounts"
UNMOUNT_TRIES = 10              # 4.5 s in all: RELEASEs still in flight after a copy take ms


def volume_import(args: argparse.Namespace) -> int:
    """Copy a host directory into a volume, through a mount of it (an existing read-write
    mount point, else a temporary one under --work-dir, unmounted at the end)."""
    options = transfer.options_from(args)
    src = transfer.check_dir(args.src, "source directory")
    with _client(args) as c:
        v = c.get_volume(args.name)
        ready = [m.path for m in v.mount_points if not m.read_only and not m.snapshot]
        if ready:
            _check_here(ready[0])
            report = transfer.sync(src, ready[0], options, f"importing into {args.name}")
        else:
            report = _through_temporary_mount(
                args, lambda path: c.mount_volume(args.name, path, read_only=options.dry_run),
                lambda path: c.unmount_volume(path=path),
                lambda path: transfer.sync(src, path, options, f"importing into {args.name}"))
    return transfer.finish(report, f"import into {args.name}", dry_run=options.dry_run)


def volume_export(args: argparse.Namespace) -> int:
    """Copy a snapshot (a consistent image) out to a host directory, through a read-only
    mount of the snapshot on a temporary mount point."""
    if "@" not in args.snapshot:
        raise InvalidArgument(f"export reads a snapshot, so the copy is consistent: give VOLUME@SNAPSHOT, "
                              f"not {args.snapshot!r} (make one with galleonctl snapshot create)")
    volume, snap = names.split_snapshot_ref(args.snapshot)
    options = transfer.options_from(args)
    dest = transfer.check_target(args.dest, "destination")
    with _client(args) as c:
        c.get_snapshot(volume, snap)            # not found: say so before mounting anything
        report = _through_temporary_mount(
            args, lambda path: c.mount_snapshot(volume, snap, path),
            lambda path: c.unmount_volume(path=path),
            lambda path: transfer.sync(path, dest, options, f"exporting {volume}@{snap}"))
    return transfer.finish(report, f"export of {volume}@{snap}", dry_run=options.dry_run)


def _through_temporary_mount(args: argparse.Namespace, mount: Callable[[str], Any],
                             unmount: Callable[[str], Any],
                             copy: Callable[[str], transfer.Report]) -> transfer.Report:
    import tempfile

    work_dir = os.path.abspath(args.work_dir)
    if not os.path.isdir(work_dir):
        os.makedirs(work_dir, mode=0o700, exist_ok=True)
    path = tempfile.mkdtemp(prefix="transfer-", dir=work_dir)
    mounted = False
    try:
        mount(path)
        mounted = True
        try:
            _check_here(path)
            return copy(path)
        finally:
            _unmount_settled(path, unmount)
            mounted = False
    finally:
        if not mounted:
            os.rmdir(path)


def _check_here(path: str) -> None:
    """The copy runs in this process: the mount must be on this machine. A daemon reached over
    TCP mounts on its own node, and copying into the empty local directory of the same name
    would report success with nothing on the volume."""
    if not os.path.ismount(path):
        raise InvalidArgument(f"the volume is mounted at {path} on galleond's node, not on this machine; "
                              f"run import/export on the node itself")


def _unmount_settled(path: str, unmount: Callable[[str], Any]) -> None:
    """Unmount once the kernel's background RELEASEs of the copy's files are answered: a
    STATFS is queued behind them, and a few short retries cover what is still in flight."""
    import time

    from ..errors import Busy

    for attempt in range(UNMOUNT_TRIES):
        os.statvfs(path)
        try:
            unmount(path)
            return
        except Busy:
            if attempt == UNMOUNT_TRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def key_rotate(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.rotate_key()
    print(f"key rotated: {r.volumes} volume key file(s) re-wrapped under the new {r.key_file}; "
          f"the previous key is in {r.previous_key_file} (delete it once backups no longer need it)")
    return 0


def node_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.node_status()), output.node_detail)


# --- audit ---------------------------------------------------------------------------------------
def audit_list(args: argparse.Namespace) -> int:
    from .since import parse_since

    since_ns = parse_since(args.since) if args.since else 0
    with _client(args) as c:
        reply = c.list_audit(since_ns=since_ns, volume=args.volume or "")
    records = [output.to_dict(r) for r in reply.records]
    if args.output == "table" and not records:
        print("no audit records")
        return 0
    output.emit(args, records, output.audit_rows)
    if reply.truncated:
        print(f"galleonctl: only the newest {len(records)} records are shown; narrow with --since",
              file=sys.stderr)
    return 0


def audit_verify(args: argparse.Namespace) -> int:
    from ..errors import Corrupt

    with _client(args) as c:
        reply = c.verify_audit()
    if not reply.intact:
        where = f" at line {reply.bad_line}" if reply.bad_line else ""
        raise Corrupt(f"audit log {reply.path} is broken{where}: {reply.problem}")
    print(f"audit log intact: {reply.records} records")
    return 0


def top(args: argparse.Namespace) -> int:
    from . import top as top_view

    with _client(args) as c:
        return top_view.run(args, c)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 3600")
    return value


def completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


# --- parser --------------------------------------------------------------------------------------
def _read_command(sub: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int],
                  **kwargs: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".", **kwargs)
    p.add_argument("-o", "--output", choices=output.FORMATS, default="table", help="output format (default table)")
    p.set_defaults(func=func)
    return p


# Where mounts may go: the node decides (galleond's mount_roots), so this can only say how.
_MOUNT_WHERE = ("Mount %s on PATH: an empty directory inside one of the node's mount roots "
                "(galleond's mount_roots; default /mnt, /media, /srv, /run/galleonfs/mounts, "
                "/var/lib/kubelet), with no symlink in the path. Only its last component is "
                "created if missing. Mounts are always nosuid,nodev.")


def _add_volume_commands(nouns: Any) -> None:
    volume = nouns.add_parser("volume", help="create, mount, expand and delete volumes").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = volume.add_parser("create", help="create a volume", description="Create a volume.")
    p.add_argument("name", help="DNS label: lowercase letters, digits and '-', at most 63")
    p.add_argument("--size", required=True, help="capacity (a hard quota): e.g. 512M, 10G")
    p.add_argument("--class", dest="storage_class", help="storage class (default: the default class)")
    p.add_argument("--access-mode", action="append", metavar="MODE",
                   help="ReadWriteOnce|RWO (default), ReadOnlyMany|ROX, ReadWriteMany|RWX; repeatable")
    p.add_argument("--type", default="persistent", help="persistent (default), ephemeral or shared")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--replicas", type=_count, default=0, metavar="N",
                   help="cluster mode: place it on N nodes (distinct nodes and zones); default 1")
    p.add_argument("--allow-degraded", action="store_true",
                   help="with --replicas: create it on fewer nodes when not enough are ready")
    p.set_defaults(func=volume_create)
    p = _read_command(volume, "list", "list volumes", volume_list)
    p.add_argument("--selector", "-l", action="append", metavar="KEY=VALUE", help="only volumes with these labels")
    _read_command(volume, "get", "show one volume", volume_get).add_argument("name")
    _read_command(volume, "stats", "show a volume's usage and counters", volume_stats).add_argument("name")
    p = volume.add_parser("delete", help="delete a volume and its data", description="Delete a volume.")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="unmount it first if it is mounted")
    p.set_defaults(func=volume_delete)
    p = volume.add_parser("expand", help="grow a volume (online)", description="Grow a volume, mounted or not.")
    p.add_argument("name")
    p.add_argument("--size", required=True, help="the new size; shrinking is refused")
    p.set_defaults(func=volume_expand)
    p = volume.add_parser("mount", help="mount a volume on a directory", description=_MOUNT_WHERE % "a volume")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--read-only", action="store_true")
    p.set_defaults(func=volume_mount)
    p = volume.add_parser("unmount", aliases=["umount"], help="unmount by name (all mount points) or by path",
                          description="Unmount one mount point (PATH) or every mount point of a volume (NAME).")
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--force", action="store_true",
                   help="detach even if files are in use there (they get errors from then on)")
    p.set_defaults(func=volume_unmount)

    p = volume.add_parser("clone", help="a new volume from a snapshot, sharing its blocks",
                          description="Create volume NAME from snapshot VOLUME@SNAPSHOT. It shares the "
                                      "snapshot's blocks until flattened; writes on either side never "
                                      "show on the other.")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--size", help="default: the origin's size")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=volume_clone)
    p = volume.add_parser("flatten", help="make a clone independent of its origin",
                          description="Copy the blocks a clone shares with its origin, so that the "
                                      "origin's snapshot can be deleted.")
    p.add_argument("name")
    p.set_defaults(func=volume_flatten)
    p = volume.add_parser("rekey", help="give an encrypted volume a new data key (rewrites it)",
                          description="Replace an encrypted volume's data key: everything sealed under "
                                      "the old key is sealed again and the old key is forgotten. The "
                                      "volume must be unmounted; progress is shown as it goes.")
    p.add_argument("name")
    p.set_defaults(func=volume_rekey)

    p = volume.add_parser("import", help="copy a directory into a volume (like rsync -a)",
                          description="Make volume NAME's tree a copy of SRC_DIR: contents (holes kept), "
                                      "modes, owners, times, xattrs, symlinks, hard links. Only changed "
                                      "files are copied; a killed run, run again, copies what is missing. "
                                      "Runs on the node: the volume's existing read-write mount point is "
                                      "used, or a temporary one under --work-dir.")
    p.add_argument("name")
    p.add_argument("src", metavar="SRC_DIR")
    transfer.add_arguments(p)
    p.add_argument("--work-dir", default=WORK_DIR_DEFAULT,
                   help=f"where a temporary mount point is made, inside galleond's mount_roots (default {WORK_DIR_DEFAULT})")
    p.set_defaults(func=volume_import)
    p = volume.add_parser("export", help="copy a snapshot of a volume out to a directory",
                          description="Make DEST_DIR a copy of snapshot VOLUME@SNAPSHOT (a consistent "
                                      "image, whatever is written to the volume meanwhile), with the "
                                      "same attributes and rules as import.")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.add_argument("dest", metavar="DEST_DIR")
    transfer.add_arguments(p)
    p.add_argument("--work-dir", default=WORK_DIR_DEFAULT,
                   help=f"where the snapshot is mounted for the copy, inside galleond's mount_roots (default {WORK_DIR_DEFAULT})")
    p.set_defaults(func=volume_export)


def _add_node_commands(nouns: Any) -> None:
    """``key``, ``node``, ``audit``, ``top`` and ``completion``."""
    key = nouns.add_parser("key", help="the node's key-encryption key").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = key.add_parser("rotate", help="re-wrap every volume's keys under a new key file",
                       description="Create a new key-encryption key, re-wrap every encrypted volume's "
                                   "data keys under it (no data is rewritten) and make it the node's "
                                   "key_file; the previous key stays in <key_file>.old.")
    p.set_defaults(func=key_rotate)

    node = nouns.add_parser("node", help="this node").add_subparsers(dest="verb", required=True, metavar="VERB")
    _read_command(node, "status", "show the node's status", node_status)
    cluster.add_node_verbs(node)

    audit = nouns.add_parser("audit", help="the log of API calls that changed state").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = _read_command(audit, "list", "list audit records: who changed what, when, with what result",
                      audit_list)
    p.add_argument("--since", metavar="TIME|DURATION", help="e.g. 15m, 2h, 7d or 2026-11-30T20:00:00Z")
    p.add_argument("--volume", metavar="NAME", help="only calls about this volume")
    p = audit.add_parser("verify", help="check the audit log's hash chain",
                         description="Check that no line of the audit log was edited, removed, "
                                     "reordered or inserted. Exit 0 when intact, 7 when not.")
    p.set_defaults(func=audit_verify)

    p = _read_command(nouns, "top", "show every volume's IOPS, MB/s, latency and usage, refreshed",
                      top)
    p.add_argument("--interval", type=_seconds, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--iterations", type=_count, default=0, metavar="N", help="stop after N refreshes (default: never)")
    p.add_argument("--once", action="store_true", help="print one frame and exit (= --iterations 1)")

    p = nouns.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    p.set_defaults(func=completion)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleonctl", description="Manage GalleonFS volumes and storage classes on a node.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("GALLEONFS_ADDRESS", DEFAULT_ADDRESS),
                        help="galleond's address: unix:/path.sock or host:port (env GALLEONFS_ADDRESS)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer")
    access.add_connection_options(parser)
    nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")

    _add_volume_commands(nouns)
    snapshots.add_commands(nouns, _read_command, _MOUNT_WHERE)
    qos.add_commands(nouns, _read_command)
    access.add_commands(nouns, _read_command)
    classes.add_commands(nouns, _read_command)
    backup.add_commands(nouns, _read_command)
    _add_node_commands(nouns)
    cluster.add_commands(nouns, _read_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    # grpcio's core logs a refused TLS handshake at INFO on stderr; the user gets our one
    # sentence instead (set before grpc is first imported, which is lazily, below).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return run(argv, build_parser(), "galleonctl")


if __name__ == "__main__":
    sys.exit(main())
