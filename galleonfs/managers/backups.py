"""Backups of volumes to off-node targets, as a service of one node (issue 13).

The only module that imports the backup repository (``galleonfs.backup``). It joins the two
sides: a volume's snapshot is read where the volume's engine is open (its mount worker, or a
helper process: ``volops`` ``BackupExport``/``BackupBlocks``, written to spool files under
``<data-dir>/backup-spool/<random id>/``), and fed to a ``BackupWriter`` on a thread; a
restore walks a ``BackupReader`` and loads window after window into a new volume
(``BackupLoad`` in a helper). Repository calls block (files, S3): they run on trio's worker
threads, never on the trio thread.

Targets are kept in the node catalog by address and by *references* to secrets: S3
credentials come from galleond's environment (``credentials_env`` names a prefix, as
``AWS`` for ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), and the repository's key is a
passphrase in galleond's environment (``key_env`` names the variable). Nothing secret is
stored in the catalog, sent back over the API, or written to a log. The repository itself
is the catalog of backups: a fresh node given the target's address and key lists and
restores every backup (disaster recovery).

Incremental: every backup records the snapshot it was taken from (``meta.snapshot``) and its
generation. The next backup of the volume to the same target takes as parent the newest
backup whose snapshot still exists on the volume at that generation, and sends only the
records the generation diff names; blocks the repository holds are never read. A backup
without ``--snapshot`` takes one (``backup-<target>-<time>``) and keeps it as the base of the
next incremental; the previous base is deleted once the new backup is committed.

What it must not do: hold a volume's lock across anything but a call to the volume (the
upload runs without it),
read a volume's files in this process, or store a secret.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import trio

from .. import limits, names
from ..backup import (
    BackupInfo,
    Policy,
    Progress,
    Repository,
    RepositoryKey,
    VerifyReport,
    begin_backup,
    collect_garbage,
    forget,
    open_backup,
    open_target,
    verify,
)
from ..backup.writer import BackupWriter
from ..engine.export import read_frames, write_frames
from ..errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    GalleonError,
    InvalidArgument,
    NotFound,
)
from ..meta.catalog import Catalog
from ..volops.messages import (
    BackupBlocks,
    BackupExport,
    BackupLoad,
    SnapshotCreate,
    SnapshotDelete,
    SnapshotInfo,
    SnapshotList,
    VolumeRequest,
)
from ..volops.online import OnlineOps
from ..volops.protocol import R, VolumeOps
from .model import Volume, VolumeState, check_labels, now_ns
from .volumes import VolumeManager

log = logging.getLogger(__name__)
# Re-exported for the servicers (only this module imports the backup package).
__all__ = ["BackupManager", "BackupPolicy", "BackupPolicyManager", "BackupTarget", "BackupView",
           "Progress", "VerifyReport", "parse_ref"]

_ENV_NAME = re.compile(r"\A[A-Z_][A-Z0-9_]{0,63}\Z")
SPOOL_DIR = "backup-spool"
AUTO_PREFIX = "backup-"
# Blocks asked of a volume per call: 64 MiB at most (a mount worker answers within the
# online timeout at disk speed, and the spool file stays small).
BLOCKS_PER_CALL_BYTES = 64 << 20
# Blob bytes a restore loads into the new volume per helper run: every run costs a helper
# process, an engine open and a commit (~0.3 s), so 64 MiB loads spent a third of a restore
# on them; the helper holds a load's blocks in memory, which bounds this. The first load is
# smaller: the next one downloads while it runs, and nothing overlaps before it starts.
RESTORE_LOAD_BYTES = 192 << 20
RESTORE_FIRST_LOAD_BYTES = 64 << 20
ONLINE_TIMEOUT_S = 600.0
HOOK_TIMEOUT_S_DEFAULT = 60.0
HOOK_TIMEOUT_S_MAX = 3600.0

ProgressSink = Callable[[Progress, int], None]       # progress, total bytes (0: unknown)


def _env_name(value: str, what: str) -> str:
    if value and not _ENV_NAME.match(value):
        raise InvalidArgument(f"{what} {names.quote(value)} is not an environment variable name: "
                              f"use capital letters, digits and '_'")
    return value


@dataclass
class BackupTarget:
    """Where backups go, and where the secrets come from (references only)."""

    name: str
    url: str
    endpoint: str = ""
    region: str = ""
    credentials_env: str = ""        # S3: prefix of the variables holding the credentials
    key_env: str = ""                # the variable of galleond's environment holding the passphrase
    created_ns: int = field(default_factory=now_ns)

    def validate(self) -> BackupTarget:
        names.check(self.name, names.BACKUP_TARGET)
        names.check_text(self.url, "target address")
        if not (self.url.startswith("s3://") or self.url.startswith("file:///")):
            raise InvalidArgument(f"backup target address {names.quote(self.url)}: use s3://bucket/prefix "
                                  f"or file:///path")
        if self.url.startswith("file://") and (self.endpoint or self.region or self.credentials_env):
            raise InvalidArgument("a directory target (file:///path) takes no --endpoint, --region or "
                                  "--credentials-env")
        names.check_text(self.endpoint, "endpoint")
        if self.endpoint and not re.match(r"\Ahttps?://[A-Za-z0-9.\[\]:-]+(/[^\s]*)?\Z", self.endpoint):
            raise InvalidArgument(f"endpoint {names.quote(self.endpoint)}: give a URL like http://host:port")
        names.check_text(self.region, "region")
        _env_name(self.credentials_env, "credentials variable prefix")
        if not self.key_env:
            raise InvalidArgument("give --key-env VAR: the variable of galleond's environment that holds "
                                  "the backup repository's passphrase")
        _env_name(self.key_env, "key variable")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupTarget:
        return cls(**data)


@dataclass
class BackupPolicy:
    """Back up every volume matching ``selector`` on a cron schedule to ``target``; then
    apply retention (``keep_*``) to those volumes' backups and collect garbage."""

    name: str
    schedule: str
    target: str
    selector: dict[str, str] = field(default_factory=dict)
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    pre_hook: str = ""
    post_hook: str = ""
    hook_timeout_s: float = HOOK_TIMEOUT_S_DEFAULT
    created_ns: int = field(default_factory=now_ns)
    last_run_ns: int = 0
    last_error: str = ""

    def retention(self) -> Policy:
        return Policy(keep_last=self.keep_last, keep_daily=self.keep_daily, keep_weekly=self.keep_weekly,
                      keep_monthly=self.keep_monthly)

    def validate(self) -> BackupPolicy:
        names.check(self.name, names.BACKUP_POLICY)
        names.check(self.target, names.BACKUP_TARGET)
        check_labels(self.selector)
        names.check_text(self.schedule, "schedule", max_bytes=limits.schedule_max_chars)
        from croniter import croniter

        if len(self.schedule.split()) not in (5, 6) or not croniter.is_valid(self.schedule):
            raise InvalidArgument(f"invalid schedule {names.quote(self.schedule)}: use cron's five fields "
                                  f"(minute hour day month weekday)")
        self.retention().check()
        for what, hook in (("pre-hook", self.pre_hook), ("post-hook", self.post_hook)):
            names.check_text(hook, what)
        if not 0 < self.hook_timeout_s <= HOOK_TIMEOUT_S_MAX:
            raise InvalidArgument(f"hook timeout must be more than 0 and at most {HOOK_TIMEOUT_S_MAX:g} s")
        return self

    def next_run_ns(self, after_ns: int) -> int:
        from croniter import croniter

        return int(croniter(self.schedule, after_ns / 1e9).get_next(float) * 1e9)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupPolicy:
        return cls(**data)


