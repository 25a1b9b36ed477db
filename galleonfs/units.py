"""Parsing and printing sizes in human units ("512M", "10G", "64K").

Binary multiples, as `df -h` and `ls -lh` print them: K = 1024. Parsing accepts an
optional ``i`` and ``B`` ("10GiB", "10GB") and treats them all as binary multiples.
"""

from __future__ import annotations

import math
import re

from . import limits
from .errors import InvalidArgument
from .names import quote

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"\A\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*\Z", re.IGNORECASE)


def parse_size(text: str, *, what: str = "size") -> int:
    """Return the number of bytes ``text`` names, or raise ``InvalidArgument``."""
    # Bounded first: float() of 400 digits is infinity, and int() of it raised OverflowError.
    match = _SIZE_RE.match(text) if len(text) <= limits.size_text_max_chars else None
    if match is None:
        raise InvalidArgument(
            what=what, value=quote(text),
            expected="use a number with an optional unit K, M, G, T or P (for example 512M or 10G)")
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.upper()]
    if not math.isfinite(value) or value != int(value):
        raise InvalidArgument(what=what, value=quote(text), expected="it is not a whole number of bytes")
    return int(value)


def format_size(size: int) -> str:
    """``format_size(1536) == '1.5K'``; exact multiples print without a fraction."""
    for unit in ("P", "T", "G", "M", "K"):
        scale = _UNITS[unit]
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"
