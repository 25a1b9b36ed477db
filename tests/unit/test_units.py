from __future__ import annotations

import pytest

from galleonfs.errors import ExitCode, InvalidArgument
from galleonfs.units import format_size, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("512", 512), ("4K", 4096), ("64k", 65536), ("512M", 512 << 20), ("10G", 10 << 30),
    ("1T", 1 << 40), ("1.5G", 3 << 29), ("10GiB", 10 << 30), ("10GB", 10 << 30), (" 2M ", 2 << 20),
])
def test_parse_size_accepts_human_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1", "10X", "", "G", "1.2.3M", "ten", "0.5"])
def test_parse_size_rejects_garbage_with_a_clear_message(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_size(text, what="volume size")
    assert f"invalid volume size {text!r}" in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(("size", "text"), [(0, "0B"), (1023, "1023B"), (1536, "1.5K"),
                                            (10 << 30, "10G"), (3 << 29, "1.5G")])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
