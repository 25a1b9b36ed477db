"""``Catalog``: the node catalog (``<data-dir>/node.lmdb``): volumes, storage classes, node identity.

Small and rarely written, so every change is its own LMDB transaction, committed with a
full sync before the call returns: once a request has been answered, a crash of the daemon
cannot take its effect back. Values are JSON (readable with ``mdb_dump``, easy to migrate).

Databases: ``volumes`` (id -> volume), ``names`` (name -> id), ``classes`` (name -> storage
class), ``node`` (key -> value: format version, node id), ``qos_policies`` (name -> QoS
policy), ``qos_assignments`` (volume id -> QoS policy name), ``tokens`` (name -> API token:
role, tenant, SHA-256 of its secret, times; never the secret), ``tenants`` (name -> tenant).

Backup: ``backup()`` copies the catalog (compacted) to ``node.lmdb.backup``, a single LMDB
data file written to a temporary name, synced and renamed, so a backup is always whole. The
daemon calls it after changes (at most every ``limits.catalog_backup_interval_s``) and at a
clean stop. ``check`` and ``dump`` read a catalog or a backup without writing; galleond runs
them in a helper process (``volops/helper.py``), so that a damaged page is a dead helper
and a sentence, never a SIGBUS of the daemon.

What it must not do: validate (the managers do) or hold state outside LMDB.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import lmdb

from .. import limits
from ..errors import CatalogDamaged, FormatError, IOFailure
from ..storage import fsync_dir

CATALOG_FORMAT = 1
_MAP_SIZE = 1 * limits.GiB      # address space; a catalog of 100k volumes is ~100 MB
_KEY_BYTES_MAX = 511            # LMDB's compiled-in limit (Environment.max_key_size())
_MAX_DBS = 16
CATALOG_DIR = "node.lmdb"
BACKUP_FILE = "node.lmdb.backup"
# Databases whose values are JSON documents: a check decodes every one of them.
_JSON_DBS = frozenset({b"volumes", b"classes", b"policies", b"qos_policies", b"backup_targets",
                       b"backup_policies"})


class Catalog:
    def __init__(self, data_dir: str) -> None:
        path = os.path.join(data_dir, CATALOG_DIR)
        self.backup_path = os.path.join(data_dir, BACKUP_FILE)
        self._backup_lock = threading.Lock()      # a backup on a thread vs. close()
        self._backed_up_txn = -1
        try:
            # 0700/0600: volume names and labels are nobody else's business.
            self._env = lmdb.open(path, subdir=True, create=True, max_dbs=_MAX_DBS, map_size=_MAP_SIZE,
                                  sync=True, metasync=True, mode=0o700)
        except lmdb.Error as exc:
            raise FormatError(f"cannot open the node catalog at {path}: {exc}") from exc
        self._volumes = self._env.open_db(b"volumes")
        self._names = self._env.open_db(b"names")
        self._classes = self._env.open_db(b"classes")
        self._node = self._env.open_db(b"node")
        self._policies = self._env.open_db(b"policies")
        self._qos = self._env.open_db(b"qos_policies")
        self._qos_volumes = self._env.open_db(b"qos_assignments")
        self._tokens = self._env.open_db(b"tokens")
        self._tenants = self._env.open_db(b"tenants")
        self._backup_targets = self._env.open_db(b"backup_targets")     # issue 13: no secrets in them
        self._backup_policies = self._env.open_db(b"backup_policies")
        with self._env.begin(write=True) as txn:
            version = txn.get(b"format", db=self._node)
            if version is None:
                txn.put(b"format", str(CATALOG_FORMAT).encode(), db=self._node)
                txn.put(b"node_id", str(uuid.uuid4()).encode(), db=self._node)
            elif int(version) != CATALOG_FORMAT:
                raise FormatError(f"node catalog {path} has format {int(version)}; "
                                  f"this galleond reads format {CATALOG_FORMAT}")
            node_id = txn.get(b"node_id", db=self._node)
            if node_id is None:
                raise FormatError(f"node catalog {path} has a format but no node id: it is damaged; "
                                  f"`galleond recover-catalog` rebuilds it")
            self.node_id = bytes(node_id).decode()

    # --- volumes -----------------------------------------------------------------------------------
    def volume(self, volume_id: str) -> dict[str, Any] | None:
        if not _storable(volume_id):
            return None
        with self._env.begin() as txn:
            raw = txn.get(volume_id.encode(), db=self._volumes)
        return None if raw is None else json.loads(raw)

    def volume_id(self, name: str) -> str | None:
        if not _storable(name):
            return None
        with self._env.begin() as txn:
            raw = txn.get(name.encode(), db=self._names)
        return None if raw is None else bytes(raw).decode()

    def volumes(self) -> Iterator[dict[str, Any]]:
        with self._env.begin() as txn:
            rows = [json.loads(v) for _, v in txn.cursor(db=self._volumes)]
        yield from rows

    def put_volume(self, volume: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            old = txn.get(volume["id"].encode(), db=self._volumes)
            if old is not None:
                old_name = json.loads(old)["name"]
                if old_name != volume["name"]:
                    txn.delete(old_name.encode(), db=self._names)
            txn.put(volume["id"].encode(), json.dumps(volume, sort_keys=True).encode(), db=self._volumes)
            txn.put(volume["name"].encode(), volume["id"].encode(), db=self._names)

    def delete_volume(self, volume_id: str) -> None:
        with self._env.begin(write=True) as txn:
            raw = txn.get(volume_id.encode(), db=self._volumes)
            if raw is not None:
                txn.delete(json.loads(raw)["name"].encode(), db=self._names)
                txn.delete(volume_id.encode(), db=self._volumes)

    # --- storage classes ---------------------------------------------------------------------------
    def storage_class(self, name: str) -> dict[str, Any] | None:
        if not _storable(name):
            return None
        with self._env.begin() as txn:
            raw = txn.get(name.encode(), db=self._classes)
        return None if raw is None else json.loads(raw)

    def storage_classes(self) -> list[dict[str, Any]]:
        with self._env.begin() as txn:
            return [json.loads(v) for _, v in txn.cursor(db=self._classes)]

    def put_storage_class(self, cls: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(cls["name"].encode(), json.dumps(cls, sort_keys=True).encode(), db=self._classes)

    def delete_storage_class(self, name: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.delete(name.encode(), db=self._classes)

    # --- snapshot policies ---------------------------------------------------------------------------
    def policy(self, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        with self._env.begin() as txn:
            raw = txn.get(name.encode(), db=self._policies)
        return None if raw is None else json.loads(raw)

    def policies(self) -> list[dict[str, Any]]:
        with self._env.begin() as txn:
            return [json.loads(v) for _, v in txn.cursor(db=self._policies)]

    def put_policy(self, policy: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(policy["name"].encode(), json.dumps(policy, sort_keys=True).encode(), db=self._policies)

    def delete_policy(self, name: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.delete(name.encode(), db=self._policies)

    # --- QoS policies and which volume has which ----------------------------------------------------
    def qos_policy(self, name: str) -> dict[str, Any] | None:
        if not _storable(name):
            return None
        with self._env.begin() as txn:
            raw = txn.get(name.encode(), db=self._qos)
        return None if raw is None else json.loads(raw)

    def qos_policies(self) -> list[dict[str, Any]]:
        with self._env.begin() as txn:
            return [json.loads(v) for _, v in txn.cursor(db=self._qos)]

    def put_qos_policy(self, policy: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(policy["name"].encode(), json.dumps(policy, sort_keys=True).encode(), db=self._qos)

    def delete_qos_policy(self, name: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.delete(name.encode(), db=self._qos)

    def qos_assignments(self) -> dict[str, str]:
        """Volume id -> QoS policy name."""
        with self._env.begin() as txn:
            return {bytes(k).decode(): bytes(v).decode() for k, v in txn.cursor(db=self._qos_volumes)}

    def assign_qos(self, volume_id: str, policy: str) -> None:
        """Give the volume ``policy``; an empty name takes its policy away."""
        with self._env.begin(write=True) as txn:
            if policy:
                txn.put(volume_id.encode(), policy.encode(), db=self._qos_volumes)
            else:
                txn.delete(volume_id.encode(), db=self._qos_volumes)

    # --- API tokens and tenants (managers/access.py) ---------------------------------------------
    def token(self, name: str) -> dict[str, Any] | None:
        return self._get(self._tokens, name)

    def tokens(self) -> list[dict[str, Any]]:
        with self._env.begin() as txn:
            return [json.loads(v) for _, v in txn.cursor(db=self._tokens)]

    def put_token(self, token: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(token["name"].encode(), json.dumps(token, sort_keys=True).encode(), db=self._tokens)

    def tenant(self, name: str) -> dict[str, Any] | None:
        return self._get(self._tenants, name)

    def tenants(self) -> list[dict[str, Any]]:
        with self._env.begin() as txn:
            return [json.loads(v) for _, v in txn.cursor(db=self._tenants)]

    def put_tenant(self, tenant: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(tenant["name"].encode(), json.dumps(tenant, sort_keys=True).encode(), db=self._tenants)

    def delete_tenant(self, name: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.delete(name.encode(), db=self._tenants)

    # --- backup targets and policies (addresses and references to secrets, never secrets) ----------
    def backup_target(self, name: str) -> dict[str, Any] | None:
        return self._get(self._backup_targets, name)

    def backup_targets(self) -> list[dict[str, Any]]:
        return self._all(self._backup_targets)

    def put_backup_target(self, target: dict[str, Any]) -> None:
        self._put(self._backup_targets, target)

    def delete_backup_target(self, name: str) -> None:
        self._delete(self._backup_targets, name)

    def backup_policy(self, name: str) -> dict[str, Any] | None:
        return self._get(self._backup_policies, name)

    def backup_policies(self) -> list[dict[str, Any]]:
        return self._all(self._backup_policies)

    def put_backup_policy(self, policy: dict[str, Any]) -> None:
        self._put(self._backup_policies, policy)

    def delete_backup_policy(self, name: str) -> None:
        self._delete(self._backup_policies, name)

    def _all(self, db: Any) -> list[dict[str, Any]]:
        with self._env.begin() as txn:
            return [json.loads(v) for _, v in txn.cursor(db=db)]

    def _put(self, db: Any, record: dict[str, Any]) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(record["name"].encode(), json.dumps(record, sort_keys=True).encode(), db=db)

    def _delete(self, db: Any, name: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.delete(name.encode(), db=db)

    def _get(self, db: Any, key: str) -> dict[str, Any] | None:
        if not _storable(key):
            return None
        with self._env.begin() as txn:
            raw = txn.get(key.encode(), db=db)
        return None if raw is None else json.loads(raw)

    def close(self) -> None:
        with self._backup_lock:
            self._env.close()
            self._backed_up_txn = -2

    # --- backup ------------------------------------------------------------------------------------
    def backup(self, *, force: bool = False) -> bool:
        """Copy the catalog to ``node.lmdb.backup`` if it changed since the last copy (LMDB's
        last transaction id tells); True if it copied. Safe on any thread."""
        with self._backup_lock:
            if self._backed_up_txn == -2:
                return False                       # closed
            txn_id = int(self._env.info()["last_txnid"])
            if txn_id == self._backed_up_txn and not force:
                return False
            tmp = self.backup_path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                try:
                    self._env.copyfd(fd, compact=True)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except (lmdb.Error, OSError) as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)             # a full disk: give the space of the part back
                raise IOFailure(f"cannot back up the node catalog to {tmp}: {exc}") from None
            os.replace(tmp, self.backup_path)
            fsync_dir(os.path.dirname(self.backup_path))
            self._backed_up_txn = txn_id
            return True

    def load_records(self, dbs: dict[str, dict[str, str]]) -> None:
        """Write raw records (``dump``'s ``dbs``: base64 keys and values) in one transaction:
        how ``galleond recover-catalog`` carries a backup's databases into a new catalog."""
        with self._env.begin(write=True) as txn:
            for name, records in dbs.items():
                db = self._env.open_db(base64.b64decode(name), txn=txn)
                for key, value in records.items():
                    txn.put(base64.b64decode(key), base64.b64decode(value), db=db)


def _storable(key: str) -> bool:
    """Whether LMDB can hold ``key``. A lookup of one it cannot is simply "not there": none
    was ever stored, and LMDB answers an empty key with MDB_BAD_VALSIZE, not "not found"."""
    return 0 < len(key.encode()) <= _KEY_BYTES_MAX



def _walk(path: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every record of every database of a catalog directory or backup file, read (and JSON
    decoded where it is JSON) without writing anything: a damaged page shows up here, as an
    LMDB error or as a signal of the process that walks. No lock file: the data directory's
    lock keeps writers away meanwhile."""
    try:
        env = lmdb.open(path, subdir=os.path.isdir(path), readonly=True, lock=False,
                        max_dbs=_MAX_DBS, map_size=_MAP_SIZE, create=False)
    except lmdb.Error as exc:
        raise CatalogDamaged(f"{path} cannot be opened as a catalog: {exc}") from None
    records: dict[bytes, dict[bytes, bytes]] = {}
    try:
        with env.begin() as txn:
            for name in [bytes(k) for k, _ in txn.cursor()]:
                db = env.open_db(name, txn=txn, create=False)
                kept = records.setdefault(name, {})
                for key, value in txn.cursor(db=db):
                    if name in _JSON_DBS:
                        json.loads(bytes(value))
                    kept[bytes(key)] = bytes(value)
    except (lmdb.Error, ValueError) as exc:
        raise CatalogDamaged(f"{path} is damaged: {exc}") from None
    finally:
        env.close()
    version = records.get(b"node", {}).get(b"format")
    if version is None or not version.isdigit() or int(version) != CATALOG_FORMAT:
        raise CatalogDamaged(f"{path} is not a GalleonFS catalog of format {CATALOG_FORMAT} "
                             f"(its format record is {version!r})")
    return records


def check(path: str) -> dict[str, Any]:
    """Walk a catalog (or a backup) entirely: its node id, volume ids and record counts.
    Raises ``CatalogDamaged`` with the reason. Run it in a helper process: it maps the file."""
    return _summary(_walk(path))


def _summary(records: dict[bytes, dict[bytes, bytes]]) -> dict[str, Any]:
    return {"node_id": records[b"node"].get(b"node_id", b"").decode(errors="replace"),
            "volumes": sorted(k.decode(errors="replace") for k in records.get(b"volumes", {})),
            "records": {k.decode(errors="replace"): len(v) for k, v in records.items()}}


def dump(path: str) -> dict[str, Any]:
    """``check``'s summary plus every record of every database in base64 (what
    ``Catalog.load_records`` takes). Run it in a helper process: it maps the file."""
    records = _walk(path)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return {**_summary(records), "dbs": {b64(name): {b64(k): b64(v) for k, v in recs.items()}
                                         for name, recs in records.items()}}
