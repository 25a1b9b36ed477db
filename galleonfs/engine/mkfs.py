"""mkfs: make an empty volume in a directory (``Engine.create``).

A new volume is its directory (0700), an empty journal and data directory, and a metadata
store holding the super record and the root directory (inode 1), committed. An encrypted
volume also gets its ``KEY`` file (a new family, or its origin's for a clone).

What it must not do: touch a directory that holds anything (a typo must not overwrite a
volume), or leave an open metadata store behind when it fails.
"""

from __future__ import annotations

import os
import stat
import uuid

from .. import limits
from ..crypto import volume_key
from ..crypto.codec import COMPRESSIONS
from ..crypto.keys import KeyManager
from ..errors import InvalidArgument
from ..meta import schema
from ..meta.schema import Db, Inode
from ..meta.sealing import MetaSealing
from ..meta.store import MetaStore
from ..storage import Storage
from .superblock import SuperBlock

JOURNAL_DIR = "journal"
DATA_DIR = "data"
META_DIR = "meta.lmdb"


def validate_geometry(size: int, block_size: int) -> None:
    if not limits.block_size_min_bytes <= block_size <= limits.block_size_max_bytes or (
        block_size & (block_size - 1)
    ):
        raise InvalidArgument(
            f"block size {block_size} is not a power of two between "
            f"{limits.block_size_min_bytes // 1024}K and {limits.block_size_max_bytes // 1024}K"
        )
    if not limits.volume_size_min_bytes <= size <= limits.volume_size_max_bytes:
        raise InvalidArgument(
            f"volume size {size} is out of range: use at least 1M and at most 1P"
        )


def create(volume_dir: str, *, size: int, block_size: int, name: str, uid: int | None,
           gid: int | None, family_key: bytes | None, keys: KeyManager | None,
           compression: str, dedup: bool, key_source_dir: str | None) -> str:
    """Make an empty volume in ``volume_dir`` (created if missing, else must be empty).

    ``keys`` makes it encrypted (a new family key, wrapped by that manager), or with
    ``key_source_dir`` a member of that volume's family (a clone). Returns its id.
    """
    validate_geometry(size, block_size)
    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"unknown compression {compression!r}; use none, lz4 or zstd")
    _make_dirs(volume_dir)
    volume_id = str(uuid.uuid4())
    meta = MetaStore(volume_dir)
    try:
        sb = SuperBlock.new(size=size, block_size=block_size, volume_id=volume_id, name=name,
                            compression=compression, dedup=dedup,
                            family_key=_family_key(meta, volume_dir, keys, family_key, key_source_dir))
        sb.write_all(meta)
        meta.generation = sb.generation
        meta.put(Db.INODES, schema.ino_key(1), _root(uid, gid, sb.created_ns).encode())
        meta.take_changes()
    except BaseException:
        # Close the store before the error travels on: an LMDB environment with an open
        # write transaction, left to the garbage collector, crashed galleond (SIGSEGV at
        # shutdown) after a key command refused to wrap a new volume's key.
        meta.close(commit=False)
        raise
    meta.close(commit=True)
    Storage().sync_dir(volume_dir)
    return volume_id


def _make_dirs(volume_dir: str) -> None:
    if os.path.exists(volume_dir):
        if not os.path.isdir(volume_dir):
            raise InvalidArgument(f"{volume_dir} exists and is not a directory")
        if os.listdir(volume_dir):
            raise InvalidArgument(
                f"{volume_dir} is not empty; mkfs needs a new or empty directory"
            )
    # 0700: file names, sizes and (unencrypted) contents are the volume owner's business,
    # not every local user's; an empty directory given to mkfs is narrowed too.
    os.makedirs(volume_dir, mode=0o700, exist_ok=True)
    os.chmod(volume_dir, 0o700)
    os.makedirs(os.path.join(volume_dir, JOURNAL_DIR), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(volume_dir, DATA_DIR), mode=0o700, exist_ok=True)


def _family_key(meta: MetaStore, volume_dir: str, keys: KeyManager | None,
                family_key: bytes | None, key_source_dir: str | None) -> bytes:
    """The block-id key of the volume family, for the super record: a clone shares its
    origin's. An encrypted family keeps it wrapped in its KEY file instead (b"" here), and
    the store seals from then on."""
    if key_source_dir is not None:
        volume_key.copy_for_clone(key_source_dir, volume_dir)
        meta.set_sealing(MetaSealing(volume_key.load(volume_dir, keys).crypto()))
        return b""
    if keys is not None:
        meta.set_sealing(MetaSealing(volume_key.create(volume_dir, keys).crypto()))
        return b""
    return family_key or os.urandom(32)


def _root(uid: int | None, gid: int | None, now: int) -> Inode:
    return Inode(
        ino=1, mode=stat.S_IFDIR | 0o755, uid=os.getuid() if uid is None else uid,
        gid=os.getgid() if gid is None else gid, nlink=2, size=0, alloc=0, atime_ns=now,
        mtime_ns=now, ctime_ns=now, btime_ns=now, rdev=0, aux=3, parent=1,
    )

