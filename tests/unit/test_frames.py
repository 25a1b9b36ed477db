"""Block frames: the byte layout drawn in galleonfs/engine/frames.py, and its verification."""

from __future__ import annotations

import os
import struct

import pytest

from galleonfs.engine import frames
from galleonfs.errors import Corrupt


def make_frame(data: bytes) -> tuple[bytes, bytes]:
    hasher = frames.BlockHasher(bytes(range(32)))
    bid = hasher(data)
    header, _ = frames.encode(bid, data, len(data))
    return bid, header + data


def test_header_layout_matches_the_docstring() -> None:
    data = b"payload!" * 100
    bid, frame = make_frame(data)
    assert len(frame) == frames.HEADER_SIZE + len(data)
    magic, version, flags, reserved, plen, rlen = struct.unpack_from("<4sBBHII", frame)
    assert (magic, version, flags, reserved, plen, rlen) == (b"GBF1", 1, 0, 0, len(data), len(data))
    assert frame[16:48] == bid
    assert frame[48:60] == bytes(12)
    (crc,) = struct.unpack_from("<I", frame, 60)
    assert crc == frames.crc32c(data, frames.crc32c(frame[:60]))


def test_verify_returns_the_payload() -> None:
    data = os.urandom(5000)
    bid, frame = make_frame(data)
    header, payload = frames.verify(frame, "test")
    assert bytes(payload) == data and header.block_id == bid and header.frame_len == len(frame)


@pytest.mark.parametrize("position", [0, 5, 9, 20, 50, 61, 64, 100, 5063])
def test_any_flipped_byte_is_caught(position: int) -> None:
    _, frame = make_frame(os.urandom(5000))
    broken = bytearray(frame)
    broken[position] ^= 0x40
    with pytest.raises(Corrupt):
        frames.verify(bytes(broken), "test")


def test_truncated_frame_is_caught() -> None:
    _, frame = make_frame(os.urandom(5000))
    with pytest.raises(Corrupt, match="header says"):
        frames.verify(frame[:-1], "test")
    with pytest.raises(Corrupt, match="truncated"):
        frames.verify(frame[:10], "test")


def test_block_ids_are_keyed() -> None:
    data = b"same content"
    assert frames.BlockHasher(b"a" * 32)(data) != frames.BlockHasher(b"b" * 32)(data)
    assert frames.BlockHasher(b"a" * 32)(data) == frames.BlockHasher(b"a" * 32)(data)
