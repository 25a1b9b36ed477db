"""Bounding an audit record's fields, so that every record fits in one line of at most
``limits.audit_record_bytes_max`` bytes and no call ever goes unrecorded. No I/O here.

Each field gets a byte budget (``BUDGETS``; any field not named there, such as ones added
later, gets ``OTHER_BUDGET``) and is cut to fit it, recursively and with a visible marker:

* a string keeps its head and ends with ``…[+N bytes]``;
* a map keeps its first entries (in order) and gets one more, ``"…": "+N entries"``;
* a list keeps its first items and ends with ``"…[+N items]"``.

So a request with 5,000 labels is recorded with as many labels as fit and the count of the
others, never dropped. ``fit`` is the last resort for a record still too long (many large
unknown fields): it replaces the largest fields by a marker with their size and SHA-256,
until the record fits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .. import limits

KiB = 1024
# The request gets most of the room: it is what an auditor reads. Together with the other
# budgets a record stays below the maximum; ``fit`` handles the rest.
BUDGETS = {"request": 32 * KiB, "message": 2 * KiB, "peer": 4 * KiB, "volume": 256, "method": 256}
OTHER_BUDGET = 2 * KiB
MARK = "…"


def size_of(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def bound(value: Any, budget: int) -> Any:
    """``value`` cut, with markers, so that its JSON is at most about ``budget`` bytes."""
    if size_of(value) <= budget:
        return value
    if isinstance(value, str):
        return _cut_string(value, budget)
    if isinstance(value, dict):
        return _cut_map(value, budget)
    if isinstance(value, list):
        return _cut_list(value, budget)
    return f"{MARK}[a {type(value).__name__} of {size_of(value)} bytes]"


def _cut_string(text: str, budget: int) -> str:
    raw = text.encode()
    keep = max(0, budget - 32)        # room for the quotes, escapes and the marker
    head = raw[:keep].decode(errors="ignore")
    while size_of(head) > keep and head:
        head = head[:-max(1, len(head) // 8)]
    return f"{head}{MARK}[+{len(raw) - len(head.encode())} bytes]"


def _cut_map(value: dict[str, Any], budget: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    used = 2 + 48                      # braces, and the room of the marker entry
    items = list(value.items())
    for index, (key, item) in enumerate(items):
        key = key if len(key.encode()) <= 1 * KiB else _cut_string(key, 1 * KiB)
        item = bound(item, max(64, budget - used - size_of(key) - 2))
        cost = size_of(key) + size_of(item) + 2
        if used + cost > budget:
            out[MARK] = f"+{len(items) - index} entries"
            return out
        out[key] = item
        used += cost
    return out


def _cut_list(value: list[Any], budget: int) -> list[Any]:
    out: list[Any] = []
    used = 2 + 32
    for index, item in enumerate(value):
        item = bound(item, max(64, budget - used - 1))
        cost = size_of(item) + 1
        if used + cost > budget:
            out.append(f"{MARK}[+{len(value) - index} items]")
            return out
        out.append(item)
        used += cost
    return out


def bound_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Every field within its budget (see the module docstring)."""
    return {key: bound(value, BUDGETS.get(key, OTHER_BUDGET)) for key, value in fields.items()}


def fit(fields: dict[str, Any], overhead: int, limit: int = limits.audit_record_bytes_max) -> dict[str, Any]:
    """``fields`` whose record (``overhead`` bytes of chain fields and newline added) is at
    most ``limit`` bytes: the largest fields are replaced by a marker until it fits."""
    fields = dict(fields)
    while size_of(fields) + overhead > limit:
        name = max(fields, key=lambda k: size_of(fields[k]))
        raw = json.dumps(fields[name], sort_keys=True, ensure_ascii=False).encode()
        replacement = {MARK: f"not recorded: {len(raw)} bytes", "sha256": hashlib.sha256(raw).hexdigest()}
        if size_of(fields[name]) <= size_of(replacement):
            raise AssertionError(f"an audit record cannot be made to fit in {limit} bytes")
        fields[name] = replacement
    return fields
