"""``galleonctl``: drive galleond. Subcommands by noun (DESIGN §6).

Every read command takes ``-o table|json|yaml``; sizes are accepted and printed in human
units; exit codes are the stable ones of ``errors.ExitCode``; a user error prints one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .. import names
from ..errors import InvalidArgument
from ..managers.model import AccessMode, BindingMode, ReclaimPolicy, VolumeType
from ..rpc import convert
from ..units import format_size, parse_size
from . import access, output, qos
from .common import ProgressLine, run

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
  galleonctl snapshot-policy create hourly --schedule '0 * * * *' --retention 24 -l backup=yes
  galleonctl qos create gold --iops-limit 500 --throughput-limit-mbps 20 && galleonctl qos assign gold data
  galleonctl storage-class create fast.yaml
  galleonctl node status
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


def _labels(pairs: list[str] | None) -> dict[str, str]:
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(what="label", value=repr(pair), expected="use key=value")
        labels[key] = value
    return labels


def _emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> int:
    fmt = getattr(args, "output", "table")
    print(human(data) if fmt == "table" else output.dump(data, fmt))
    return 0


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
                            labels=_labels(args.label))
    print(f"volume {v.name} created ({format_size(v.size_bytes)}, {v.storage_class}, id {v.id})")
    return 0


def volume_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        volumes = [output.to_dict(v) for v in c.list_volumes(_labels(args.selector))]
    if args.output == "table":
        print(output.volume_rows(volumes) if volumes else "no volumes")
        return 0
    return _emit(args, volumes, output.volume_rows)


def volume_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, output.to_dict(c.get_volume(args.name)), output.volume_detail)


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
        return _emit(args, output.to_dict(c.volume_stats(args.name)), output.stats_detail)


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


# --- snapshots and clones ------------------------------------------------------------------------
def split_snapshot(text: str) -> tuple[str, str]:
    return names.split_snapshot_ref(text)


def snapshot_create(args: argparse.Namespace) -> int:
    volume, name = split_snapshot(args.snapshot)
    with _client(args) as c:
        snap = c.create_snapshot(volume, name)
    print(f"snapshot {snap.volume}@{snap.name} created (generation {snap.generation})")
    return 0


def snapshot_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        snaps = [output.to_dict(s) for s in c.list_snapshots(args.volume or "")]
    if args.output == "table" and not snaps:
        print("no snapshots")
        return 0
    return _emit(args, snaps, output.snapshot_rows)


def snapshot_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, output.to_dict(c.get_snapshot(*split_snapshot(args.snapshot))), output.snapshot_detail)


def snapshot_delete(args: argparse.Namespace) -> int:
    volume, name = split_snapshot(args.snapshot)
    with _client(args) as c:
        reply = c.delete_snapshot(volume, name)
    print(f"snapshot {volume}@{name} deleted; {format_size(reply.freed_bytes)} freed (reclaimed on disk by GC)")
    return 0


def snapshot_restore(args: argparse.Namespace) -> int:
    volume, name = split_snapshot(args.snapshot)
    with _client(args) as c:
        c.restore_snapshot(volume, name, force=args.force)
    print(f"volume {volume} restored to snapshot {name}")
    return 0


def snapshot_diff(args: argparse.Namespace) -> int:
    volume, old = split_snapshot(args.old)
    new = ""
    if args.new:
        other, new = split_snapshot(args.new) if "@" in args.new else (volume, args.new)
        if other != volume:
            raise InvalidArgument(f"both snapshots must be of the same volume ({volume}, not {other})")
    with _client(args) as c:
        entries = [output.to_dict(e) for e in c.diff_snapshots(volume, old, new)]
    return _emit(args, entries, output.diff_lines)


def snapshot_mount(args: argparse.Namespace) -> int:
    volume, name = split_snapshot(args.snapshot)
    path = os.path.abspath(args.path)
    with _client(args) as c:
        c.mount_snapshot(volume, name, path)
    print(f"snapshot {volume}@{name} mounted read-only on {path} (unmount: galleonctl volume unmount {path})")
    return 0


def volume_clone(args: argparse.Namespace) -> int:
    volume, snap = split_snapshot(args.snapshot)
    size = _size(args.size) if args.size else 0
    with _client(args) as c:
        v = c.clone_volume(volume, snap, args.name, size=size, labels=_labels(args.label))
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


def key_rotate(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.rotate_key()
    print(f"key rotated: {r.volumes} volume key file(s) re-wrapped under the new {r.key_file}; "
          f"the previous key is in {r.previous_key_file} (delete it once backups no longer need it)")
    return 0


def policy_create(args: argparse.Namespace) -> int:
    from ..v1 import snapshot_pb2

    if args.retention < 1:
        raise InvalidArgument("--retention must be at least 1")
    with _client(args) as c:
        p = c.create_policy(snapshot_pb2.SnapshotPolicy(
            name=args.name, schedule=args.schedule, retention=args.retention,
            volume_selector=_labels(args.selector)))
    print(f"snapshot policy {p.name} created: {p.schedule}, keeping {p.retention} per volume")
    return 0


def policy_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, [output.to_dict(p) for p in c.list_policies()], output.policy_rows)


def policy_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, output.to_dict(c.get_policy(args.name)), lambda d: output.policy_rows([d]))


def policy_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_policy(args.name)
    print(f"snapshot policy {args.name} deleted (its snapshots are kept)")
    return 0


# --- storage classes -----------------------------------------------------------------------------
_CLASS_KEYS = {"name", "parameters", "reclaim_policy", "reclaimPolicy", "volume_binding_mode",
               "volumeBindingMode", "default", "is_default"}


def read_class_file(path: str) -> Any:
    from ..v1 import types_pb2

    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else _yaml_load(text)
    except ValueError as exc:
        raise InvalidArgument(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path} must hold a mapping with at least 'name'")
    unknown = sorted(set(data) - _CLASS_KEYS)
    if unknown:
        raise InvalidArgument(f"{path}: unknown key {unknown[0]!r}; use name, parameters, "
                              f"reclaim_policy, volume_binding_mode, default")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"{path}: parameters must be a mapping")
    reclaim_text = str(data.get("reclaim_policy", data.get("reclaimPolicy", "delete"))).lower()
    binding_text = str(data.get("volume_binding_mode", data.get("volumeBindingMode", "Immediate")))
    reclaim = {p.value: p for p in ReclaimPolicy}.get(reclaim_text)
    binding = {b.value.lower(): b for b in BindingMode}.get(binding_text.lower().replace("_", ""))
    if reclaim is None:
        raise InvalidArgument(f"{path}: reclaim_policy must be delete or retain, not {reclaim_text!r}")
    if binding is None:
        raise InvalidArgument(f"{path}: volume_binding_mode must be Immediate or WaitForFirstConsumer")
    return types_pb2.StorageClass(
        name=str(data.get("name", "")), parameters={str(k): _parameter(v) for k, v in parameters.items()},
        reclaim_policy=convert.reclaim_policy_to_pb(reclaim),
        volume_binding_mode=convert.binding_mode_to_pb(binding),
        is_default=bool(data.get("default", data.get("is_default", False))))


def _parameter(value: Any) -> str:
    # YAML 1.1 reads an unquoted on/off (yes/no) as a boolean; in a storage class those
    # words only ever mean a switch (``dedup: off``), so give the daemon the word back.
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _yaml_load(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def class_create(args: argparse.Namespace) -> int:
    cls = read_class_file(args.file)
    with _client(args) as c:
        created = c.create_storage_class(cls)
    print(f"storage class {created.name} created")
    return 0


def class_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, [output.to_dict(x) for x in c.list_storage_classes()], output.class_rows)


def class_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, output.to_dict(c.get_storage_class(args.name)),
                     lambda d: output.class_rows([d]))


def class_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_storage_class(args.name)
    print(f"storage class {args.name} deleted")
    return 0


def node_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, output.to_dict(c.node_status()), output.node_detail)


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
    _emit(args, records, output.audit_rows)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleonctl", description="Manage GalleonFS volumes and storage classes on a node.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("GALLEONFS_ADDRESS", DEFAULT_ADDRESS),
                        help="galleond's address: unix:/path.sock or host:port (env GALLEONFS_ADDRESS)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer")
    access.add_connection_options(parser)
    nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")

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

    snapshot = nouns.add_parser("snapshot", help="point-in-time images of volumes").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = snapshot.add_parser("create", help="take a snapshot (constant time, any volume size)",
                            description="Take a snapshot of a volume, mounted or not. It holds every "
                                        "write that returned before the request. Browse it under "
                                        "MOUNTPOINT/.snapshots/SNAPSHOT.")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.set_defaults(func=snapshot_create)
    _read_command(snapshot, "list", "list snapshots (of one volume, or of all)", snapshot_list).add_argument(
        "volume", nargs="?", metavar="VOLUME")
    _read_command(snapshot, "get", "show one snapshot", snapshot_get).add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p = snapshot.add_parser("delete", help="delete a snapshot and free what only it used",
                            description="Delete a snapshot. Refused while clones depend on it.")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.set_defaults(func=snapshot_delete)
    p = snapshot.add_parser("restore", help="roll the volume back to a snapshot",
                            description="Roll a volume back to a snapshot. Refused while it is mounted "
                                        "unless --force, which unmounts, restores and mounts it again. "
                                        "Later snapshots are kept.")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=snapshot_restore)
    p = _read_command(snapshot, "diff", "paths created (+), deleted (-), modified (M), renamed (R)",
                      snapshot_diff)
    p.add_argument("old", metavar="VOLUME@OLD")
    p.add_argument("new", nargs="?", metavar="[VOLUME@]NEW", help="default: the live volume")
    p = snapshot.add_parser("mount", help="mount one snapshot read-only",
                            description=_MOUNT_WHERE % "VOLUME@SNAPSHOT read-only")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.add_argument("path")
    p.set_defaults(func=snapshot_mount)

    policy = nouns.add_parser("snapshot-policy", help="scheduled snapshots with retention").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = policy.add_parser("create", help="snapshot matching volumes on a schedule",
                          description="Take a snapshot of every volume with the selector's labels on a "
                                      "cron schedule and keep the newest RETENTION of them.")
    p.add_argument("name")
    p.add_argument("--schedule", required=True, help="cron: '0 * * * *' hourly; a sixth field is seconds")
    p.add_argument("--retention", type=int, required=True, help="snapshots kept per volume")
    p.add_argument("--selector", "-l", action="append", metavar="KEY=VALUE", help="default: every volume")
    p.set_defaults(func=policy_create)
    _read_command(policy, "list", "list snapshot policies", policy_list)
    _read_command(policy, "get", "show one snapshot policy", policy_get).add_argument("name")
    p = policy.add_parser("delete", help="delete a policy (its snapshots stay)", description="Delete a snapshot policy.")
    p.add_argument("name")
    p.set_defaults(func=policy_delete)

    qos.add_commands(nouns, _read_command)
    access.add_commands(nouns, _read_command)

    classes = nouns.add_parser("storage-class", help="manage storage classes").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = classes.add_parser("create", help="create a storage class from a YAML or JSON file",
                           description="Create a storage class from FILE, e.g.:\n\n  name: fast\n"
                                       "  parameters: {block_size: 128K}\n  reclaim_policy: retain\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.set_defaults(func=class_create)
    _read_command(classes, "list", "list storage classes", class_list)
    _read_command(classes, "get", "show one storage class", class_get).add_argument("name")
    p = classes.add_parser("delete", help="delete a storage class", description="Delete a storage class.")
    p.add_argument("name")
    p.set_defaults(func=class_delete)

    key = nouns.add_parser("key", help="the node's key-encryption key").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = key.add_parser("rotate", help="re-wrap every volume's keys under a new key file",
                       description="Create a new key-encryption key, re-wrap every encrypted volume's "
                                   "data keys under it (no data is rewritten) and make it the node's "
                                   "key_file; the previous key stays in <key_file>.old.")
    p.set_defaults(func=key_rotate)

    node = nouns.add_parser("node", help="this node").add_subparsers(dest="verb", required=True, metavar="VERB")
    _read_command(node, "status", "show the node's status", node_status)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    # grpcio's core logs a refused TLS handshake at INFO on stderr; the user gets our one
    # sentence instead (set before grpc is first imported, which is lazily, below).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return run(argv, build_parser(), "galleonctl")


if __name__ == "__main__":
    sys.exit(main())
