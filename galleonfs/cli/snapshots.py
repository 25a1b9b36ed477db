"""``galleonctl snapshot ...`` and ``galleonctl snapshot-policy ...``: point-in-time images
of volumes, and the schedules that take and prune them.

Kept out of ``galleonctl.py`` (which only calls ``add_commands``), like the ``qos`` and
``token``/``tenant`` nouns, so each noun reads in one place.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from .. import names
from ..errors import InvalidArgument
from ..units import format_size
from . import output
from .access import client as _client
from .common import parse_labels


def snapshot_create(args: argparse.Namespace) -> int:
    volume, name = names.split_snapshot_ref(args.snapshot)
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
    return output.emit(args, snaps, output.snapshot_rows)


def snapshot_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.get_snapshot(*names.split_snapshot_ref(args.snapshot))), output.snapshot_detail)


def snapshot_delete(args: argparse.Namespace) -> int:
    volume, name = names.split_snapshot_ref(args.snapshot)
    with _client(args) as c:
        reply = c.delete_snapshot(volume, name)
    print(f"snapshot {volume}@{name} deleted; {format_size(reply.freed_bytes)} freed (reclaimed on disk by GC)")
    return 0


def snapshot_restore(args: argparse.Namespace) -> int:
    volume, name = names.split_snapshot_ref(args.snapshot)
    with _client(args) as c:
        c.restore_snapshot(volume, name, force=args.force)
    print(f"volume {volume} restored to snapshot {name}")
    return 0


def snapshot_diff(args: argparse.Namespace) -> int:
    volume, old = names.split_snapshot_ref(args.old)
    new = ""
    if args.new:
        other, new = names.split_snapshot_ref(args.new) if "@" in args.new else (volume, args.new)
        if other != volume:
            raise InvalidArgument(f"both snapshots must be of the same volume ({volume}, not {other})")
    with _client(args) as c:
        entries = [output.to_dict(e) for e in c.diff_snapshots(volume, old, new)]
    return output.emit(args, entries, output.diff_lines)


def snapshot_mount(args: argparse.Namespace) -> int:
    volume, name = names.split_snapshot_ref(args.snapshot)
    path = os.path.abspath(args.path)
    with _client(args) as c:
        c.mount_snapshot(volume, name, path)
    print(f"snapshot {volume}@{name} mounted read-only on {path} (unmount: galleonctl volume unmount {path})")
    return 0


def policy_create(args: argparse.Namespace) -> int:
    from ..v1 import snapshot_pb2

    if args.retention < 1:
        raise InvalidArgument("--retention must be at least 1")
    with _client(args) as c:
        p = c.create_policy(snapshot_pb2.SnapshotPolicy(
            name=args.name, schedule=args.schedule, retention=args.retention,
            volume_selector=parse_labels(args.selector)))
    print(f"snapshot policy {p.name} created: {p.schedule}, keeping {p.retention} per volume")
    return 0


def policy_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, [output.to_dict(p) for p in c.list_policies()], output.policy_rows)


def policy_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.get_policy(args.name)), lambda d: output.policy_rows([d]))


def policy_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_policy(args.name)
    print(f"snapshot policy {args.name} deleted (its snapshots are kept)")
    return 0


def add_commands(nouns: Any, read_command: Callable[..., argparse.ArgumentParser],
                 mount_where: str) -> None:
    """Add ``snapshot`` and ``snapshot-policy``; ``read_command`` adds ``-o``, and
    ``mount_where`` says where mounts may go (a format with one ``%s``)."""
    snapshot = nouns.add_parser("snapshot", help="point-in-time images of volumes").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = snapshot.add_parser("create", help="take a snapshot (constant time, any volume size)",
                            description="Take a snapshot of a volume, mounted or not. It holds every "
                                        "write that returned before the request. Browse it under "
                                        "MOUNTPOINT/.snapshots/SNAPSHOT.")
    p.add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
    p.set_defaults(func=snapshot_create)
    read_command(snapshot, "list", "list snapshots (of one volume, or of all)", snapshot_list).add_argument(
        "volume", nargs="?", metavar="VOLUME")
    read_command(snapshot, "get", "show one snapshot", snapshot_get).add_argument("snapshot", metavar="VOLUME@SNAPSHOT")
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
    p = read_command(snapshot, "diff", "paths created (+), deleted (-), modified (M), renamed (R)",
                      snapshot_diff)
    p.add_argument("old", metavar="VOLUME@OLD")
    p.add_argument("new", nargs="?", metavar="[VOLUME@]NEW", help="default: the live volume")
    p = snapshot.add_parser("mount", help="mount one snapshot read-only",
                            description=mount_where % "VOLUME@SNAPSHOT read-only")
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
    read_command(policy, "list", "list snapshot policies", policy_list)
    read_command(policy, "get", "show one snapshot policy", policy_get).add_argument("name")
    p = policy.add_parser("delete", help="delete a policy (its snapshots stay)", description="Delete a snapshot policy.")
    p.add_argument("name")
    p.set_defaults(func=policy_delete)
