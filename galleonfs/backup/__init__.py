"""Off-node backups: a deduplicated, compressed, encrypted repository on a directory or S3.

This package is the backup *repository* (issue 13): it knows targets, packs, indexes,
manifests, keys, locks, retention, GC and verify, and nothing of volumes. A volume's side
(managers/backup, later) feeds it and reads it back through a small API, all of it
re-exported here:

* ``Repository.init(target, key)`` / ``Repository.open(target, key)``: the target
  (``open_target("s3://bucket/prefix", endpoint=..., credentials_env="AWS")`` or
  ``open_target("file:///srv/backups")``) and the key (``RepositoryKey.from_key(32 bytes)``
  or ``.from_passphrase(text)``) are all it needs (disaster recovery).
* ``begin_backup(repo, volume_name=, volume_id=, generation=, parent=, meta=, time=)`` gives
  a ``BackupWriter``: ``has_blob(id)``, ``put_blob(id, bytes, sealed=)``,
  ``put_record(key, value, refs)``, ``delete_record(key)``, ``commit()``. Blob ids are the
  volume's keyed block ids; records are the volume's metadata records (opaque here) with the
  block ids they reference. With ``parent``, only the changed records are given (a
  generation diff) and the rest of the parent's table is carried over by reference.
* ``repo.list_backups(volume_id)``, ``open_backup(repo, id)`` gives a ``BackupReader``:
  ``records()``, ``get(key)``, ``walk(have=)`` (records with the blobs they reference,
  verified), ``blobs(ids)``.
* ``repo.delete_backups(ids)``, ``forget(repo, Policy(...))``, ``collect_garbage(repo)``,
  ``verify(repo, deep=)``, ``repo.rebuild_index()``, ``repo.add_key(k)``/``remove_key(k)``,
  ``break_locks(repo)``.

``Repository`` (``repository``) is the core: target, keys, index, manifests, locks. The
operations are functions of their own modules (``writer``, ``reader``, ``retention``, ``gc``,
``verify``) that take a repository; the core imports none of them. Formats are drawn byte
by byte in the modules that implement them (``layout`` lists them); the safety argument of
concurrent backup and GC is in ``gc`` and ``locks``. Every bound is in ``limits``; every
error in ``errors``.

What it must not do: import anything of GalleonFS above the floor (``galleonfs.errors``,
``galleonfs.limits``, ``galleonfs.units``): no engine, managers or RPC.
"""

from __future__ import annotations

from .gc import GCReport, collect_garbage
from .keys import RepositoryKey
from .locks import break_locks
from .manifests import BackupInfo, Record
from .progress import Progress
from .reader import BackupReader, open_backup
from .repository import Repository
from .retention import Plan, Policy, forget
from .targets import DirectoryTarget, Target, open_target
from .verify import VerifyReport, verify
from .writer import BackupWriter, begin_backup

__all__ = [
    "BackupInfo", "BackupReader", "BackupWriter", "DirectoryTarget", "GCReport", "Plan",
    "Policy", "Progress", "Record", "Repository", "RepositoryKey", "Target", "VerifyReport",
    "begin_backup", "break_locks", "collect_garbage", "forget", "open_backup", "open_target",
    "verify",
]
