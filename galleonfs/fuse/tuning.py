"""The kernel-side settings of a mount, in one place, with a knob to turn each off.

The defaults are what GalleonFS runs with; docs/benchmarks.md measures each against its
alternative. The benchmarks (and only they) change them through the environment::

    GALLEONFS_TUNING="writeback=0,read_ahead_kb=128,max_ratio=1,flush=1"

Unknown keys or bad values are errors, so a typo cannot silently measure the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .. import limits
from ..errors import InvalidArgument


@dataclass(frozen=True)
class Tuning:
    writeback: bool = True                      # kernel writeback cache
    keep_cache: bool = True                     # page cache survives close/open
    flush: bool = False                         # answer FLUSH (a no-op) instead of ENOSYS
    attr_timeout_s: float = limits.attr_timeout_s
    entry_timeout_s: float = limits.entry_timeout_s
    negative_timeout_s: float = limits.negative_entry_timeout_s
    read_ahead_kb: int = 1024                   # 0 = leave the kernel's value
    max_ratio: int = 40                         # 0 = leave the kernel's value
    max_background: int = 64                    # 0 = leave the kernel's value

    @classmethod
    def from_environment(cls) -> Tuning:
        spec = os.environ.get("GALLEONFS_TUNING", "")
        values: dict[str, object] = {}
        known = {f.name: f.type for f in fields(cls)}
        aliases = {"attr_timeout": "attr_timeout_s", "entry_timeout": "entry_timeout_s",
                   "negative_timeout": "negative_timeout_s"}
        for item in filter(None, (i.strip() for i in spec.split(","))):
            key, sep, raw = item.partition("=")
            key = aliases.get(key, key)
            if not sep or key not in known:
                raise InvalidArgument(f"GALLEONFS_TUNING: unknown setting {item!r}; known: {', '.join(known)}")
            kind = known[key]
            try:
                values[key] = (raw not in ("0", "false", "off")) if kind == "bool" else (
                    float(raw) if kind == "float" else int(raw))
            except ValueError:
                raise InvalidArgument(f"GALLEONFS_TUNING: bad value for {key}: {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]
