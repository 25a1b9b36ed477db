"""``galleonctl qos ...``: QoS policies and their assignment to volumes.

Kept out of ``galleonctl.py`` (which only calls ``add_commands``) so the noun reads in one
place. Numbers are checked by the daemon, so the API and the CLI refuse the same things
with the same sentence.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from . import output

EXAMPLES = """\
examples:
  galleonctl qos create gold --iops-limit 500 --throughput-limit-mbps 20 --iops-guarantee 200
  galleonctl qos create bursty --iops-limit 100 --burst-duration 30 --burst-iops-multiplier 3
  galleonctl qos assign gold data          applies at once to a mounted volume (no remount)
  galleonctl qos update gold --iops-limit 800   new numbers for every volume that has it, at once
  galleonctl qos unassign data
  galleonctl qos list -o json
  galleonctl qos delete gold               refused while a volume has it

Limits and guarantees: IOPS count FUSE read and write requests; MB/s are 10^6 bytes read
plus written. A throttled request waits, it never fails. Guarantees hold when the node's
budget is configured (qos_node_iops, qos_node_throughput_mbps in galleond.toml).
"""


def _client(args: argparse.Namespace) -> Any:
    from .access import client

    return client(args)


def _emit(args: argparse.Namespace, data: Any) -> int:
    print(qos_rows(data if isinstance(data, list) else [data]) if args.output == "table"
          else output.dump(data, args.output))
    return 0


def _rate(value: float) -> str:
    return f"{value:g}" if value else "-"


def qos_rows(policies: list[dict[str, Any]]) -> str:
    if not policies:
        return "no QoS policies"
    rows = []
    for p in policies:
        b = p["burstable"]
        burst = (f"{b['duration_seconds']:g}s x{b['iops_multiplier']:g} IOPS x{b['throughput_multiplier']:g} MB/s"
                 if b["enabled"] else "-")
        rows.append([p["name"], _rate(p["limits"]["iops"]), _rate(p["limits"]["throughput_mbps"]),
                     _rate(p["guarantees"]["iops"]), _rate(p["guarantees"]["throughput_mbps"]), burst,
                     ",".join(p["volumes"]) or "-"])
    return output.table(rows, ["NAME", "IOPS LIMIT", "MB/S LIMIT", "IOPS FLOOR", "MB/S FLOOR", "BURST", "VOLUMES"])


def _apply(policy: Any, args: argparse.Namespace) -> Any:
    """Set the numbers given on the command line; leave the others as they are."""
    for flag, (part, key) in _FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(getattr(policy, part), key, value)
    b = policy.burstable
    if any(getattr(args, f) is not None for f in _FIELDS if f.startswith("burst")):
        b.enabled = True
    if getattr(args, "no_burst", False):
        b.enabled, b.duration_seconds, b.iops_multiplier, b.throughput_multiplier = False, 0, 1, 1
    b.iops_multiplier = b.iops_multiplier or 1
    b.throughput_multiplier = b.throughput_multiplier or 1
    return policy


_FIELDS = {"iops_limit": ("limits", "iops"), "throughput_limit_mbps": ("limits", "throughput_mbps"),
           "iops_guarantee": ("guarantees", "iops"),
           "throughput_guarantee_mbps": ("guarantees", "throughput_mbps"),
           "burst_duration": ("burstable", "duration_seconds"),
           "burst_iops_multiplier": ("burstable", "iops_multiplier"),
           "burst_throughput_multiplier": ("burstable", "throughput_multiplier")}


def qos_create(args: argparse.Namespace) -> int:
    from ..v1 import qos_pb2

    with _client(args) as c:
        created = c.create_qos_policy(_apply(qos_pb2.QosPolicy(name=args.name), args))
    print(f"QoS policy {created.name} created")
    return 0


def qos_update(args: argparse.Namespace) -> int:
    with _client(args) as c:
        policy = _apply(c.get_qos_policy(args.name), args)
        updated = c.update_qos_policy(policy)
    users = f"; applied to {', '.join(updated.volumes)}" if updated.volumes else ""
    print(f"QoS policy {updated.name} updated{users}")
    return 0


def qos_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, [output.to_dict(p) for p in c.list_qos_policies()])


def qos_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return _emit(args, output.to_dict(c.get_qos_policy(args.name)))


def qos_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_qos_policy(args.name)
    print(f"QoS policy {args.name} deleted")
    return 0


def qos_assign(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.assign_qos_policy(args.policy, args.volume)
    instead = f" (instead of {reply.previous_policy})" if reply.previous_policy else ""
    print(f"volume {reply.volume} now has QoS policy {args.policy}{instead}")
    return 0


def qos_unassign(args: argparse.Namespace) -> int:
    with _client(args) as c:
        reply = c.assign_qos_policy("", args.volume)
    if reply.previous_policy:
        print(f"volume {reply.volume} no longer has QoS policy {reply.previous_policy}")
    else:
        print(f"volume {reply.volume} had no QoS policy")
    return 0


def _numbers(p: argparse.ArgumentParser) -> None:
    """NAME and the policy's numbers, for create and update."""
    p.add_argument("name")
    p.add_argument("--iops-limit", type=float, metavar="N", help="at most N read/write requests per second")
    p.add_argument("--throughput-limit-mbps", type=float, metavar="M", help="at most M MB/s read plus written")
    p.add_argument("--iops-guarantee", type=float, metavar="N", help="at least N IOPS when volumes compete")
    p.add_argument("--throughput-guarantee-mbps", type=float, metavar="M",
                   help="at least M MB/s when volumes compete")
    p.add_argument("--burst-duration", type=float, metavar="S",
                   help="allow up to S seconds above the limits (credit refills while under them)")
    p.add_argument("--burst-iops-multiplier", type=float, metavar="X", help="x the IOPS limit while bursting")
    p.add_argument("--burst-throughput-multiplier", type=float, metavar="X",
                   help="x the throughput limit while bursting")


