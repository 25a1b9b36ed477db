"""Helpers of the backup tests: a moto server process, S3 buckets, and a "volume" as the
repository sees one: records (key, value, referenced block ids) and blocks under the volume
family's keyed BLAKE3 ids (or, for an encrypted volume, its sealed frames)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import boto3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from galleonfs.backup import Repository, RepositoryKey, Target
from galleonfs.backup.format import BackupInfo
from galleonfs.backup.s3 import S3Target

FAMILY_KEY = b"f" * 32          # the keyed-id key of the test volumes' family
VOLUME_DATA_KEY = b"v" * 32     # what encrypts an "encrypted volume's" frames
REPO_KEY = RepositoryKey.from_key(b"r" * 32)
CREDENTIALS_ENV = "GALLEONTEST"  # GALLEONTEST_ACCESS_KEY_ID / _SECRET_ACCESS_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    proc: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_moto(log: Path, env: dict[str, str] | None = None) -> MotoServer:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return MotoServer(proc, endpoint, log)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


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
    with repo.begin_backup(volume_name=vol.name, volume_id=vol.vol_id, generation=vol.generation,
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
    with repo.open_backup(backup_id) as reader:
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