@dataclass(frozen=True)
class BackupView:
    """A backup as the API shows it: the manifest's header and the target it is in."""

    info: BackupInfo
    target: str

    @property
    def ref(self) -> str:
        return f"{self.info.volume_name}@{self.info.backup_id}"

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_json(), "target": self.target}


def parse_ref(ref: str) -> tuple[str, str]:
    """``VOLUME@BACKUP-ID`` into its parts."""
    volume, at, backup = ref.partition("@")
    if not at or not volume or not backup:
        raise InvalidArgument(f"{names.quote(ref)} is not a backup reference: use VOLUME@b-... "
                              f"(see `galleonctl backup list VOLUME`)")
    names.check(volume, names.VOLUME)
    return volume, backup


def _snapshot_time(info: SnapshotInfo) -> datetime:
    return datetime.fromtimestamp(info.created_ns / 1e9, UTC)


class BackupManager:
    def __init__(self, volumes: VolumeManager, catalog: Catalog) -> None:
        self.volumes = volumes
        self.catalog = catalog
        self.spool_root = os.path.join(volumes.data_dir, SPOOL_DIR)
        shutil.rmtree(self.spool_root, ignore_errors=True)       # what a killed daemon left
        # One backup of a volume to a target at a time: a second one's base snapshot would
        # otherwise replace the first's while the first still reads it.
        self._jobs: defaultdict[tuple[str, str], trio.Lock] = defaultdict(trio.Lock)
        os.makedirs(self.spool_root, mode=0o700, exist_ok=True)

    # --- targets -------------------------------------------------------------------------------
    def get_target(self, name: str) -> BackupTarget:
        names.check(name, names.BACKUP_TARGET)
        data = self.catalog.backup_target(name)
        if data is None:
            raise NotFound(f"backup target {name!r} does not exist (see `galleonctl backup-target list`)")
        return BackupTarget.from_json(data)

    def list_targets(self) -> list[BackupTarget]:
        return sorted((BackupTarget.from_json(t) for t in self.catalog.backup_targets()), key=lambda t: t.name)

    async def create_target(self, target: BackupTarget) -> tuple[BackupTarget, bool]:
        """Register a target; a new repository is made on an empty one, an existing one is
        opened (its key checked): how a fresh node adopts a target. Returns (target, created)."""
        target.validate()
        if self.catalog.backup_target(target.name) is not None:
            raise AlreadyExists(f"backup target {target.name!r} already exists")
        target.created_ns = now_ns()
        created = await trio.to_thread.run_sync(self._init_repository, target)
        self.catalog.put_backup_target(target.to_json())
        log.info("backup target %s registered at %s (%s)", target.name, target.url,
                 "new repository" if created else "existing repository")
        return target, created

    def delete_target(self, name: str) -> BackupTarget:
        """Forget a target on this node; its repository and backups stay where they are."""
        target = self.get_target(name)
        users = [p["name"] for p in self.catalog.backup_policies() if p["target"] == name]
        if users:
            raise Busy(f"backup target {name} is used by backup policies {', '.join(sorted(users))}; "
                       "delete them first")
        self.catalog.delete_backup_target(name)
        return target

    def _key(self, target: BackupTarget) -> RepositoryKey:
        passphrase = os.environ.get(target.key_env, "")
        if not passphrase:
            raise FailedPrecondition(f"backup target {target.name}: galleond's environment variable "
                                     f"{target.key_env} (the repository passphrase) is not set")
        return RepositoryKey.from_passphrase(passphrase)

    def _target(self, target: BackupTarget, *, create: bool = False) -> Any:
        return open_target(target.url, endpoint=target.endpoint or None, region=target.region or None,
                           credentials_env=target.credentials_env or None, create=create)

    def _init_repository(self, target: BackupTarget) -> bool:
        key = self._key(target)
        where = self._target(target, create=True)
        if where.head("config") is None:
            Repository.init(where, key).close()
            return True
        Repository.open(where, key).close()
        return False

    def _open(self, target: BackupTarget) -> Repository:
        return Repository.open(self._target(target), self._key(target))

    # --- the volume's side -----------------------------------------------------------------------
    def _ops(self, volume: Volume) -> VolumeOps:
        """Like ``VolumeManager.ops``, with a timeout for bulk reads from a mount worker."""
        if volume.id in self.volumes.supervisor.workers:
            return OnlineOps(self.volumes.supervisor.control_address(volume.id), timeout_s=ONLINE_TIMEOUT_S)
        return self.volumes.offline_ops(volume)

    def _spool(self) -> str:
        path = os.path.join(self.spool_root, uuid.uuid4().hex)
        os.mkdir(path, 0o700)
        return path

    # --- backup --------------------------------------------------------------------------------
    async def create(self, volume_name: str, target_name: str, snapshot: str = "", *,
                     progress: ProgressSink | None = None, pre_hook: str = "", post_hook: str = "",
                     hook_timeout_s: float = HOOK_TIMEOUT_S_DEFAULT) -> BackupView:
        """Back up a volume. Its lock is held for each call to the volume (the hooks and the
        snapshot together), not across the upload: a long backup does not hold up mounts."""
        target = self.get_target(target_name)
        volume = self.volumes.get(volume_name)
        if snapshot:
            names.check(snapshot, names.SNAPSHOT)
        async with self._jobs[(volume.id, target.name)]:
            return await self._create(volume, target, snapshot, progress=progress, pre_hook=pre_hook,
                                      post_hook=post_hook, hook_timeout_s=hook_timeout_s)

    async def _create(self, volume: Volume, target: BackupTarget, snapshot: str, *,
                      progress: ProgressSink | None, pre_hook: str, post_hook: str,
                      hook_timeout_s: float) -> BackupView:
        auto = not snapshot
        if auto:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            snapshot = f"{AUTO_PREFIX}{target.name}-{stamp}-{uuid.uuid4().hex[:6]}"
            async with self.volumes.lock(volume):
                volume = self._usable(volume.id)
                if pre_hook:
                    await _run_hook("pre-hook", pre_hook, volume, hook_timeout_s)
                try:
                    await self._ops(volume).run(SnapshotCreate(snapshot))
                finally:
                    if post_hook:
                        await _run_hook("post-hook", post_hook, volume, hook_timeout_s)
        try:
            view = await self._backup(volume, target, snapshot, progress)
        except BaseException:
            if auto:
                with trio.CancelScope(shield=True):
                    await _quietly(self._on_volume(volume.id, SnapshotDelete(snapshot)),
                                   f"dropping snapshot {snapshot}")
            raise
        if auto:
            await self._drop_old_bases(volume, target, keep=snapshot)
        log.info("volume %s backed up to %s as %s", volume.name, target.name, view.info.backup_id)
        return view

    def _usable(self, volume_id: str) -> Volume:
        volume = self.volumes.get(volume_id)
        if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
            raise FailedPrecondition(f"volume {volume.name} is {volume.state.value}; try again later")
        return volume

    async def _on_volume(self, volume_id: str, request: VolumeRequest[R]) -> R:
        """One request, under the volume's lock, where its engine is open now (it may have
        been mounted or unmounted since the previous one)."""
        async with self.volumes.lock(self.volumes.get(volume_id)):
            return await self._ops(self._usable(volume_id)).run(request)

    async def _drop_old_bases(self, volume: Volume, target: BackupTarget, keep: str) -> None:
        prefix = f"{AUTO_PREFIX}{target.name}-"
        for snap in (await self._on_volume(volume.id, SnapshotList())).snapshots:
            if snap.name.startswith(prefix) and snap.name != keep and not snap.holds:
                await _quietly(self._on_volume(volume.id, SnapshotDelete(snap.name)),
                               f"dropping old base snapshot {snap.name}")

    async def _backup(self, volume: Volume, target: BackupTarget, snapshot: str,
                      progress: ProgressSink | None) -> BackupView:
        snaps = {s.name: s for s in (await self._on_volume(volume.id, SnapshotList())).snapshots}
        snap = snaps.get(snapshot)
        if snap is None:
            raise NotFound(f"volume {volume.name} has no snapshot {snapshot!r} (see `galleonctl snapshot list {volume.name}`)")
        spool = self._spool()
        repo = await trio.to_thread.run_sync(self._open, target)
        try:
            earlier = await trio.to_thread.run_sync(repo.list_backups, volume.id)
            bases = [b for b in earlier if b.meta.get("snapshot") in snaps
                     and snaps[b.meta["snapshot"]].generation == b.generation < snap.generation]
            parent = bases[-1] if bases else None
            records_path = os.path.join(spool, "records")
            exported = await self._on_volume(volume.id, BackupExport(
                snapshot, records_path, since=parent.meta["snapshot"] if parent else None))
            meta = {"snapshot": snapshot, "size": str(exported.size), "block_size": str(exported.block_size),
                    "encrypted": "yes" if exported.encrypted else "no",
                    "used_bytes": str(exported.used_bytes), "storage_class": volume.storage_class}
            total = [exported.used_bytes]     # until the blocks to send are known

            def report(p: Progress) -> None:
                if progress is not None:
                    progress(p, total[0])

            writer = await trio.to_thread.run_sync(lambda: begin_backup(
                repo, volume_name=volume.name, volume_id=volume.id, generation=exported.generation,
                parent=parent.backup_id if parent else None, meta=meta, time=_snapshot_time(snap),
                progress=report))
            try:
                rows = await trio.to_thread.run_sync(_read_rows, records_path)
                missing = [bid for bid in dict.fromkeys(r for _k, _v, refs in rows for r in refs)
                           if not writer.has_blob(bid)]
                # What will be sent (blocks may be shorter at the end of files): the ETA's base.
                total[0] = min(exported.used_bytes, len(missing) * exported.block_size)
                per_call = max(1, BLOCKS_PER_CALL_BYTES // max(1, exported.block_size))
                await self._send_blocks(volume, writer, snapshot, spool,
                                        [missing[i:i + per_call] for i in range(0, len(missing), per_call)])
                info = await trio.to_thread.run_sync(_finish, writer, rows)
            finally:
                await trio.to_thread.run_sync(writer.abort)
        finally:
            await trio.to_thread.run_sync(repo.close)
            shutil.rmtree(spool, ignore_errors=True)
        return BackupView(info, target.name)

    async def _send_blocks(self, volume: Volume, writer: BackupWriter, snapshot: str, spool: str,
                           batches: list[list[bytes]]) -> None:
        """Ask the volume for each batch of blocks and put them into the backup, the volume
        exporting the next batch while this one is sealed and stored (two spool files, used
        in turn): the volume's reads and the repository's work overlap instead of taking
        turns. A failure of one waits for the other to end (an export is shielded: the
        worker is never left writing into a spool directory that is being removed), then
        fails the backup."""
        async def export(ids: list[bytes], slot: int) -> str:
            ids_path, out_path = os.path.join(spool, f"ids{slot}"), os.path.join(spool, f"blocks{slot}")
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_write_ids, ids_path, ids)
                await self._on_volume(volume.id, BackupBlocks(snapshot, ids_path, out_path))
            return out_path

        async def put(path: str) -> None:
            await trio.to_thread.run_sync(_put_blocks, writer, path)

        if not batches:
            return
        ready = await export(batches[0], 0)
        try:
            for n in range(1, len(batches) + 1):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(put, ready)
                    nxt: list[str] = []
                    if n < len(batches):
                        async def export_next(ids: list[bytes] = batches[n], slot: int = n % 2,
                                              out: list[str] = nxt) -> None:
                            out.append(await export(ids, slot))
                        nursery.start_soon(export_next)
                ready = nxt[0] if nxt else ""
        except BaseExceptionGroup as group:
            raise _leading(group) from None

    # --- reading the catalog in the targets ----------------------------------------------------
    async def list_backups(self, volume_name: str = "", target_name: str = "") -> list[BackupView]:
        """Backups of a volume (by name: the volume need not exist here, as after a disaster),
        or every backup, in one target or every registered target; oldest first."""
        if volume_name:
            names.check(volume_name, names.VOLUME)
        targets = [self.get_target(target_name)] if target_name else self.list_targets()
        out: list[BackupView] = []
        for target in targets:
            infos = await trio.to_thread.run_sync(self._list_in, target)
            out += [BackupView(i, target.name) for i in infos if not volume_name or i.volume_name == volume_name]
        return sorted(out, key=lambda v: (v.info.time, v.info.backup_id))

    def _list_in(self, target: BackupTarget) -> list[BackupInfo]:
        with self._open(target) as repo:
            return repo.list_backups()

    async def get(self, ref: str) -> BackupView:
        volume_name, backup_id = parse_ref(ref)
        views = await self.list_backups(volume_name)
        # The id, or a prefix of one that names no other (b-20261204T0200 for the 02:00 backup).
        found = ([v for v in views if v.info.backup_id == backup_id]
                 or [v for v in views if v.info.backup_id.startswith(backup_id)])
        if len(found) > 1:
            raise InvalidArgument(f"{ref} names {len(found)} backups ({', '.join(v.info.backup_id for v in found[:3])}"
                                  f"{', ...' if len(found) > 3 else ''}); give more of the id")
        if found:
            return found[0]
        raise NotFound(f"volume {volume_name} has no backup {backup_id} in any backup target "
                       f"(see `galleonctl backup list {volume_name}`)")

    async def delete(self, ref: str) -> tuple[BackupView, int, str]:
        """Delete a backup, then collect garbage in its target. Returns the backup, the bytes
        GC freed, and why GC did not free anything if it refused (the delete stands)."""
        view = await self.get(ref)
        target = self.get_target(view.target)

        def delete() -> tuple[int, str]:
            with self._open(target) as repo:
                repo.delete_backups([view.info.backup_id])
                try:
                    return collect_garbage(repo).bytes_freed, ""
                except GalleonError as exc:
                    return 0, str(exc)
        freed, gc_error = await trio.to_thread.run_sync(delete)
        log.info("backup %s deleted from %s; GC freed %d bytes%s", ref, target.name, freed,
                 f" (GC: {gc_error})" if gc_error else "")
        return view, freed, gc_error

    async def verify(self, target_name: str, deep: bool = False,
                     progress: ProgressSink | None = None) -> VerifyReport:
        target = self.get_target(target_name)

        def run() -> VerifyReport:
            with self._open(target) as repo:
                return verify(repo, deep=deep, progress=(lambda p: progress(p, 0)) if progress else None)
        return await trio.to_thread.run_sync(run)

    async def collect_garbage(self, target_name: str) -> int:
        target = self.get_target(target_name)

        def run() -> int:
            with self._open(target) as repo:
                return collect_garbage(repo).bytes_freed
        return await trio.to_thread.run_sync(run)

    # --- restore -------------------------------------------------------------------------------
    async def restore(self, ref: str, new_name: str, *, storage_class: str = "",
                      progress: ProgressSink | None = None) -> Volume:
        names.check(new_name, names.VOLUME)
        view = await self.get(ref)
        info = view.info
        if self.catalog.volume_id(new_name) is not None:
            raise AlreadyExists(f"a volume named {new_name!r} already exists; restore to a new name")
        try:
            size, block_size = int(info.meta["size"]), int(info.meta["block_size"])
        except (KeyError, ValueError):
            raise FailedPrecondition(f"backup {ref} does not record its volume's size; it was not "
                                     "made by `galleonctl backup create`") from None
        cls = self.volumes.classes.get(storage_class) if storage_class else self.volumes.classes.default()
        if cls.block_size != block_size:
            raise InvalidArgument(f"backup {ref} has blocks of {block_size} bytes and storage class {cls.name} "
                                  f"{cls.block_size}; restore with --storage-class naming a class of {block_size}-byte blocks")
        target = self.get_target(view.target)
        volume = await self.volumes.create(new_name, size, storage_class=cls.name)
        try:
            async with self.volumes.lock(volume):
                await self._load(self.volumes.offline_ops(self.volumes.get(volume.id)), target, info, progress)
        except BaseException:
            with trio.CancelScope(shield=True):
                await _quietly(self.volumes.delete(volume.id, force=True), f"removing half-restored {new_name}")
            raise
        log.info("backup %s restored to new volume %s", ref, new_name)
        return self.volumes.get(volume.id)

    async def _load(self, ops: VolumeOps, target: BackupTarget, info: BackupInfo,
                    progress: ProgressSink | None) -> None:
        total = int(info.meta.get("used_bytes", "0") or 0)
        spool = self._spool()
        repo = await trio.to_thread.run_sync(self._open, target)
        try:
            reader = await trio.to_thread.run_sync(open_backup, repo, info.backup_id)
            try:
                windows = reader.walk(progress=(lambda p: progress(p, total)) if progress else None)
                await self._load_windows(ops, windows, spool)
            finally:
                await trio.to_thread.run_sync(reader.close)
        finally:
            await trio.to_thread.run_sync(repo.close)
            shutil.rmtree(spool, ignore_errors=True)

    async def _load_windows(self, ops: VolumeOps, windows: Iterator[Any], spool: str) -> None:
        """Load window after window; the next is read and spooled while a helper loads this
        one (two spool directories, used in turn)."""
        mapped: dict[bytes, bytes] = {}       # block id in the backup -> in the new volume
        slots = []
        for n in ("a", "b"):
            os.mkdir(os.path.join(spool, n), 0o700)
            slots.append(tuple(os.path.join(spool, n, f) for f in ("records", "blocks", "known")))
        current = await trio.to_thread.run_sync(_spool_window, windows, slots[0], RESTORE_FIRST_LOAD_BYTES)
        first, slot = True, 0
        while current is not None:
            paths = slots[slot]
            await trio.to_thread.run_sync(_write_known, paths[2], current, mapped)
            upcoming: list[list[bytes] | None] = []

            async def spool_next(into: tuple[str, ...] = slots[1 - slot],
                                 out: list[list[bytes] | None] = upcoming) -> None:
                out.append(await trio.to_thread.run_sync(_spool_window, windows, into))

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(spool_next)
                    loaded = await ops.run(BackupLoad(paths[0], paths[1], paths[2], first=first))
            except BaseExceptionGroup as group:
                raise _leading(group) from None
            mapped.update(loaded.stored)
            current, first, slot = upcoming[0], False, 1 - slot

    # --- retention -----------------------------------------------------------------------------
    async def apply_retention(self, policy: BackupPolicy, volume_ids: set[str]) -> list[str]:
        """Forget the backups of ``volume_ids`` in the policy's target that its rules do not
        keep, then collect garbage; return the backup ids deleted."""
        target = self.get_target(policy.target)
        rules = policy.retention()

        def run() -> list[str]:
            with self._open(target) as repo:
                removed = []
                for volume_id in sorted(volume_ids):
                    plans = forget(repo, rules, volume_id=volume_id)
                    removed += [b for plan in plans.values() for b in plan.remove]
                if removed:
                    collect_garbage(repo)
                return removed
        return await trio.to_thread.run_sync(run)


