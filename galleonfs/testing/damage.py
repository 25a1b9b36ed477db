"""Finding and damaging stored block frames of a closed volume, and pages of an LMDB file
(a volume's ``meta.lmdb``, the node catalog), the way a bad disk or an attacker with the
disk would (corruption and tamper tests)."""

from __future__ import annotations

import os
from pathlib import Path

from ..crypto.keys import KeyManager
from ..engine import segments
from ..engine.engine import Engine
from ..ids import BlockId
from ..meta import schema
from ..meta.schema import BlockLoc, Db


def locate(volume_dir: str | Path, path: str, blk: int, keys: KeyManager | None = None) -> BlockLoc:
    """Where block ``blk`` of the file at ``path`` (relative to the root) is stored."""
    engine = Engine.open(str(volume_dir), read_only=True, keys=keys)
    try:
        ino = 1
        for part in path.split("/"):
            raw = engine.meta.get(Db.DIRENTS, schema.dirent_key(ino, part.encode()))
            assert raw is not None, path
            ino, _ = schema.decode_dirent(raw)
        bid = engine.meta.get(Db.EXTENTS, schema.extent_key(ino, blk))
        assert bid is not None, f"block {blk} of {path} is a hole"
        loc = engine.block_info(BlockId(bid))
        assert loc is not None
        return loc
    finally:
        engine.close()


def segment_path(volume_dir: str | Path, loc: BlockLoc) -> Path:
    return Path(volume_dir) / "data" / segments.file_name(loc.seg)


def read_frame(volume_dir: str | Path, loc: BlockLoc) -> bytes:
    with open(segment_path(volume_dir, loc), "rb") as f:
        f.seek(loc.offset)
        return f.read(loc.frame_len)


def put_frame(volume_dir: str | Path, loc: BlockLoc, frame: bytes) -> None:
    with open(segment_path(volume_dir, loc), "r+b") as f:
        f.seek(loc.offset)
        f.write(frame)


def flip_byte(volume_dir: str | Path, loc: BlockLoc, at: int) -> None:
    assert at < loc.frame_len
    frame = bytearray(read_frame(volume_dir, loc))
    frame[at] ^= 0x5A
    put_frame(volume_dir, loc, bytes(frame))


LMDB_PAGE_BYTES = 4096
LMDB_META_PAGES = 2        # pages 0 and 1 point at the trees; everything else hangs off them


def truncate_lmdb(lmdb_dir: str | Path, keep_pages: int = LMDB_META_PAGES) -> None:
    """Cut ``data.mdb`` after its first pages: the trees they point at lie past the end of
    the file, so whoever maps and reads them dies of SIGBUS (a lost tail of the disk)."""
    path = Path(lmdb_dir) / "data.mdb"
    assert path.stat().st_size > keep_pages * LMDB_PAGE_BYTES, f"{path} is too small to cut"
    os.truncate(path, keep_pages * LMDB_PAGE_BYTES)


def scribble_lmdb(lmdb_dir: str | Path, first_page: int = LMDB_META_PAGES, byte: int = 0xA5) -> None:
    """Overwrite every page of ``data.mdb`` from ``first_page`` on with one byte: LMDB then
    finds pages of the wrong type (MDB_CORRUPTED), as after a bad disk's garbage."""
    path = Path(lmdb_dir) / "data.mdb"
    size = path.stat().st_size
    assert size > first_page * LMDB_PAGE_BYTES, f"{path} is too small to scribble on"
    with open(path, "r+b") as f:
        f.seek(first_page * LMDB_PAGE_BYTES)
        f.write(bytes([byte]) * (size - first_page * LMDB_PAGE_BYTES))
        f.flush()
        os.fsync(f.fileno())
