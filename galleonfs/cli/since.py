"""``--since``: a point in time given as a duration back from now or as a UTC timestamp.

    --since 90s | 15m | 2h | 7d                 that long ago
    --since 2026-11-30T20:00:00Z                an ISO 8601 time (no zone means UTC)
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from ..errors import InvalidArgument
from ..names import quote

_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TIMESTAMP_NS_MAX = 253_402_300_799 * 10**9     # 9999-12-31T23:59:59Z


def parse_since(text: str, *, now_ns: int | None = None) -> int:
    """The time ``text`` names, in nanoseconds since the epoch."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    match = _DURATION.fullmatch(text.strip())
    if match:
        return _in_range(text, now_ns - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 10**9))
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(what="--since", value=quote(text),
                              expected="give a duration (90s, 15m, 2h, 7d) or a time "
                                       "(2026-11-30T20:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _in_range(text, int(when.timestamp()) * 10**9 + when.microsecond * 1000)


def _in_range(text: str, since_ns: int) -> int:
    """From the epoch (the daemon refuses earlier times: nothing is recorded before) to the
    end of year 9999 (a later time cannot even be encoded: protobuf's Timestamp ends there)."""
    if not 0 <= since_ns <= _TIMESTAMP_NS_MAX:
        raise InvalidArgument(what="--since", value=quote(text),
                              expected="give a time from 1970-01-01 to 9999-12-31")
    return since_ns