class BackupPolicyManager:
    """Backup policies and their scheduler, a task of the daemon's trio loop. A run backs up
    every matching volume (hooks around its snapshot), then applies the policy's retention
    to those volumes' backups in its target and collects the garbage (mark and sweep, which
    fails closed). A failure is recorded in ``last_error`` and logged; other volumes go on."""

    TICK_MAX_S = 30.0
    TICK_MIN_S = 0.2

    def __init__(self, catalog: Catalog, volumes: VolumeManager, backups: BackupManager) -> None:
        self.catalog = catalog
        self.volumes = volumes
        self.backups = backups
        self._changed = trio.Event()

    def get(self, name: str) -> BackupPolicy:
        names.check(name, names.BACKUP_POLICY)
        data = self.catalog.backup_policy(name)
        if data is None:
            raise NotFound(f"backup policy {name!r} does not exist")
        return BackupPolicy.from_json(data)

    def list(self) -> list[BackupPolicy]:
        return sorted((BackupPolicy.from_json(p) for p in self.catalog.backup_policies()), key=lambda p: p.name)

    def create(self, policy: BackupPolicy) -> BackupPolicy:
        policy.validate()
        self.backups.get_target(policy.target)
        if self.catalog.backup_policy(policy.name) is not None:
            raise AlreadyExists(f"backup policy {policy.name!r} already exists")
        policy.created_ns, policy.last_run_ns, policy.last_error = now_ns(), 0, ""
        self.catalog.put_backup_policy(policy.to_json())
        self._changed.set()
        return policy

    def delete(self, name: str) -> None:
        self.get(name)
        self.catalog.delete_backup_policy(name)
        self._changed.set()

    def next_run_ns(self, policy: BackupPolicy) -> int:
        return policy.next_run_ns(max(policy.last_run_ns, policy.created_ns))

    async def run(self) -> None:
        """Run policies when they are due; runs until cancelled."""
        while True:
            waits = []
            for policy in self.list():
                due = self.next_run_ns(policy)
                if due <= time.time_ns():
                    await self.run_once(policy)
                    current = self.catalog.backup_policy(policy.name)
                    due = self.next_run_ns(BackupPolicy.from_json(current)) if current else time.time_ns()
                waits.append((due - time.time_ns()) / 1e9)
            self._changed = trio.Event()
            with trio.move_on_after(max(self.TICK_MIN_S, min([self.TICK_MAX_S, *waits]))):
                await self._changed.wait()

    async def run_once(self, policy: BackupPolicy) -> builtins.list[str]:
        """One run of ``policy``; returns the errors (also recorded in the policy)."""
        errors: builtins.list[str] = []
        done: set[str] = set()
        for volume in self.volumes.list(policy.selector):
            if volume.state not in (VolumeState.AVAILABLE, VolumeState.MOUNTED):
                continue
            try:
                await self.backups.create(volume.name, policy.target, pre_hook=policy.pre_hook,
                                          post_hook=policy.post_hook, hook_timeout_s=policy.hook_timeout_s)
                done.add(volume.id)
            except GalleonError as exc:
                errors.append(f"{volume.name}: {exc}")
                log.error("backup policy %s, volume %s: %s", policy.name, volume.name, exc)
        if done:
            try:
                removed = await self.backups.apply_retention(policy, done)
                if removed:
                    log.info("backup policy %s: retention removed %s", policy.name, ", ".join(removed))
            except GalleonError as exc:
                errors.append(f"retention: {exc}")
                log.error("backup policy %s, retention: %s", policy.name, exc)
        data = self.catalog.backup_policy(policy.name)
        if data is not None:
            current = BackupPolicy.from_json(data)
            current.last_run_ns = time.time_ns()
            current.last_error = "; ".join(errors)
            self.catalog.put_backup_policy(current.to_json())
        return errors


