"""The plain data of cluster mode: node names, node states, one node as placement sees it.

What it must not do: talk to etcd or import anything above the floor.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .. import names
from . import limits

_DNS_RULE = ("use at most 63 lowercase letters, digits and '-', starting and ending with a "
             "letter or digit (a DNS label)")
_DNS = re.compile(r"\A[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
NODE = names.Kind("node", _DNS, limits.node_name_chars_max, _DNS_RULE)
ZONE = names.Kind("zone", _DNS, limits.zone_name_chars_max, _DNS_RULE)
RACK = names.Kind("rack", _DNS, limits.zone_name_chars_max, _DNS_RULE)


class NodeState(enum.Enum):
    READY = "ready"            # alive, takes new replicas
    CORDONED = "cordoned"      # alive, takes no new replicas; keeps what it has
    DRAINING = "draining"      # cordoned, and its replicas are to move elsewhere
    DOWN = "down"              # its alive key's lease expired (or it never registered one)


@dataclass(frozen=True)
class Node:
    """One node as the cluster sees it (etcd's ``nodes/<name>/info`` plus liveness)."""

    name: str
    zone: str
    rack: str
    address: str               # the peer address (host:port) other nodes dial
    capacity_bytes: int        # of the file system holding its data directory
    free_bytes: int            # capacity left for new volumes (available, less what is promised)
    state: NodeState

    @property
    def eligible(self) -> bool:
        """May take a new replica."""
        return self.state is NodeState.READY
