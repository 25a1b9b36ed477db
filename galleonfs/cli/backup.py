"""``galleonctl backup-target``, ``backup`` and ``backup-policy``: off-node backups (issue 13).

Long commands (create, restore, verify) read a stream of progress events and end with the
result; on a terminal the progress is one line on stderr (bytes, rate, ETA), rewritten in
place. Secrets never go on the command line: a target names where galleond finds its S3
credentials (``--credentials-env PREFIX``) and its repository passphrase (``--key-env VAR``),
both in galleond's own environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ExitCode, GalleonError, InvalidArgument
from ..units import format_size
from . import output
from .access import client as _client
from .common import parse_labels


class _Progress:
    """``phase: 1.2G/4.0G  310M/s  ETA 9s`` on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, p: Any) -> None:
        if not self.tty:
            return
        done = format_size(p.bytes_done)
        total = f"/{format_size(p.bytes_total)}" if p.bytes_total else ""
        eta = f"  ETA {p.eta_seconds:.0f}s" if p.eta_seconds >= 0 and not p.done else ""
        print(f"\r{p.phase}: {done}{total}  {format_size(int(p.rate_bytes_per_second))}/s{eta}\033[K",
              end="", file=sys.stderr, flush=True)
        self.shown = True

    def end(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _follow(events: Iterator[Any], want: str) -> Any:
    progress = _Progress()
    try:
        for event in events:
            kind = event.WhichOneof("event")
            if kind == "progress":
                progress(event.progress)
            elif kind == want:
                return getattr(event, want)
    finally:
        progress.end()
    raise GalleonError("galleond ended the stream without a result; see its log")


# --- targets ---------------------------------------------------------------------------------
def target_create(args: argparse.Namespace) -> int:
    from ..v1 import backup_pb2

    url = args.url
    if url.startswith("/"):
        url = "file://" + url
    with _client(args) as c:
        reply = c.create_backup_target(backup_pb2.BackupTarget(
            name=args.name, url=url, endpoint=args.endpoint or "", region=args.region or "",
            credentials_env=args.credentials_env or "", key_env=args.key_env or ""))
    what = "a new repository" if reply.repository_created else "the existing repository"
    print(f"backup target {reply.target.name} created at {reply.target.url} ({what})")
    return 0


def target_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        targets = [output.to_dict(t) for t in c.list_backup_targets()]
    return output.emit(args, targets, lambda ts: output.table(
        [[t["name"], t["url"], t["endpoint"] or "-", t["credentials_env"] or "-", t["key_env"]] for t in ts],
        ["NAME", "URL", "ENDPOINT", "CREDENTIALS-ENV", "KEY-ENV"]) if ts else "no backup targets")


def target_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_backup_target(args.name)
    print(f"backup target {args.name} deleted on this node (its backups stay in the target)")
    return 0


# --- backups ---------------------------------------------------------------------------------
def _rows(backups: list[dict[str, Any]]) -> str:
    if not backups:
        return "no backups"
    return output.table([[f"{b['volume']}@{b['id']}", b["target"], b["time"], b["snapshot"],
                          format_size(int(b["used_bytes"])), format_size(int(b["bytes_new"]))]
                         for b in backups], ["BACKUP", "TARGET", "TIME", "SNAPSHOT", "USED", "SENT"])


def backup_create(args: argparse.Namespace) -> int:
    snapshot = ""
    if args.snapshot:
        volume, at, snapshot = args.snapshot.partition("@")
        if not at or volume != args.volume:
            raise InvalidArgument(f"--snapshot takes {args.volume}@SNAPSHOT, not {args.snapshot!r}")
    with _client(args) as c:
        b = _follow(c.create_backup(args.volume, args.target, snapshot), "backup")
    kind = f"incremental on {b.parent}" if b.parent else "full"
    print(f"backup {b.volume}@{b.id} created in {b.target} from snapshot {b.snapshot} "
          f"({kind}; {format_size(b.bytes_new)} sent)")
    return 0


def backup_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        backups = [output.to_dict(b) for b in c.list_backups(args.volume or "", args.target or "")]
    return output.emit(args, backups, _rows)


def backup_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.get_backup(args.backup)), lambda b: output.dump(b, "yaml"))


def backup_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.delete_backup(args.backup)
    b = reply.backup
    if reply.gc_error:
        print(f"backup {b.volume}@{b.id} deleted from {b.target}; garbage collection did not run: "
              f"{reply.gc_error}", file=sys.stderr)
        return 0
    print(f"backup {b.volume}@{b.id} deleted from {b.target}; {format_size(reply.freed_bytes)} freed")
    return 0


def backup_restore(args: argparse.Namespace) -> int:
    with _client(args) as c:
        v = _follow(c.restore_backup(args.backup, args.to, args.storage_class or ""), "volume")
    print(f"backup {args.backup} restored to new volume {v.name} ({format_size(v.size_bytes)})")
    return 0


def backup_verify(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = _follow(c.verify_backups(args.target, args.deep), "report")
    how = "every blob read" if args.deep else "structure only; --deep reads every blob"
    if r.ok:
        print(f"backup target {args.target}: OK ({r.backups} backups, {r.packs} packs, {r.blobs} blobs; {how})")
        return 0
    for problem in r.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"backup target {args.target}: {len(r.problems)} problems found ({how})")
    return ExitCode.CORRUPT


