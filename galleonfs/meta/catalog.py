"""``Catalog``: the node catalog (``<data-dir>/node.lmdb``): volumes, storage classes, node identity.

Small and rarely written, so every change is its own LMDB transaction, committed with a
full sync before the call returns: once a request has been answered, a crash of the daemon
cannot take its effect back. Values are JSON (readable with ``mdb_dump``, easy to migrate).

Databases: ``volumes`` (id -> volume), ``names`` (name -> id), ``classes`` (name -> storage
class), ``node`` (key -> value: format version, node id), ``qos_policies`` (name -> QoS
policy), ``qos_assignments`` (volume id -> QoS policy name), ``tokens`` (name -> API token:
role, tenant, SHA-256 of its secret, times; never the secret), ``tenants`` (name -> tenant).

What it must not do: validate (the managers do) or hold state outside LMDB.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import lmdb

from .. import limits
from ..errors import FormatError

CATALOG_FORMAT = 1
_MAP_SIZE = 1 * limits.GiB      # address space; a catalog of 100k volumes is ~100 MB
_KEY_BYTES_MAX = 511            # LMDB's compiled-in limit (Environment.max_key_size())


class Catalog:
    def __init__(self, data_dir: str) -> None:
        path = os.path.join(data_dir, "node.lmdb")
        try:
            self._env = lmdb.open(path, subdir=True, create=True, max_dbs=16, map_size=_MAP_SIZE,
                                  sync=True, metasync=True)
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
        with self._env.begin(write=True) as txn:
            version = txn.get(b"format", db=self._node)
            if version is None:
                txn.put(b"format", str(CATALOG_FORMAT).encode(), db=self._node)
                txn.put(b"node_id", str(uuid.uuid4()).encode(), db=self._node)
            elif int(version) != CATALOG_FORMAT:
                raise FormatError(f"node catalog {path} has format {int(version)}; "
                                  f"this galleond reads format {CATALOG_FORMAT}")
            self.node_id = bytes(txn.get(b"node_id", db=self._node)).decode()

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

    def _get(self, db: Any, key: str) -> dict[str, Any] | None:
        if not _storable(key):
            return None
        with self._env.begin() as txn:
            raw = txn.get(key.encode(), db=db)
        return None if raw is None else json.loads(raw)

    def close(self) -> None:
        self._env.close()


def _storable(key: str) -> bool:
    """Whether LMDB can hold ``key``. A lookup of one it cannot is simply "not there": none
    was ever stored, and LMDB answers an empty key with MDB_BAD_VALSIZE, not "not found"."""
    return 0 < len(key.encode()) <= _KEY_BYTES_MAX
