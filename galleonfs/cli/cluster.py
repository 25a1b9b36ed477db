"""``galleonctl cluster status`` and ``galleonctl node cordon|uncordon|drain NODE``.

Kept out of ``galleonctl.py`` (which only calls ``add_commands`` and ``add_node_verbs``)
so cluster mode reads in one place. Also what ``volume create --replicas`` prints about
the placement it recorded: that only the primary holds data until replication exists.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..units import format_size
from . import output

ReadCommand = Callable[..., argparse.ArgumentParser]


def _client(args: argparse.Namespace) -> Any:
    from .access import client

    return client(args)


def status_text(s: dict[str, Any]) -> str:
    nodes = s.get("nodes", [])
    counts = {state: sum(1 for n in nodes if n["state"] == state)
              for state in ("ready", "cordoned", "draining", "down")}
    summary = ", ".join(f"{c} {state}" for state, c in counts.items() if c) or "no nodes"
    head = (f"cluster at {s['etcd_url']} (asked node {s['this_node']}): {len(nodes)} nodes, {summary}"
            + (f"\nproblem: {s['problem']}" if s.get("problem") else ""))
    rows = [(n["name"], n["state"].upper(), n["zone"] or "-", n["rack"] or "-", n["address"],
             format_size(int(n["capacity_bytes"])), format_size(int(n["free_bytes"])),
             "ok" if n.get("peer_reachable") else "UNREACHABLE")
            for n in nodes]
    problems = [f"{n['name']}: {n['peer_problem']}" for n in nodes
                if not n.get("peer_reachable") and n.get("peer_problem")]
    table = output.table(rows, ("NODE", "STATE", "ZONE", "RACK", "ADDRESS", "CAPACITY", "FREE", "PEER"))
    return head + "\n" + table + "".join(f"\npeer {p}" for p in problems)


def cluster_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.cluster_status()), status_text)


def _schedule(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as c:
            n = getattr(c, f"{verb}_node")(args.node)
        what = {"cordon": "cordoned: it takes no new replicas and keeps what it has",
                "uncordon": "ready: it takes new replicas again",
                "drain": "draining: it takes no new replicas, and its replicas are marked to move; "
                         "moving them needs replication, which is not built yet, so nothing moves today"}
        print(f"node {n.name} is {what[verb]}")
        return 0
    return run


def placement_text(p: dict[str, Any]) -> str:
    nodes = p.get("nodes", [])
    pairs = [("volume", p["volume"]), ("id", p["volume_id"]), ("replicas asked", p["replicas"]),
             ("nodes", ", ".join(nodes)), ("primary", p["primary"]), ("epoch", p["epoch"]),
             ("lease", f"held by {p['lease_holder']} (mounted read-write there)" if p.get("lease_holder")
              else "none (not mounted read-write anywhere)")]
    if p.get("missing"):
        pairs.append(("missing", f"{p['missing']} (created degraded)"))
    if p.get("note"):
        pairs.append(("note", p["note"]))
    return output.fields(pairs)


def volume_placement(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.volume_placement(args.volume)), placement_text)


def placement_line(p: Any) -> str:
    """What ``volume create`` says after recording a placement, honestly."""
    others = list(p.nodes[1:])
    line = f"placed on {', '.join(p.nodes)} (primary {p.primary})"
    if p.missing:
        line += f"; DEGRADED: {p.missing} of {p.replicas} replicas have no node"
    if others:
        line += (f"; only {p.primary} holds the data: replication is not built yet, so "
                 f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} planned, not copies")
    return line


def add_commands(nouns: Any, read_command: ReadCommand) -> None:
    cluster = nouns.add_parser("cluster", help="the cluster this node belongs to (cluster mode)").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    read_command(cluster, "status", "show the cluster's nodes, zones, capacity and states", cluster_status)
    p = read_command(cluster, "placement", "show which nodes a volume is placed on, and its epoch",
                     volume_placement)
    p.add_argument("volume", metavar="VOLUME")


def add_node_verbs(node: Any) -> None:
    for verb, text in (("cordon", "stop placing new replicas on a node"),
                       ("uncordon", "let a cordoned or draining node take new replicas again"),
                       ("drain", "cordon a node and mark its replicas to move elsewhere")):
        p = node.add_parser(verb, help=text, description=text[0].upper() + text[1:] + " (cluster mode).")
        p.add_argument("node", metavar="NODE", help="the node's name (see `galleonctl cluster status`)")
        p.set_defaults(func=_schedule(verb))
