"""The node catalog's guard at start and its rebuild: ``galleond recover-catalog``.

At start (``check_at_start``), before galleond maps ``node.lmdb``: a helper process walks
every record of every database of it (``volops/offline.py``), so a damaged page kills the
helper, not the daemon. galleond refuses to start, with a sentence naming the way out, when
the catalog is damaged, or when it is missing, empty (0 bytes) or lists no volume while
volume directories exist (or a backup of it does): starting as an empty node would orphan
them silently.

``galleond recover-catalog [--data-dir D]`` rebuilds the catalog from what survives:

* the backup (``node.lmdb.backup``, refreshed after changes and at every clean stop), if a
  helper finds it whole: storage classes, snapshot and QoS policies, and every other
  database (node id, whatever later features store) come from it as they were;
* each volume directory's own super record (read by a helper per volume): id (the directory
  name), name, size, block size, encryption, clone origin. A volume the backup knows keeps
  its entry (labels, class, access modes, mount points) with the size its super record says
  (an expand after the backup); a volume it does not know gets its name (or
  ``recovered-<id>`` if that name is taken or unusable), the built-in class ``local`` or
  ``encrypted``, ReadWriteOnce, no labels; a directory no helper can read is left alone and
  reported (it stays on disk for ``galleonfs fsck``).

The damaged catalog is kept aside (``node.lmdb.damaged-<time>``), never deleted. It prints
one line per volume and what it could not recover, and exits 0 when every volume directory
is in the new catalog, 1 otherwise.

What it must not do: map the damaged catalog, the backup or a volume in this process (the
helpers do), or run while a galleond uses the data directory (it takes the same lock).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from .. import limits
from ..crypto.keys import KeySpec
from ..errors import CatalogDamaged, ExitCode, GalleonError, HelperFailed, InvalidArgument
from ..managers.model import AccessMode, Volume, VolumeState, check_name
from ..meta.catalog import BACKUP_FILE, CATALOG_DIR, Catalog
from ..volops import offline
from ..volops.codec import Setting
from ..volops.messages import CatalogRecords, CheckCatalog, Describe, Description, DumpCatalog
from . import config as node_config
from .lock import lock_data_dir

log = logging.getLogger(__name__)

_DATA_FILE = "data.mdb"


def volume_dirs(data_dir: str) -> list[str]:
    """The volume ids that have a directory under ``DATA_DIR/volumes``."""
    try:
        names = os.listdir(os.path.join(data_dir, "volumes"))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isdir(os.path.join(data_dir, "volumes", n)))


def _way_out(data_dir: str) -> str:
    return (f"run `galleond recover-catalog --data-dir {data_dir}` to rebuild it from its backup and "
            f"the volumes' own records")


def check_at_start(data_dir: str) -> None:
    """Raise ``CatalogDamaged`` (exit 7) rather than start on a catalog that would lose volumes."""
    catalog_dir = os.path.join(data_dir, CATALOG_DIR)
    data_file = os.path.join(catalog_dir, _DATA_FILE)
    ids = volume_dirs(data_dir)
    backup = os.path.join(data_dir, BACKUP_FILE)
    try:
        size: int | None = os.stat(data_file).st_size
    except FileNotFoundError:
        size = None
    if not size:
        if not ids and not os.path.exists(backup):
            return                                  # a first start (or one cut short before any volume)
        what = "missing" if size is None else "empty (0 bytes)"
        held = (f"{len(ids)} volume directories exist under {data_dir}/volumes" if ids
                else f"its backup {backup} exists")
        raise CatalogDamaged(f"the node catalog {catalog_dir} is {what}, but {held}; galleond will not "
                             f"start as an empty node: {_way_out(data_dir)}")
    try:
        summary = offline.run(CheckCatalog(catalog_dir), timeout_s=limits.catalog_check_timeout_s,
                              what="the node catalog")
    except (HelperFailed, CatalogDamaged) as exc:
        raise CatalogDamaged(f"the node catalog {catalog_dir} is damaged ({exc}); galleond will not start "
                             f"on it: {_way_out(data_dir)}") from None
    known = set(summary.volumes)
    if ids and not known:
        raise CatalogDamaged(f"the node catalog {catalog_dir} lists no volume, but {len(ids)} volume "
                             f"directories exist under {data_dir}/volumes; galleond will not start as an "
                             f"empty node: {_way_out(data_dir)}")
    orphans = [i for i in ids if i not in known]
    if orphans:
        log.warning("%d volume directories are not in the node catalog (%s); `galleond recover-catalog` "
                    "would add them", len(orphans), ", ".join(orphans[:5]) + (" ..." if len(orphans) > 5 else ""))


# --- recover-catalog ---------------------------------------------------------------------------------
@dataclass
class Recovery:
    """What a rebuild found, and what it could not bring back."""

    backup_problem: str = ""                       # "" when the backup was used
    recovered: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = list(self.recovered)
        if self.backup_problem:
            lines.append(f"no usable backup ({self.backup_problem}): storage classes, snapshot policies and QoS "
                         f"policies are lost (the built-in classes come back at the next start); volumes not "
                         f"in a backup get their name, size and encryption from their own records, class "
                         f"local or encrypted, ReadWriteOnce, no labels")
        lines += self.notes + self.lost
        return "\n".join(lines)


def _describe(data_dir: str, volume_id: str, keys: KeySpec) -> tuple[Description | None, str]:
    setting = Setting(os.path.join(data_dir, "volumes", volume_id), keys, os.getpid())
    try:
        return offline.run(Describe(), setting, what=f"volume {volume_id}"), ""
    except GalleonError as exc:
        return None, str(exc)


def _read_backup(data_dir: str) -> tuple[CatalogRecords | None, str]:
    path = os.path.join(data_dir, BACKUP_FILE)
    if not os.path.exists(path):
        return None, f"{path} does not exist"
    try:
        return offline.run(DumpCatalog(path), timeout_s=limits.catalog_check_timeout_s,
                           what="the catalog backup"), ""
    except GalleonError as exc:
        return None, f"{path} is damaged: {exc}"


def _backup_volumes(dump: CatalogRecords) -> dict[str, dict[str, Any]]:
    raw = dump.dbs.get(base64.b64encode(b"volumes").decode(), {})
    return {base64.b64decode(k).decode(): json.loads(base64.b64decode(v)) for k, v in raw.items()}


def _new_entry(volume_id: str, info: Description, taken: set[str], ids: list[str]) -> Volume:
    name = info.name
    try:
        check_name(name)
    except InvalidArgument:
        name = ""
    if not name or name in taken:
        name = f"recovered-{volume_id[:8]}"
    origin = os.path.basename(info.origin_volume_dir) if info.origin_volume_dir else ""
    return Volume(id=volume_id, name=name, size=info.size,
                  storage_class="encrypted" if info.encrypted else "local",
                  state=VolumeState.AVAILABLE, access_modes=[AccessMode.RWO],
                  block_size=info.block_size, created_ns=info.created_ns or time.time_ns(),
                  origin_volume=origin if origin in ids else "",
                  origin_snapshot=info.origin_snapshot if origin in ids else "")


def recover(data_dir: str, keys: KeySpec) -> Recovery:
    """Rebuild ``DATA_DIR/node.lmdb`` (see the module docstring). The caller holds the lock."""
    report = Recovery()
    dump, report.backup_problem = _read_backup(data_dir)
    in_backup = _backup_volumes(dump) if dump is not None else {}
    ids = volume_dirs(data_dir)
    described = {volume_id: _describe(data_dir, volume_id, keys) for volume_id in ids}

    catalog_dir = os.path.join(data_dir, CATALOG_DIR)
    if os.path.exists(catalog_dir):
        aside = f"{catalog_dir}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(catalog_dir, aside)
        report.notes.append(f"the old catalog is kept in {aside}")
    catalog = Catalog(data_dir)
    try:
        if dump is not None:
            skip = {base64.b64encode(n).decode() for n in (b"volumes", b"names")}
            catalog.load_records({k: v for k, v in dump.dbs.items() if k not in skip})
        taken: set[str] = set()
        for volume_id in ids:
            info, problem = described[volume_id]
            known = in_backup.get(volume_id)
            if known is not None:
                volume = Volume.from_json(known)
                if info is not None:
                    volume.size = info.size
                    how = "from the backup and its own records"
                else:
                    volume.state, volume.message = VolumeState.FAILED, f"unreadable during recover-catalog: {problem}"
                    how = f"from the backup, FAILED: its directory cannot be read ({problem})"
            elif info is not None:
                volume = _new_entry(volume_id, info, taken | {v["name"] for v in in_backup.values()}, ids)
                how = f"from its own records only (class {volume.storage_class}, ReadWriteOnce, no labels)"
            else:
                report.lost.append(f"could not recover volume directory {volume_id}: {problem}; it is left "
                                   f"on disk (check it with `galleonfs fsck {data_dir}/volumes/{volume_id}`)")
                continue
            taken.add(volume.name)
            catalog.put_volume(volume.to_json())
            report.recovered.append(f"recovered volume {volume.name} ({volume_id}) {how}")
        for volume_id in list(catalog.qos_assignments()):
            if catalog.volume(volume_id) is None:
                catalog.assign_qos(volume_id, "")
        for volume_id, entry in sorted(in_backup.items()):
            if volume_id not in ids:
                report.notes.append(f"volume {entry.get('name', volume_id)} ({volume_id}) is in the backup but its "
                                    f"directory is gone: not recovered")
        catalog.backup(force=True)
    finally:
        catalog.close()
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galleond recover-catalog",
        description="Rebuild the node catalog (node.lmdb) from its backup and the volumes' own "
                    "records, when galleond refuses to start on a damaged or empty one. Run it with "
                    "galleond stopped.",
        epilog="exit codes: 0 every volume directory is in the new catalog, 1 some could not be "
               "read (listed), 5 a galleond uses the data directory")
    parser.add_argument("--data-dir", help="the data directory (default: galleond's configuration)")
    parser.add_argument("--config", help="galleond's TOML file (for the data directory and the key source)")
    return parser


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="galleond: %(message)s")
    try:
        config = node_config.load(config_file=args.config, env=os.environ, flags={"data_dir": args.data_dir})
        lock_fd = lock_data_dir(config.data_dir)
        try:
            report = recover(config.data_dir, KeySpec(config.key_file, config.key_passphrase_env,
                                                      config.key_command))
        finally:
            os.close(lock_fd)
    except GalleonError as exc:
        print(f"galleond: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(report.render(), file=out)
    return ExitCode.ERROR if report.lost else ExitCode.OK
