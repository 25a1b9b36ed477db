"""``--since``: a point in time given as a duration back from now or as a UTC timestamp.

    --since 90s | 15m | 2h | 7d                 that long ago
    --since 2026-11-30T20:00:00Z                an ISO 8601 time (no zone means UTC)
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from ..errors import InvalidArgument

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now_ns: int | None = None) -> int:
    """The time ``text`` names, in nanoseconds since the epoch."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now_ns - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 10**9)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"invalid --since {text!r}: give a duration (90s, 15m, 2h, 7d) "
                              f"or a time (2026-11-30T20:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000
