"""Helpers of the backup tests: a moto server process, S3 buckets, and a "volume" as the
repository sees one: records (key, value, referenced block ids) and blocks under the volume
family's keyed BLAKE3 ids (or, for an encrypted volume, its sealed frames)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import blake3
import boto3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from galleonfs.backup import Repository, RepositoryKey, Target, begin_backup, open_backup
from galleonfs.backup.manifests import BackupInfo
from galleonfs.backup.s3 import S3Target
from galleonfs.backup.testing import MotoServer

FAMILY_KEY = b"f" * 32          # the keyed-id key of the test volumes' family
VOLUME_DATA_KEY = b"v" * 32     # what encrypts an "encrypted volume's" frames
REPO_KEY = RepositoryKey.from_key(b"r" * 32)
CREDENTIALS_ENV = "GALLEONTEST"  # GALLEONTEST_ACCESS_KEY_ID / _SECRET_ACCESS_KEY


def raw_s3(endpoint: str) -> object:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def new_bucket(moto: MotoServer) -> str:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    raw_s3(moto.endpoint).create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return bucket


def s3_target(moto: MotoServer, bucket: str, prefix: str = "repo") -> S3Target:
    return S3Target(bucket, prefix, endpoint=moto.endpoint, region="us-east-1",
                    credentials_env=CREDENTIALS_ENV)




def block_id(data: bytes) -> bytes:
    return blake3.blake3(data, key=FAMILY_KEY).digest()


def seal_frame(block: bytes) -> bytes:
    """An encrypted volume's stored frame: the repository must keep it as it is."""
    nonce = os.urandom(12)
    return nonce + AESGCM(VOLUME_DATA_KEY).encrypt(nonce, block, block_id(block))


def open_frame(frame: bytes, bid: bytes) -> bytes:
    return AESGCM(VOLUME_DATA_KEY).decrypt(frame[:12], frame[12:], bid)


@dataclass
class Vol:
    """Records (key -> value, referenced block ids) and blocks (id -> plaintext)."""

    name: str = "db"
    vol_id: str = "vol-1"
    encrypted: bool = False
    records: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = field(default_factory=dict)
    blocks: dict[bytes, bytes] = field(default_factory=dict)
    frames: dict[bytes, bytes] = field(default_factory=dict)   # encrypted: id -> frame
    generation: int = 0

    def set(self, key: bytes, value: bytes, contents: list[bytes]) -> None:
        ids = []
        for data in contents:
            bid = block_id(data)
            self.blocks[bid] = data
            if self.encrypted and bid not in self.frames:
                self.frames[bid] = seal_frame(data)
            ids.append(bid)
        self.records[key] = (value, tuple(ids))

    def copy(self) -> Vol:
        return Vol(self.name, self.vol_id, self.encrypted, dict(self.records), dict(self.blocks),
                   dict(self.frames), self.generation)

    def payload(self, bid: bytes) -> bytes:
        return self.frames[bid] if self.encrypted else self.blocks[bid]


def backup(repo: Repository, vol: Vol, parent: tuple[BackupInfo, Vol] | None = None,
           **kwargs: object) -> BackupInfo:
    """Back ``vol`` up: everything, or with ``parent`` only what changed since it (the
    generation diff the volume side will compute)."""
    vol.generation += 1
    if parent is None:
        changes: dict[bytes, tuple[bytes, tuple[bytes, ...]] | None] = dict(vol.records)
    else:
        old = parent[1].records
        changes = {k: v for k, v in vol.records.items() if old.get(k) != v}
        changes.update({k: None for k in old if k not in vol.records})
    with begin_backup(repo, volume_name=vol.name, volume_id=vol.vol_id, generation=vol.generation,
                      parent=parent[0].backup_id if parent else None, **kwargs) as w:  # type: ignore[arg-type]
        for key in sorted(changes):
            change = changes[key]
            if change is None:
                w.delete_record(key)
                continue
            value, refs = change
            for bid in refs:
                if not w.has_blob(bid):
                    w.put_blob(bid, vol.payload(bid), sealed=vol.encrypted)
            w.put_record(key, value, refs)
        return w.commit()


def restore(repo: Repository, backup_id: str, encrypted: bool = False) -> Vol:
    """Read a backup back the way the volume side will: records with their blocks."""
    out = Vol(encrypted=encrypted)
    with open_backup(repo, backup_id) as reader:
        out.name, out.vol_id = reader.info.volume_name, reader.info.volume_id
        for records, blobs in reader.walk(have=out.blocks.__contains__):
            for bid, (_kind, data) in blobs.items():
                out.blocks[bid] = open_frame(data, bid) if encrypted else data
            for r in records:
                for bid in r.refs:
                    assert bid in out.blocks, "a record came before its block"
                out.records[r.key] = (r.value, r.refs)
    return out


def same_content(a: Vol, b: Vol) -> None:
    assert a.records == b.records
    for _value, refs in a.records.values():
        for bid in refs:
            assert a.blocks[bid] == b.blocks[bid]
            assert block_id(b.blocks[bid]) == bid


def object_sizes(target: Target) -> dict[str, int]:
    return dict(target.list(""))
