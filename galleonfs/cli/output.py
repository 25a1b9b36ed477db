"""Printing API objects as a table (people), JSON or YAML (programs) for ``-o``.

JSON and YAML carry every field of the API message, with the proto field names and enum
names, defaults included; tables pick the columns a person scans for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ..units import format_size

FORMATS = ("table", "json", "yaml")


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False).rstrip()


def emit(args: Any, data: Any, human: Callable[[Any], str]) -> int:
    """Print ``data`` as ``-o`` asks: ``human(data)`` for a table, else JSON or YAML."""
    fmt = getattr(args, "output", "table")
    print(human(data) if fmt == "table" else dump(data, fmt))
    return 0


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def age(seconds_text: str) -> str:
    """'2026-11-22T06:00:00Z' -> '5m' (like kubectl's AGE)."""
    if not seconds_text:
        return "-"
    then = time.mktime(time.strptime(seconds_text[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    delta = max(0, int(time.time() - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


ACCESS_SHORT = {"READ_WRITE_ONCE": "RWO", "READ_ONLY_MANY": "ROX", "READ_WRITE_MANY": "RWX"}


def volume_rows(volumes: list[dict[str, Any]]) -> str:
    rows = []
    for v in volumes:
        mounts = ",".join(m["path"] + (" (ro)" if m.get("read_only") else "") for m in v["mount_points"]) or "-"
        rows.append([v["name"], v["state"].lower(), format_size(int(v["size_bytes"])), v["storage_class"],
                     ",".join(ACCESS_SHORT.get(a, a) for a in v["access_modes"]), v["type"].lower(),
                     mounts, age(v.get("created_at", ""))])
    return table(rows, ["NAME", "STATE", "SIZE", "CLASS", "ACCESS", "TYPE", "MOUNTS", "AGE"])


def fields(pairs: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in pairs)


def volume_detail(v: dict[str, Any]) -> str:
    pairs = [("name", v["name"]), ("id", v["id"]), ("state", v["state"].lower()),
             ("size", f"{format_size(int(v['size_bytes']))} ({v['size_bytes']} bytes)"),
             ("block size", format_size(int(v["block_size_bytes"]))), ("storage class", v["storage_class"]),
             ("access modes", ", ".join(v["access_modes"])), ("type", v["type"].lower()),
             ("labels", ", ".join(f"{k}={val}" for k, val in sorted(v["labels"].items())) or "-"),
             ("created", v.get("created_at", "-")), ("updated", v.get("updated_at", "-"))]
    for m in v["mount_points"]:
        pairs.append(("mounted on", m["path"] + (" (read-only)" if m.get("read_only") else "")))
    if v.get("message"):
        pairs.append(("message", v["message"]))
    if v.get("tenant"):
        pairs.append(("tenant", v["tenant"]))
    return fields(pairs)


def stats_detail(s: dict[str, Any]) -> str:
    size, used = int(s["size_bytes"]), int(s["used_bytes"])
    pct = f"{100 * used / size:.1f}%" if size else "-"
    pairs = [("name", s["name"]), ("size", format_size(size)), ("used", f"{format_size(used)} ({pct})"),
             ("free", format_size(int(s["free_bytes"]))),
             ("inodes", f"{s['inodes_used']} of {s['inodes_total']}"),
             ("on disk", format_size(int(s["disk_bytes"]))),
             ("mounted", f"yes (worker pid {s['worker_pid']})" if s["mounted"] else "no")]
    r = s.get("rates") or {}
    if s["mounted"] and float(r.get("window_seconds", 0)):
        pairs += [(f"last {float(r['window_seconds']):.0f} s",
                   f"{float(r['requests_per_second']):.1f} requests/s"),
                  ("read", f"{float(r['read_ops_per_second']):.1f} IOPS, {mb_per_s(r['read_bytes_per_second'])}"),
                  ("write", f"{float(r['write_ops_per_second']):.1f} IOPS, {mb_per_s(r['write_bytes_per_second'])}"),
                  ("latency", f"p50 {ms(r['latency_p50_seconds'])}, p99 {ms(r['latency_p99_seconds'])}")]
    if s.get("failsafe"):
        pairs.append(("failsafe", s.get("failsafe_reason") or "yes"))
    for key, value in sorted(s.get("counters", {}).items()):
        pairs.append((key.replace("_", " "), value))
    return fields(pairs)


def mb_per_s(bytes_per_s: Any) -> str:
    return f"{float(bytes_per_s) / 1e6:.1f} MB/s"


def ms(seconds: Any) -> str:
    return f"{float(seconds) * 1e3:.2f} ms"


def class_rows(classes: list[dict[str, Any]]) -> str:
    rows = [[c["name"], "yes" if c["is_default"] else "", c["reclaim_policy"].lower(),
             c["volume_binding_mode"].lower(), ",".join(f"{k}={v}" for k, v in sorted(c["parameters"].items())),
             "built-in" if c["builtin"] else ""] for c in classes]
    return table(rows, ["NAME", "DEFAULT", "RECLAIM", "BINDING", "PARAMETERS", ""])


def node_detail(n: dict[str, Any]) -> str:
    states = ", ".join(f"{k} {v}" for k, v in sorted(n["volumes_by_state"].items()) if int(v)) or "none"
    pairs = [("node", n["node_id"]), ("host", n["hostname"]), ("version", n["version"]),
             ("ready", "yes" if n["ready"] else "no"), ("data dir", n["data_dir"]),
             ("listening on", ", ".join(n["listen"])), ("started", n.get("started_at", "-")),
             ("disk", f"{format_size(int(n['available_bytes']))} free of {format_size(int(n['capacity_bytes']))}"),
             ("provisioned", format_size(int(n["provisioned_bytes"]))), ("volumes", states),
             ("mount workers", f"{n['mount_workers_up']} up of {n['mount_workers_expected']}"),
             ("metrics", n.get("metrics_url") or "off")]
    for problem in n["problems"]:
        pairs.append(("problem", problem))
    return fields(pairs)


def snapshot_rows(snaps: list[dict[str, Any]]) -> str:
    rows = [[f"{s['volume']}@{s['name']}", s["generation"], format_size(int(s["logical_bytes"])),
             format_size(int(s["freeable_bytes"])), ",".join(s["clones"]) or "-", age(s.get("created_at", ""))]
            for s in snaps]
    return table(rows, ["SNAPSHOT", "GENERATION", "LOGICAL", "FREEABLE", "CLONES", "AGE"])


def snapshot_detail(s: dict[str, Any]) -> str:
    return fields([("snapshot", f"{s['volume']}@{s['name']}"), ("id", s["id"]),
                   ("generation", s["generation"]), ("created", s.get("created_at", "-")),
                   ("logical size", format_size(int(s["logical_bytes"]))),
                   ("deleting frees", format_size(int(s["freeable_bytes"]))), ("inodes", s["inodes"]),
                   ("clones", ", ".join(s["clones"]) or "-")])


def diff_lines(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no changes"
    return "\n".join(f"{e['kind']}\t{e['path']}" + (f" -> {e['new_path']}" if e.get("new_path") else "")
                     for e in entries)


def policy_rows(policies: list[dict[str, Any]]) -> str:
    rows = [[p["name"], p["schedule"], p["retention"],
             ",".join(f"{k}={v}" for k, v in sorted(p["volume_selector"].items())) or "(all)",
             p.get("last_run", "-") or "-", p.get("next_run", "-"), p.get("last_error", "") or ""]
            for p in policies]
    return table(rows, ["NAME", "SCHEDULE", "KEEP", "SELECTOR", "LAST RUN", "NEXT RUN", "LAST ERROR"])


def audit_peer(p: dict[str, Any]) -> str:
    """'uid 0 gid 0 pid 4242', 'ipv4:10.0.0.5:51234', or '?' when it could not be told; then
    the principal when it is not the uid itself ('as token ci', 'as cert alice') and its
    tenant. Roles are in ``-o json``."""
    who = _peer_address(p)
    if p.get("principal") and p.get("principal") != f"uid {p.get('uid')}":
        who += f" as {p['principal']}"
    if p.get("tenant"):
        who += f" tenant {p['tenant']}"
    return who


def _peer_address(p: dict[str, Any]) -> str:
    if p.get("transport") == "tcp":
        return str(p.get("address", "?"))
    if not p.get("credentials_known"):
        return "?"
    who = f"uid {p['uid']} gid {p['gid']}"
    return who + (f" pid {p['pid']}" if int(p.get("pid", 0)) else "")


def audit_rows(records: list[dict[str, Any]]) -> str:
    rows = [[r["seq"], r.get("time", "-"), audit_peer(r.get("peer", {})), r["method"].removeprefix("galleonfs.v1."),
             r["volume"] or "-", r["code"] + (f": {r['message']}" if r["message"] else "")]
            for r in records]
    return table(rows, ["SEQ", "TIME", "WHO", "METHOD", "VOLUME", "RESULT"])
