"""``galleonfs``: the standalone tool for one volume directory (no daemon needed).

    galleonfs mkfs VOLUME_DIR --size SIZE [--block-size SIZE] [--name NAME]
    galleonfs mount VOLUME_DIR MOUNTPOINT [--foreground] [-o OPTS]
    galleonfs umount MOUNTPOINT
    galleonfs fsck VOLUME_DIR [--repair]
    galleonfs import VOLUME_DIR SRC_DIR [--exclude PATTERN ...] [--dry-run] [--delete]
    galleonfs export VOLUME_DIR DEST_DIR [--snapshot NAME] [...]

User errors print one line, ``galleonfs: error: ...``, and exit with the stable code of
``errors.ExitCode``; no traceback. ``mount`` without ``--foreground`` starts the mount
worker in the background and returns once the mount is ready (or failed, with the
worker's own message).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from .. import limits, names
from ..crypto.keys import add_key_arguments, key_spec
from ..engine.engine import LOCK_FILE, NEEDS_CHECK_FILE, Engine
from ..errors import Busy, ExitCode, GalleonError, InvalidArgument, NotFound, Unavailable
from ..units import format_size, parse_size
from ..workers.launch import Launch
from . import transfer
from .common import ProgressLine, run

EXAMPLES = """\
examples:
  galleonfs mkfs /srv/vol1 --size 10G                 an empty 10 GiB volume
  galleonfs mount /srv/vol1 /mnt/vol1                 mount it (returns when ready)
  galleonfs mount /srv/vol1 /mnt/ro -o ro,noatime     read-only, no access times
  galleonfs umount /mnt/vol1                          flush, unmount, wait for the worker
  galleonfs fsck /srv/vol1                            check an unmounted volume
  galleonfs fsck /srv/vol1 --repair                   ... and repair what it finds
  galleonfs mkfs /srv/sec --size 1G --encrypt --key-file /etc/galleonfs/kek --compression lz4
  galleonfs mount /srv/sec /mnt/sec --key-file /etc/galleonfs/kek

exit codes: 0 ok, 1 error (fsck: problems found and repaired), 2 usage, 3 not found,
            4 exists, 5 busy, 6 no space, 7 corrupt (fsck: problems remain),
            8 permission or key (missing, wrong or unreadable), 9 unavailable
"""

FSCK_EXIT_CODES = """\
exit codes:
  0  clean: no problem found
  1  problems were found and all of them repaired (with --repair), or another error
  2  bad arguments
  3  VOLUME_DIR does not exist or is not a GalleonFS volume
  5  the volume is in use (mounted, or being checked by another process)
  6  no space left to write the repairs
  7  problems remain (found without --repair, or not repairable), or the volume's
     metadata is damaged or of an unknown format
  8  the volume is encrypted and its key is missing, wrong or unreadable (a mistyped
     --key-file is never created), or permission denied
