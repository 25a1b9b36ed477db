"""The etcd key schema of cluster mode, at one place. Every key is built here, from
validated names only (node names and volume names are DNS labels): no request string
becomes a key without passing ``names.check``.

    /galleonfs/v1/nodes/<node>/info          {zone, rack, address, capacity_bytes, free_bytes, ...}
                                             written at every start; no lease (a node that is
                                             down is still a member, shown DOWN)
    /galleonfs/v1/nodes/<node>/alive         {since_ns, pid} on the node's lease (TTL 6 s)
    /galleonfs/v1/nodes/<node>/schedule      {state: cordoned|draining, by, at_ns}; absent: ready
    /galleonfs/v1/volumes/<volume>/placement {id, size_bytes, replicas, nodes, primary, ...}
    /galleonfs/v1/volumes/<volume>/epoch     {epoch, node}: bumped by every primary change, never reset
    /galleonfs/v1/volumes/<volume>/primary   {node, epoch} on the primary's lease (TTL 10 s)

The ``v1`` is the schema's version: a change that old nodes cannot read gets ``v2``.
"""

from __future__ import annotations

from .. import names
from .model import NODE

ROOT = "/galleonfs/v1/"
NODES = ROOT + "nodes/"
VOLUMES = ROOT + "volumes/"


def node(name: str, leaf: str) -> str:
    assert leaf in ("info", "alive", "schedule"), leaf
    return f"{NODES}{names.check(name, NODE)}/{leaf}"


def volume(name: str, leaf: str) -> str:
    assert leaf in ("placement", "epoch", "primary"), leaf
    return f"{VOLUMES}{names.check(name, names.VOLUME)}/{leaf}"


def split(key: str, prefix: str) -> tuple[str, str]:
    """``prefix<name>/<leaf>`` -> (name, leaf); ("", "") for a key of another shape."""
    rest = key[len(prefix):] if key.startswith(prefix) else ""
    name, _, leaf = rest.partition("/")
    return (name, leaf) if name and leaf and "/" not in leaf else ("", "")
