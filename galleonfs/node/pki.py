"""``galleond cluster-ca init DIR`` and ``galleond cluster-cert issue``: the peer channel's
certificates, made with ``cluster.certs`` (ECDSA P-256, keys 0600).

    galleond cluster-ca init /etc/galleonfs/ca
    galleond cluster-cert issue --ca /etc/galleonfs/ca --node n1 --host 10.0.0.1 --out /etc/galleonfs/peer

These are galleond's (run as root on a node, where the CA key is kept apart), not
galleonctl's: galleonctl is a client of a running galleond and never holds a key. An
operator with a PKI of their own can skip both: any CA works, as long as each node's
certificate names the node in a DNS SAN (or its CN) and allows client and server use.

What it must not do: overwrite a key, or print one.
"""

from __future__ import annotations

import argparse
import sys

from ..cluster import certs
from ..errors import GalleonError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galleond", description="Certificates of the cluster's peer channel (mTLS).")
    verbs = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")
    ca = verbs.add_parser("cluster-ca", help="the cluster's CA").add_subparsers(dest="verb", required=True)
    init = ca.add_parser("init", help="create ca.crt and ca.key (0600) in DIR")
    init.add_argument("dir", metavar="DIR")
    cert = verbs.add_parser("cluster-cert", help="a node's certificate").add_subparsers(dest="verb", required=True)
    issue = cert.add_parser("issue", help="issue node.crt, node.key (0600) and ca.crt into --out")
    issue.add_argument("--ca", required=True, metavar="DIR", help="the directory cluster-ca init made")
    issue.add_argument("--node", required=True, help="the node's name (its --node-name)")
    issue.add_argument("--host", action="append", default=[], metavar="HOST",
                       help="an IP address or host name the node is dialled at (repeat for several)")
    issue.add_argument("--out", required=True, metavar="DIR", help="where the node's files go")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.noun == "cluster-ca":
            path = certs.init_ca(args.dir)
            print(f"cluster CA created: {path} (its key, {certs.CA_KEY}, is 0600: keep it off the nodes "
                  f"if you can)")
        else:
            path = certs.issue(args.ca, args.node, args.out, hosts=tuple(args.host))
            print(f"certificate for node {args.node} issued: {path}; start it with --peer-cert {path} "
                  f"--peer-key {path.parent / certs.NODE_KEY} --peer-ca {path.parent / certs.CA_CERT}")
    except GalleonError as exc:
        print(f"galleond: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
