"""The keys of a backup repository, and its ``config`` object that holds them wrapped.

The master key is 32 random bytes made at ``init``. It exists on the target only wrapped, in
key slots of ``config``, by a key-encryption key (KEK): either 32 bytes given by the caller
(kind 1, a key file or a key manager) or scrypt of a passphrase (kind 2). HKDF-SHA256 of the
master key gives the working keys, each with its own label::

    object key   info "galleonfs-backup objects v1"         seals index, manifest, lock objects
    id key       info "galleonfs-backup ids v1"             keyed BLAKE3 of metadata chunks,
                                                            and where chunks are cut
    config key   info "galleonfs-backup config v1"          authenticates ``config``
    pack key     info "galleonfs-backup pack v1" | pack id  seals one pack's blobs and index

A key per pack makes the blob nonce a counter (its offset in the pack), so no nonce is ever
stored or drawn at random for blobs, and 2^32 blobs under one key is not a concern.

config
------
::

    offset  size  field
         0     4  magic "GBRC"
         4     1  format version 1
         5     1  key slot count k (1..8)
         6     2  reserved 0
         8    16  repository id (random)
        24     8  created, unix seconds
        32  92*k  key slots:
                    +0   1  kind (1 key, 2 passphrase)
                    +1   1  scrypt log2(n)   (0 for kind 1)
                    +2   1  scrypt r         (0 for kind 1)
                    +3   1  scrypt p         (0 for kind 1)
                    +4   4  reserved 0
                    +8   8  KEK id: SHA-256(KEK)[:8], tells "wrong key" from "damaged"
                    +16 16  scrypt salt      (0 for kind 1)
                    +32 12  nonce
                    +44 48  AES-GCM(KEK, master key), AAD "galleonfs-backup key slot" | repo id
    32+92k    12  nonce
    44+92k    16  AES-GCM tag under the config key over nothing, AAD = bytes 0..44+92k

What this module must not do: any I/O, or hold a plaintext key anywhere but in memory.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import InvalidArgument
from . import limits
from .errors import ObjectCorrupt, ObjectTruncated, RepositoryKeyRejected, UnsupportedRepository
from .layout import CONFIG_NAME, VERSION

_CONFIG_HEAD = struct.Struct("<4sBBH16sQ")          # 32 bytes
_SLOT = struct.Struct("<BBBB4s8s16s12s48s")          # 92 bytes
MAGIC_CONFIG = b"GBRC"
_SLOT_AAD = b"galleonfs-backup key slot"
KEY_KIND_KEY = 1
KEY_KIND_PASSPHRASE = 2


@dataclass(frozen=True)
class RepositoryKey:
    """What opens a repository: 32 key bytes (a key file, a KMS) or a passphrase.

    ``repr`` never shows the secret.
    """

    kind: int
    secret: bytes = field(repr=False)

    @classmethod
    def from_key(cls, key: bytes) -> RepositoryKey:
        if len(key) != 32:
            raise InvalidArgument(f"a backup repository key is 32 bytes, not {len(key)}")
        return cls(KEY_KIND_KEY, bytes(key))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> RepositoryKey:
        if not passphrase or len(passphrase) > limits.passphrase_max_chars:
            raise InvalidArgument(
                f"a backup passphrase must have 1 to {limits.passphrase_max_chars} characters")
        return cls(KEY_KIND_PASSPHRASE, passphrase.encode())

    @property
    def description(self) -> str:
        return "passphrase" if self.kind == KEY_KIND_PASSPHRASE else "key"

    def kek(self, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
        if self.kind == KEY_KIND_KEY:
            return self.secret
        return _scrypt(self.secret, salt, log2_n, r, p)


@functools.lru_cache(maxsize=limits.kek_cache_entries)
def _scrypt(secret: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    """scrypt, remembered: a daemon opens a repository for every backup, restore and listing,
    and one derivation costs 0.1-0.2 s of CPU (more than an incremental backup's real work).
    The process holds the passphrase anyway (its environment), so the cache adds no secret
    it did not have; a slot's salt is fixed, so each (passphrase, slot) is derived once."""
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(secret)


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class Keys:
    """The working keys derived from a repository's master key (see the module docstring)."""

    def __init__(self, master: bytes) -> None:
        assert len(master) == 32
        self._master = master
        self.objects = AESGCM(_hkdf(master, b"galleonfs-backup objects v1"))
        self.id_key = _hkdf(master, b"galleonfs-backup ids v1")
        self.config = AESGCM(_hkdf(master, b"galleonfs-backup config v1"))

    @property
    def master(self) -> bytes:
        return self._master

    def pack(self, pack_id: bytes) -> AESGCM:
        return AESGCM(_hkdf(self._master, b"galleonfs-backup pack v1" + pack_id))

    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """The repository's own keyed id of a blob (metadata chunks)."""
        return blake3.blake3(data, key=self.id_key).digest()

    def key_hash32(self, data: bytes) -> int:
        """A keyed 32-bit hash: where table chunks are cut, unguessable without the key."""
        return int.from_bytes(blake3.blake3(data, key=self.id_key).digest(4), "little")


@dataclass(frozen=True, slots=True)
class Config:
    repo_id: bytes
    created_s: int
    slots: tuple[bytes, ...]


def _seal_slot(key: RepositoryKey, master: bytes, repo_id: bytes) -> bytes:
    if key.kind == KEY_KIND_PASSPHRASE:
        salt, log2_n, r, p = os.urandom(16), limits.scrypt_log2_n, limits.scrypt_r, limits.scrypt_p
    else:
        salt, log2_n, r, p = bytes(16), 0, 0, 0
    kek = key.kek(salt, log2_n, r, p)
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, master, _SLOT_AAD + repo_id)
    return _SLOT.pack(key.kind, log2_n, r, p, bytes(4), hashlib.sha256(kek).digest()[:8],
                      salt, nonce, wrapped)