# --- policies --------------------------------------------------------------------------------
def policy_create(args: argparse.Namespace) -> int:
    from ..v1 import backup_pb2

    for flag in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
        if getattr(args, flag) < 0:
            raise InvalidArgument(f"--{flag.replace('_', '-')} must be 0 or more")
    if not args.hook_timeout > 0:
        raise InvalidArgument(f"--hook-timeout must be more than 0 seconds, not {args.hook_timeout:g}")
    with _client(args) as c:
        p = c.create_backup_policy(backup_pb2.BackupPolicy(
            name=args.name, schedule=args.schedule, target=args.target,
            volume_selector=parse_labels(args.selector), keep_last=args.keep_last,
            keep_daily=args.keep_daily, keep_weekly=args.keep_weekly, keep_monthly=args.keep_monthly,
            pre_hook=args.pre_hook or "", post_hook=args.post_hook or "",
            hook_timeout_seconds=args.hook_timeout))
    print(f"backup policy {p.name} created: {p.schedule} to {p.target}")
    return 0


def policy_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        policies = [output.to_dict(p) for p in c.list_backup_policies()]
    return output.emit(args, policies, lambda ps: output.table(
        [[p["name"], p["schedule"], p["target"],
          ",".join(f"{k}={v}" for k, v in p["volume_selector"].items()) or "*",
          f"{p['keep_last']}/{p['keep_daily']}/{p['keep_weekly']}/{p['keep_monthly']}",
          p.get("last_error") or "-"] for p in ps],
        ["NAME", "SCHEDULE", "TARGET", "SELECTOR", "KEEP L/D/W/M", "LAST ERROR"]) if ps else "no backup policies")


def policy_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_backup_policy(args.name)
    print(f"backup policy {args.name} deleted (its backups are kept)")
    return 0


def add_commands(nouns: Any, read_command: Callable[..., argparse.ArgumentParser]) -> None:
    target = nouns.add_parser("backup-target", help="where backups go (S3 or a directory)").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = target.add_parser("create", help="register a backup target",
                          description="Register a backup target: a new repository on an empty one, or "
                                      "an existing one (after a disaster: its backups can then be listed "
                                      "and restored). Secrets are references to galleond's environment.")
    p.add_argument("name")
    p.add_argument("url", metavar="URL", help="s3://bucket/prefix or file:///path")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: AWS)")
    p.add_argument("--region")
    p.add_argument("--credentials-env", metavar="PREFIX",
                   help="galleond reads PREFIX_ACCESS_KEY_ID and PREFIX_SECRET_ACCESS_KEY from its environment")
    p.add_argument("--key-env", metavar="VAR", required=True,
                   help="galleond's environment variable holding the repository passphrase")
    p.set_defaults(func=target_create)
    read_command(target, "list", "list backup targets", target_list)
    p = target.add_parser("delete", help="forget a target on this node (its backups stay)",
                          description="Forget a backup target on this node; its repository is untouched.")
    p.add_argument("name")
    p.set_defaults(func=target_delete)

    backup = nouns.add_parser("backup", help="off-node backups of volumes").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = backup.add_parser("create", help="back up a volume",
                          description="Back up a volume to a target: a snapshot is taken unless "
                                      "--snapshot names one; after the first, only what changed is sent.")
    p.add_argument("volume", metavar="VOLUME")
    p.add_argument("--target", required=True)
    p.add_argument("--snapshot", metavar="VOLUME@SNAPSHOT")
    p.set_defaults(func=backup_create)
    p = read_command(backup, "list", "list backups (of one volume, or all)", backup_list)
    p.add_argument("volume", nargs="?", metavar="VOLUME")
    p.add_argument("--target")
    read_command(backup, "get", "show one backup", backup_get).add_argument("backup", metavar="VOLUME@BACKUP")
    p = backup.add_parser("delete", help="delete a backup (space freed by GC)", description="Delete a backup.")
    p.add_argument("backup", metavar="VOLUME@BACKUP")
    p.set_defaults(func=backup_delete)
    p = backup.add_parser("restore", help="restore a backup into a new volume",
                          description="Restore a backup into a new volume (full and incremental "
                                      "backups alike restore on their own).")
    p.add_argument("backup", metavar="VOLUME@BACKUP")
    p.add_argument("--to", required=True, metavar="NEWVOL")
    p.add_argument("--storage-class")
    p.set_defaults(func=backup_restore)
    p = backup.add_parser("verify", help="check every object of a target",
                          description="Check a target's index, manifests and packs; --deep reads and "
                                      "authenticates every blob.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--deep", action="store_true")
    p.set_defaults(func=backup_verify)

    policy = nouns.add_parser("backup-policy", help="scheduled backups with retention").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = policy.add_parser("create", help="back up matching volumes on a schedule",
                          description="Back up every volume with the selector's labels on a cron "
                                      "schedule, then keep what the --keep-* rules say and free the rest.")
    p.add_argument("name")
    p.add_argument("--schedule", required=True, help="cron: '0 2 * * *' nightly at 02:00 UTC")
    p.add_argument("--selector", "-l", action="append", metavar="KEY=VALUE", help="default: every volume")
    p.add_argument("--target", required=True)
    for rule in ("last", "daily", "weekly", "monthly"):
        p.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N")
    p.add_argument("--pre-hook", metavar="CMD", help="run (sh -c, on the node) before the snapshot")
    p.add_argument("--post-hook", metavar="CMD", help="run after the snapshot")
    p.add_argument("--hook-timeout", type=float, default=60.0, metavar="SECONDS")
    p.set_defaults(func=policy_create)
    read_command(policy, "list", "list backup policies", policy_list)
    p = policy.add_parser("delete", help="delete a policy (its backups stay)", description="Delete a backup policy.")
    p.add_argument("name")
    p.set_defaults(func=policy_delete)