"""


def cmd_mkfs(args: argparse.Namespace) -> int:
    name = names.check(args.name, names.VOLUME) if args.name else ""     # the rules galleond uses
    size = parse_size(args.size, what="volume size")
    block_size = parse_size(args.block_size, what="block size")
    spec = key_spec(args)
    if args.encrypt and not spec.configured:
        raise InvalidArgument("--encrypt needs a key source: --key-file, --key-passphrase-env or --key-command")
    if spec.configured and not args.encrypt:
        raise InvalidArgument("a key source was given without --encrypt; add --encrypt to encrypt the volume")
    volume_id = Engine.create(args.volume_dir, size=size, block_size=block_size, name=name,
                              keys=spec.manager() if args.encrypt else None,
                              compression=args.compression, dedup=not args.no_dedup)
    extras = [x for x in ("encrypted (aes-256-gcm)" if args.encrypt else "",
                          f"compression {args.compression}" if args.compression != "none" else "",
                          "no dedup" if args.no_dedup else "") if x]
    print(f"created volume {volume_id} in {args.volume_dir}: size {format_size(size)}, "
          f"block size {format_size(block_size)}" + "".join(f", {x}" for x in extras))
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from ..fuse.worker import parse_options  # validate before forking anything

    parse_options(args.options)
    if not os.path.isdir(args.mountpoint):
        raise NotFound(f"mount point {args.mountpoint} does not exist or is not a directory")
    launch = Launch(os.path.abspath(args.volume_dir), os.path.abspath(args.mountpoint),
                    options=args.options, keys=key_spec(args))
    if args.foreground:
        argv, env = launch.foreground()
        os.execve(sys.executable, argv, env)
    log_path = os.path.join(args.volume_dir, "worker.log") if os.path.isdir(args.volume_dir) else os.devnull
    with open(log_path, "ab") as log_file:
        proc = launch.popen(stdout=subprocess.DEVNULL, stderr=log_file, new_session=True)
    outcome = launch.wait_ready()
    if outcome.ready:
        print(f"mounted {args.volume_dir} on {args.mountpoint} (worker pid {proc.pid})")
        return 0
    if outcome.answered:
        proc.wait(timeout=limits.unmount_timeout_s)
        print(f"galleonfs: error: {outcome.message}", file=sys.stderr)
        return outcome.code
    proc.kill()
    raise Unavailable(f"the mount worker exited without reporting (see {log_path})")


def cmd_umount(args: argparse.Namespace) -> int:
    from ..fuse.kernel import find_mount, is_galleonfs_mount

    mountpoint = os.path.abspath(args.mountpoint)
    info = find_mount(mountpoint)
    if not is_galleonfs_mount(info):
        raise NotFound(f"{mountpoint} is not a GalleonFS mount point")
    assert info is not None
    volume_dir = info.source
    done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        message = done.stderr.strip().removeprefix("fusermount3: ")
        if "busy" in message.lower():
            raise Busy(f"cannot unmount {mountpoint}: it is busy (files or directories in use)")
        raise GalleonError(f"cannot unmount {mountpoint}: {message}")
    if not _wait_unlocked(os.path.join(volume_dir, LOCK_FILE), limits.unmount_timeout_s):
        raise Unavailable(f"unmounted {mountpoint}, but the worker for {volume_dir} has not exited "
                          f"after {limits.unmount_timeout_s:.0f} s")
    marker = os.path.join(volume_dir, NEEDS_CHECK_FILE)
    if os.path.exists(marker):
        with open(marker) as f:
            reason = f.read().strip()
        raise GalleonError(f"unmounted {mountpoint}, but the volume needs a check: {reason}")
    print(f"unmounted {mountpoint}")
    return 0


def _wait_unlocked(lock_path: str, timeout_s: float) -> bool:
    """Wait until no process holds the volume lock (the worker has exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
        finally:
            os.close(fd)
        time.sleep(0.05)


def cmd_fsck(args: argparse.Namespace) -> int:
    from ..engine.fsck import fsck

    spec = key_spec(args)
    report = fsck(args.volume_dir, repair=args.repair,
                  keys=spec.manager(create=False) if spec.configured else None)
    print(report.render())
    if report.clean:
        return ExitCode.OK
    if args.repair and len(report.repaired) >= len(report.problems):
        return ExitCode.ERROR
    return ExitCode.CORRUPT


def cmd_rekey(args: argparse.Namespace) -> int:
    from ..engine import rekey

    spec = key_spec(args)
    if not spec.configured:
        raise InvalidArgument("rekey needs the volume's key source: --key-file, --key-passphrase-env or --key-command")
    progress = ProgressLine("rekeying")
    engine = Engine.open(args.volume_dir, keys=spec.manager(create=False))
    try:
        epoch = rekey.run(engine, progress)
    finally:
        engine.close()
    progress.end()
    print(f"{args.volume_dir}: everything is sealed under a new data key (epoch {epoch}); the old key is gone")
    return ExitCode.OK


def cmd_import(args: argparse.Namespace) -> int:
    options = transfer.options_from(args)
    src = transfer.check_dir(args.src, "source directory")
    with _temporary_mount(args, read_only=options.dry_run) as root:
        report = transfer.sync(src, root, options, "importing")
    return transfer.finish(report, f"import into {args.volume_dir}", dry_run=options.dry_run)


def cmd_export(args: argparse.Namespace) -> int:
    options = transfer.options_from(args)
    dest = transfer.check_target(args.dest, "destination")
    if args.snapshot:
        names.check(args.snapshot, names.SNAPSHOT)
    with _temporary_mount(args, read_only=True) as root:
        src = os.path.join(root, ".snapshots", args.snapshot) if args.snapshot else root
        if args.snapshot and not os.path.isdir(src):
            raise NotFound(f"the volume has no snapshot {args.snapshot!r}; list them with ls MOUNT/.snapshots")
        report = transfer.sync(src, dest, options, "exporting")
    return transfer.finish(report, f"export of {args.volume_dir}", dry_run=options.dry_run)


@contextlib.contextmanager
def _temporary_mount(args: argparse.Namespace, *, read_only: bool) -> Iterator[str]:
    """Mount the volume on a fresh private directory for one copy; unmount and wait after."""
    volume_dir = os.path.abspath(args.volume_dir)
    if not os.path.isdir(volume_dir):
        raise NotFound(f"volume directory {volume_dir} does not exist")
    path = tempfile.mkdtemp(prefix="galleonfs-transfer-")
    try:
        launch = Launch(volume_dir, path, options="ro" if read_only else "", keys=key_spec(args))
        with open(os.path.join(volume_dir, "worker.log"), "ab") as log_file:
            proc = launch.popen(stdout=subprocess.DEVNULL, stderr=log_file, new_session=True)
        outcome = launch.wait_ready()
        if not outcome.ready:
            if outcome.answered:
                proc.wait(timeout=limits.unmount_timeout_s)
                raise GalleonError(f"cannot mount {volume_dir}: {outcome.message}")
            proc.kill()
            raise Unavailable(f"the mount worker exited without reporting (see {volume_dir}/worker.log)")
        try:
            yield path
        finally:
            subprocess.run(["fusermount3", "-u", path], check=False, capture_output=True)
            proc.wait(timeout=limits.unmount_timeout_s)
    finally:
        os.rmdir(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleonfs", description="Create, mount, unmount and check GalleonFS volumes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("mkfs", help="create an empty volume directory",
                       description="Create an empty volume in VOLUME_DIR (created if missing, "
                                   "else it must be empty).")
    p.add_argument("volume_dir", metavar="VOLUME_DIR")
    p.add_argument("--size", required=True, help="capacity, a hard quota: e.g. 512M, 10G")
    p.add_argument("--block-size", default="64K", help="4K to 1M, a power of two (default 64K)")
    p.add_argument("--name", help="a name to remember the volume by (a DNS label, like galleond's)")
    p.add_argument("--encrypt", action="store_true", help="encrypt everything with AES-256-GCM")
    p.add_argument("--compression", choices=["none", "lz4", "zstd"], default="none",
                   help="compress each block (kept only when it shrinks); default none")
    p.add_argument("--no-dedup", action="store_true", help="store equal blocks once per write")
    add_key_arguments(p)
    p.set_defaults(func=cmd_mkfs)

    p = sub.add_parser("mount", help="mount a volume",
                       description="Mount VOLUME_DIR on MOUNTPOINT. Returns once the mount is "
                                   "ready; the mount worker keeps serving in the background.")
    p.add_argument("volume_dir", metavar="VOLUME_DIR")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--foreground", "-f", action="store_true", help="serve in this process, logs to stderr")
    p.add_argument("-o", dest="options", default="", metavar="OPTS",
                   help="comma-separated: ro, noatime, allow_other, noexec (mounts are always "
                        "nosuid,nodev; suid and dev are refused)")
    add_key_arguments(p)
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", aliases=["unmount"], help="flush and unmount",
                       description="Flush, unmount and wait until the mount worker has exited.")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(func=cmd_umount)

    p = sub.add_parser("fsck", help="check (and repair) an unmounted volume",
                       description="Check every invariant: refcounts, reachability, block "
                                   "checksums, journal. Exit 0 when clean.",
                       epilog=FSCK_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("volume_dir", metavar="VOLUME_DIR")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed")
    add_key_arguments(p)
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser("rekey", help="give an encrypted, unmounted volume a new data key",
                       description="Seal everything again under a new data key, then forget the old "
                                   "one. Resumes an interrupted rekey. Shows progress on a terminal.")
    p.add_argument("volume_dir", metavar="VOLUME_DIR")
    add_key_arguments(p)
    p.set_defaults(func=cmd_rekey)

    p = sub.add_parser("import", help="copy a directory into an unmounted volume (like rsync -a)",
                       description="Make the tree of the volume in VOLUME_DIR a copy of SRC_DIR, through "
                                   "a private mount: contents (holes kept), modes, owners, times, "
                                   "xattrs, symlinks, hard links; only changed files are copied.")
    p.add_argument("volume_dir", metavar="VOLUME_DIR")
    p.add_argument("src", metavar="SRC_DIR")
    transfer.add_arguments(p)
    add_key_arguments(p)
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("export", help="copy an unmounted volume (or one of its snapshots) out",
                       description="Make DEST_DIR a copy of the volume's tree (read-only mount), or of "
                                   "its snapshot NAME with --snapshot (consistent).")
    p.add_argument("volume_dir", metavar="VOLUME_DIR")
    p.add_argument("dest", metavar="DEST_DIR")
    p.add_argument("--snapshot", metavar="NAME", help="copy this snapshot instead of the live tree")
    transfer.add_arguments(p)
    add_key_arguments(p)
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(argv, build_parser(), "galleonfs")


if __name__ == "__main__":
    sys.exit(main())

