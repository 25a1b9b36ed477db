"""The driver's pure parts, without a daemon: name mapping, capacity ranges, pagination
tokens, the per-volume guard."""

from __future__ import annotations

import pytest

from galleonfs.csi import spec
from galleonfs.csi.service import Backend
from galleonfs.csi.spec import CsiError
from galleonfs.csi.v1 import csi_pb2

MiB = 1 << 20


def test_names_map_stably_onto_galleonfs_names() -> None:
    assert spec.volume_name("pvc-0a1b") == "pvc-0a1b"
    odd = spec.volume_name("A" * 128)
    assert odd == spec.volume_name("A" * 128) != spec.volume_name("A" * 127)
    assert odd.startswith("csi-") and len(odd) == 44
    assert spec.snapshot_name("snap:1.2_x") == "snap:1.2_x"
    assert spec.snapshot_name("../x").startswith("csi-")
    assert spec.split_snapshot_id(spec.snapshot_id("0a1b", "s1")) == ("0a1b", "s1")
    for bad in ("", "nosep", "@s", "v@", "v@../x", "Bad Volume@s"):
        assert spec.split_snapshot_id(bad) is None, bad


def test_capacity_ranges() -> None:
    def cr(required: int, limit: int) -> csi_pb2.CapacityRange:
        return csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)
    assert spec.size_for(None) == spec.DEFAULT_SIZE_BYTES
    assert spec.size_for(cr(5 * MiB + 1, 0)) == 5 * MiB + 1          # exactly, no rounding
    assert spec.size_for(cr(0, 3 * MiB)) == 3 * MiB
    assert spec.size_for(cr(100, 0)) == MiB                           # GalleonFS's minimum
    assert spec.size_for(cr(2 * MiB, 0), at_least=8 * MiB) == 8 * MiB
    for bad, code in ((cr(-1, 0), "INVALID_ARGUMENT"), (cr(4 * MiB, 2 * MiB), "OUT_OF_RANGE"),
                      (cr(0, 1000), "OUT_OF_RANGE")):
        with pytest.raises(CsiError) as info:
            spec.size_for(bad)
        assert info.value.code == code
    assert spec.fits(8 * MiB, cr(8 * MiB, 8 * MiB)) and not spec.fits(8 * MiB, cr(9 * MiB, 0))


def test_pages_and_tokens() -> None:
    keys = [spec.list_key(t, f"id{t}") for t in range(1, 8)]
    items = list(range(1, 8))
    first, token = spec.page(items, keys, 3, "")
    assert first == [1, 2, 3] and token
    second, token2 = spec.page(items, keys, 3, token)
    assert second == [4, 5, 6]
    last, none = spec.page(items, keys, 3, token2)
    assert last == [7] and none == ""
    # The token's own entry deleted, one added at the end: nothing skipped or repeated.
    fewer = [k for k in keys if k != keys[2]] + [spec.list_key(99, "new")]
    rest, _ = spec.page([*items[:2], *items[3:], 99], fewer, 0, token)
    assert rest == [4, 5, 6, 7, 99]
    for bad in ("garbage!", "aW52YWxpZA==", "%%%"):
        with pytest.raises(CsiError) as info:
            spec.page(items, keys, 3, bad)
        assert info.value.code == "ABORTED"


def test_parameters() -> None:
    assert spec.parse_parameters({}) == spec.Parameters("", {})
    assert spec.parse_parameters({"storage_class": "encrypted"}).storage_class == "encrypted"
    made = spec.parse_parameters({"compression": "lz4", "csi.storage.k8s.io/pvc/name": "x"})
    assert made.class_parameters == {"compression": "lz4"} and made.storage_class.startswith("csi-")
    assert made == spec.parse_parameters({"compression": "lz4"})
    for bad in ({"colour": "red"}, {"storage_class": "x", "dedup": "on"}, {"storage_class": "Bad Name"}):
        with pytest.raises(CsiError) as info:
            spec.parse_parameters(bad)
        assert info.value.code == "INVALID_ARGUMENT"


def test_guard_refuses_a_second_call_on_the_same_key_only() -> None:
    backend = Backend("unix:/nonexistent/galleond.sock")
    try:
        with backend.guard("vol-a /p1"):
            with backend.guard("vol-a /p2"):
                pass
            with pytest.raises(CsiError) as info, backend.guard("vol-a /p1"):
                pass
            assert info.value.code == "ABORTED"
        with backend.guard("vol-a /p1"):          # released once the first call ended
            pass
    finally:
        backend.close()
