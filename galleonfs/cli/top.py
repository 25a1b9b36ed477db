"""``galleonctl top``: every volume of the node, refreshed, like top(1).

One ListVolumes call and one GetStats per mounted volume per refresh (~1 ms each over the
unix socket; the worker answers from counts it keeps anyway). Unmounted volumes are listed
without rates or usage: their stats would open the volume from disk on every refresh.

``--once`` / ``--iterations N`` print N frames and exit (for scripts and tests); ``-o json``
prints one JSON array per frame. Ctrl-C ends an endless run with exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from ..errors import GalleonError, NotFound
from ..units import format_size
from . import output

_CLEAR = "\x1b[H\x1b[2J"


def frame(client: Any) -> list[dict[str, Any]]:
    """One row per volume: name, state, size, usage and rates (mounted volumes only)."""
    rows = []
    for v in client.list_volumes():
        volume = output.to_dict(v)
        row: dict[str, Any] = {"name": volume["name"], "state": volume["state"].lower(),
                               "size_bytes": int(volume["size_bytes"]), "used_bytes": None,
                               "rates": None}
        if volume["mount_points"]:
            try:
                stats = output.to_dict(client.volume_stats(volume["name"]))
            except NotFound:
                continue                           # deleted since the list
            except GalleonError as exc:            # e.g. its worker is being restarted
                row["error"] = str(exc)
            else:
                row["used_bytes"] = int(stats["used_bytes"])
                row["rates"] = {k: float(val) for k, val in stats["rates"].items()}
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no volumes"
    lines = []
    for r in rows:
        rates = r["rates"] or {}
        used = "-" if r["used_bytes"] is None else format_size(r["used_bytes"])
        if rates:
            lines.append([r["name"], r["state"], f"{rates['requests_per_second']:.0f}",
                          f"{rates['read_ops_per_second']:.0f}", f"{rates['write_ops_per_second']:.0f}",
                          f"{rates['read_bytes_per_second'] / 1e6:.1f}",
                          f"{rates['write_bytes_per_second'] / 1e6:.1f}",
                          f"{rates['latency_p50_seconds'] * 1e3:.2f}",
                          f"{rates['latency_p99_seconds'] * 1e3:.2f}", used, format_size(r["size_bytes"])])
        else:
            lines.append([r["name"], r["state"], *["-"] * 7, used, format_size(r["size_bytes"])])
    table = output.table(lines, ["VOLUME", "STATE", "REQ/S", "READ/S", "WRITE/S", "READ MB/S",
                                 "WRITE MB/S", "P50 MS", "P99 MS", "USED", "SIZE"])
    errors = [f"{r['name']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join([table, *errors])


def run(args: argparse.Namespace, client: Any) -> int:
    iterations = 1 if args.once else args.iterations
    live = args.output == "table" and sys.stdout.isatty()
    shown = 0
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            rows = frame(client)
            if args.output == "table":
                header = f"galleonfs top - {time.strftime('%H:%M:%S')} - rates over the last ~10 s"
                print((_CLEAR if live else "") + header + "\n" + render(rows), flush=True)
            else:
                print(output.dump(rows, args.output) if args.output != "json" else json.dumps(rows),
                      flush=True)
            shown += 1
            if iterations and shown >= iterations:
                break
            time.sleep(args.interval)
    return 0