def new_config(key: RepositoryKey) -> tuple[bytes, Keys]:
    """A fresh repository's ``config`` object and its keys."""
    master, repo_id = os.urandom(32), os.urandom(16)
    slot = _seal_slot(key, master, repo_id)
    head = _CONFIG_HEAD.pack(MAGIC_CONFIG, VERSION, 1, 0, repo_id, int(datetime.now(UTC).timestamp()))
    return _finish_config(head + slot, Keys(master)), Keys(master)


def _finish_config(body: bytes, keys: Keys) -> bytes:
    nonce = os.urandom(12)
    return body + nonce + keys.config.encrypt(nonce, b"", body)


def _parse_config(data: bytes, target: str) -> Config:
    def bad(reason: str) -> ObjectCorrupt:
        return ObjectCorrupt(name=CONFIG_NAME, target=target, reason=reason)

    if len(data) < _CONFIG_HEAD.size + 28:
        raise ObjectTruncated(name=CONFIG_NAME, target=target, reason=f"{len(data)} bytes")
    magic, version, count, _, repo_id, created = _CONFIG_HEAD.unpack_from(data)
    if magic != MAGIC_CONFIG:
        raise bad("it is not a GalleonFS backup repository config (bad magic)")
    if version != VERSION:
        raise UnsupportedRepository(name=CONFIG_NAME, target=target, version=version)
    end = _CONFIG_HEAD.size + count * _SLOT.size
    if not 1 <= count <= limits.key_slots_max or len(data) != end + 28:
        raise bad(f"{count} key slots do not match its length of {len(data)} bytes")
    slots = tuple(data[_CONFIG_HEAD.size + i * _SLOT.size:][:_SLOT.size] for i in range(count))
    return Config(repo_id, created, slots)


def _check_config(data: bytes, keys: Keys, target: str) -> None:
    end = len(data) - 28
    try:
        keys.config.decrypt(data[end:end + 12], data[end + 12:], data[:end])
    except InvalidTag:
        raise ObjectCorrupt(name=CONFIG_NAME, target=target,
                            reason="its authentication tag does not match (altered)") from None


def open_config(data: bytes, key: RepositoryKey, target: str) -> tuple[Config, Keys]:
    """Check ``config`` and unwrap the master key with ``key``."""
    config = _parse_config(data, target)
    keys = Keys(_unwrap(config.slots, key, config.repo_id, target))
    _check_config(data, keys, target)
    return config, keys


def reread_config(data: bytes, keys: Keys, target: str) -> Config:
    """``config`` as stored now, checked with keys already unwrapped."""
    config = _parse_config(data, target)
    _check_config(data, keys, target)
    return config


def slot_opens(slot: bytes, key: RepositoryKey) -> bool:
    kind, log2_n, r, p, _, kek_id, salt, _nonce, _wrapped = _SLOT.unpack(slot)
    if kind != key.kind or (kind == KEY_KIND_PASSPHRASE and not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 4)):
        return False
    return hashlib.sha256(key.kek(salt, log2_n, r, p)).digest()[:8] == bytes(kek_id)


def config_with_slots(config: Config, keys: Keys, slots: Sequence[bytes]) -> bytes:
    """``config`` rewritten with other key slots (adding or removing a key)."""
    assert 1 <= len(slots) <= limits.key_slots_max
    head = _CONFIG_HEAD.pack(MAGIC_CONFIG, VERSION, len(slots), 0, config.repo_id, config.created_s)
    return _finish_config(head + b"".join(slots), keys)


def new_slot(key: RepositoryKey, keys: Keys, repo_id: bytes) -> bytes:
    return _seal_slot(key, keys.master, repo_id)


def _unwrap(slots: Sequence[bytes], key: RepositoryKey, repo_id: bytes, target: str) -> bytes:
    for slot in slots:
        kind, log2_n, r, p, _, kek_id, salt, nonce, wrapped = _SLOT.unpack(slot)
        if kind != key.kind:
            continue
        if kind == KEY_KIND_PASSPHRASE and not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 4):
            raise ObjectCorrupt(name=CONFIG_NAME, target=target,
                                reason=f"scrypt parameters n=2**{log2_n} r={r} p={p} are out of range")
        kek = key.kek(salt, log2_n, r, p)
        if hashlib.sha256(kek).digest()[:8] != kek_id:
            continue
        try:
            return AESGCM(kek).decrypt(nonce, wrapped, _SLOT_AAD + repo_id)
        except InvalidTag:
            raise ObjectCorrupt(name=CONFIG_NAME, target=target,
                                reason="a key slot matches the key but does not decrypt (altered)") from None
    raise RepositoryKeyRejected(kind=key.description, target=target)