def add_commands(nouns: Any, read_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``qos`` and its verbs; ``read_command`` is galleonctl's helper that adds ``-o``."""
    qos = nouns.add_parser("qos", help="IOPS and throughput limits, guarantees and bursts",
                           description="QoS policies: limits, guarantees and bursts for volumes.",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = qos.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("create", help="create a QoS policy", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Create a QoS policy. Every number is optional; 0 means none.")
    _numbers(p)
    p.set_defaults(func=qos_create)
    p = verbs.add_parser("update", help="change a QoS policy's numbers (applies at once)", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Change the numbers given; the others stay. Mounted volumes "
                                     "that have the policy enforce the new numbers at once.")
    _numbers(p)
    p.add_argument("--no-burst", action="store_true", help="turn bursting off")
    p.set_defaults(func=qos_update)
    read_command(verbs, "list", "list QoS policies and the volumes that have them", qos_list)
    read_command(verbs, "get", "show one QoS policy", qos_get).add_argument("name")
    p = verbs.add_parser("delete", help="delete a QoS policy (refused while assigned)",
                         description="Delete a QoS policy. Refused while a volume has it.")
    p.add_argument("name")
    p.set_defaults(func=qos_delete)
    p = verbs.add_parser("assign", help="give a volume a QoS policy (applies at once, mounted or not)",
                         description="Give VOLUME the policy POLICY, replacing any it had. A mounted "
                                     "volume enforces it at once, without a remount.")
    p.add_argument("policy", metavar="POLICY")
    p.add_argument("volume", metavar="VOLUME")
    p.set_defaults(func=qos_assign)
    p = verbs.add_parser("unassign", help="take a volume's QoS policy away",
                         description="Take VOLUME's QoS policy away: no limits from then on.")
    p.add_argument("volume", metavar="VOLUME")
    p.set_defaults(func=qos_unassign)