# --- helpers (run on worker threads) ----------------------------------------------------------
Row = tuple[bytes, bytes | None, tuple[bytes, ...]]


def _read_rows(path: str) -> list[Row]:
    rows = [(bytes(k), None if v is None else bytes(v), tuple(bytes(r) for r in refs))
            for batch in read_frames(path) for k, v, refs in batch]
    rows.sort(key=lambda r: r[0])       # sealed volumes scan in token order; the table wants keys
    return rows


def _write_ids(path: str, ids: list[bytes]) -> None:
    with open(path, "wb") as f:
        write_frames(f, iter(ids), 4096)


def _put_blocks(writer: BackupWriter, path: str) -> None:
    """The blocks of one exported spool file into the backup; the file is removed after."""
    for batch in read_frames(path):
        for bid, data in batch:
            writer.put_blob(bytes(bid), bytes(data))
    os.unlink(path)


def _finish(writer: BackupWriter, rows: list[Row]) -> BackupInfo:
    for key, value, refs in rows:
        if value is None:
            writer.delete_record(key)
        else:
            writer.put_record(key, value, refs)
    return writer.commit()


def _spool_window(windows: Iterator[Any], paths: tuple[str, ...],
                  limit: int = RESTORE_LOAD_BYTES) -> list[bytes] | None:
    """The next reader windows' records and blobs into spool files, until they hold
    ``limit`` bytes of blobs (each load costs a helper and a commit, so a few large
    loads beat many small ones); returns the blob ids their records reference (None after
    the last window). The reader's windows come in key order, so their concatenation is."""
    refs: list[bytes] | None = None
    size = 0
    with open(paths[0], "wb") as rf, open(paths[1], "wb") as bf:
        while size < limit:
            window = next(windows, None)
            if window is None:
                break
            records, blobs = window
            write_frames(rf, ([r.key, r.value, list(r.refs)] for r in records), 4096)
            write_frames(bf, ([bid, data] for bid, (_kind, data) in blobs.items()), 64)
            size += sum(len(data) for _kind, data in blobs.values())
            refs = [] if refs is None else refs
            refs.extend(ref for r in records for ref in r.refs)
    return refs


def _write_known(path: str, refs: list[bytes], mapped: dict[bytes, bytes]) -> None:
    """Which referenced blocks earlier loads stored, and under which id."""
    known = {ref for ref in refs if ref in mapped}
    with open(path, "wb") as f:
        write_frames(f, ([ref, mapped[ref]] for ref in known), 4096)


def _leading(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a nursery's group stands for: its first ``GalleonError`` (what the API
    answers with), else its first exception."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)
    walk(group)
    return next((e for e in leaves if isinstance(e, GalleonError)), leaves[0])


async def _quietly(work: Any, what: str) -> None:
    try:
        await work
    except GalleonError as exc:
        log.warning("%s failed: %s", what, exc)


async def _run_hook(what: str, command: str, volume: Volume, timeout_s: float) -> None:
    """Run a hook with ``sh -c`` and a timeout; the volume's name is in GALLEONFS_VOLUME. A
    failure is the backup's failure, in one sentence with the hook's last line of output."""
    env = dict(os.environ, GALLEONFS_VOLUME=volume.name, GALLEONFS_VOLUME_ID=volume.id, GALLEONFS_HOOK=what)
    try:
        with trio.fail_after(timeout_s):
            done = await trio.run_process(["sh", "-c", command], env=env, capture_stdout=True,
                                          capture_stderr=True, check=False, stdin=subprocess.DEVNULL)
    except trio.TooSlowError:
        raise FailedPrecondition(f"the backup's {what} did not finish within {timeout_s:g} s; "
                                 f"nothing was backed up") from None
    if done.returncode != 0:
        out = (done.stderr or done.stdout or b"").decode(errors="replace").strip().splitlines()
        last = names.one_line(out[-1])[:200] if out else "no output"
        raise FailedPrecondition(f"the backup's {what} failed with exit code {done.returncode} ({last}); "
                                 f"nothing was backed up")


