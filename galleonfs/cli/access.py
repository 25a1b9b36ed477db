"""``galleonctl`` and galleond's access control: the connection options, ``token`` and ``tenant``.

Every command connects through ``client(args)``: the address, TLS files and token come
from flags or ``GALLEONFS_*`` variables (``add_connection_options``). The token is read
from ``--token-file`` (which wins) or ``GALLEONFS_TOKEN``; it is never taken on the command
line, where other local users could read it in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from .. import limits
from ..errors import InvalidArgument
from ..units import format_size, parse_size
from . import output

EXAMPLES = """\
examples:
  galleonctl token create ci --role operator --expires 30d      prints the secret once
  GALLEONFS_TOKEN=gfs1.ci.... galleonctl --address node1:7443 --tls-ca ca.crt volume list
  galleonctl token list
  galleonctl token revoke ci
  galleonctl tenant create acme --max-bytes 100G --max-volumes 20 --classes local,encrypted
  galleonctl token create acme-ci --role operator --tenant acme
"""

_DURATION = re.compile(r"(\d+)([smhd])\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+\Z")       # printable ASCII, no spaces: a header value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--tls-ca", default=env("GALLEONFS_TLS_CA"), metavar="FILE",
                        help="CA certificate that signed galleond's (env GALLEONFS_TLS_CA; default: "
                             "the system's CAs). TCP addresses other than loopback always use TLS")
    parser.add_argument("--tls-cert", default=env("GALLEONFS_TLS_CERT"), metavar="FILE",
                        help="client certificate, for galleond with tls_client_ca (env GALLEONFS_TLS_CERT)")
    parser.add_argument("--tls-key", default=env("GALLEONFS_TLS_KEY"), metavar="FILE",
                        help="its private key (env GALLEONFS_TLS_KEY)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="file holding a bearer token (else env GALLEONFS_TOKEN)")


def read_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file, "rb") as f:
                raw = f.read(limits.token_file_bytes_max + 1)
        except OSError as exc:
            raise InvalidArgument(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
        if len(raw) > limits.token_file_bytes_max:
            raise InvalidArgument(f"--token-file {args.token_file} is too big to hold a token")
        text, where = raw.decode(errors="replace").strip(), f"--token-file {args.token_file}"
    else:
        text, where = os.environ.get("GALLEONFS_TOKEN", "").strip(), "GALLEONFS_TOKEN"
    if not text:
        return None
    if not _TOKEN_CHARS.match(text):
        raise InvalidArgument(f"{where} does not hold a token (one line of printable characters)")
    return text


def client(args: argparse.Namespace) -> Any:
    from ..rpc.client import Client

    return Client(args.address, timeout_s=args.timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                  tls_key=args.tls_key, token=read_token(args))


def parse_duration_s(text: str) -> int:
    match = _DURATION.match(text.strip())
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)] if match else 0
    if not 0 < seconds <= limits.token_lifetime_max_s:
        raise InvalidArgument(what="--expires", value=repr(text[:64]),
                              expected=f"give a duration like 90m, 12h or 30d, at most "
                                       f"{limits.token_lifetime_max_s // 86_400}d")
    return seconds


# --- token ---------------------------------------------------------------------------------------
def token_create(args: argparse.Namespace) -> int:
    ttl = parse_duration_s(args.expires) if args.expires else 0
    with client(args) as c:
        reply = c.create_token(args.name, args.role, tenant=args.tenant or "", ttl_s=ttl)
    t = reply.token
    # The secret alone on stdout (scripts capture it); what it is, on stderr.
    print(reply.secret)
    expires = f", expires {output.to_dict(t)['expires_at']}" if t.HasField("expires_at") else ""
    print(f"token {t.name} created ({t.role}{', tenant ' + t.tenant if t.tenant else ''}{expires}); "
          f"this is the only time its secret is shown", file=sys.stderr)
    return 0


def token_rows(tokens: list[dict[str, Any]]) -> str:
    if not tokens:
        return "no tokens"
    rows = [[t["name"], t["role"], t["tenant"] or "-", t["state"], t.get("created_at", "-"),
             t.get("expires_at") or "never", t["created_by"] or "-"] for t in tokens]
    return output.table(rows, ["NAME", "ROLE", "TENANT", "STATE", "CREATED", "EXPIRES", "CREATED BY"])


def token_list(args: argparse.Namespace) -> int:
    with client(args) as c:
        tokens = [output.to_dict(t) for t in c.list_tokens()]
    print(token_rows(tokens) if args.output == "table" else output.dump(tokens, args.output))
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    with client(args) as c:
        c.revoke_token(args.name)
    print(f"token {args.name} revoked: galleond refuses it from now on")
    return 0


# --- tenant --------------------------------------------------------------------------------------
def tenant_rows(tenants: list[dict[str, Any]]) -> str:
    if not tenants:
        return "no tenants"

    def quota(used: str, limit: int, fmt: Callable[[int], str]) -> str:
        return f"{used}/{fmt(limit) if limit else 'unlimited'}"

    rows = [[t["name"], quota(str(t["volumes"]), int(t["max_volumes"]), str),
             quota(format_size(int(t["used_bytes"])), int(t["max_bytes"]), format_size),
             ",".join(t["storage_classes"]) or "all"] for t in tenants]
    return output.table(rows, ["NAME", "VOLUMES", "BYTES", "CLASSES"])


def tenant_create(args: argparse.Namespace) -> int:
    from ..v1 import tenant_pb2

    max_bytes = parse_size(args.max_bytes, what="--max-bytes") if args.max_bytes else 0
    if args.max_volumes is not None and args.max_volumes < 0:
        raise InvalidArgument("--max-volumes must be 0 (no limit) or more")
    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    with client(args) as c:
        t = c.create_tenant(tenant_pb2.Tenant(name=args.name, max_bytes=max_bytes,
                                              max_volumes=args.max_volumes or 0, storage_classes=classes))
    print(f"tenant {t.name} created (volumes: {t.max_volumes or 'unlimited'}, bytes: "
          f"{format_size(t.max_bytes) if t.max_bytes else 'unlimited'}, classes: "
          f"{','.join(t.storage_classes) or 'all'})")
    return 0


def tenant_list(args: argparse.Namespace) -> int:
    with client(args) as c:
        tenants = [output.to_dict(t) for t in c.list_tenants()]
    print(tenant_rows(tenants) if args.output == "table" else output.dump(tenants, args.output))
    return 0


def tenant_get(args: argparse.Namespace) -> int:
    with client(args) as c:
        t = output.to_dict(c.get_tenant(args.name))
    print(tenant_rows([t]) if args.output == "table" else output.dump(t, args.output))
    return 0


def tenant_delete(args: argparse.Namespace) -> int:
    with client(args) as c:
        c.delete_tenant(args.name)
    print(f"tenant {args.name} deleted")
    return 0


def add_commands(nouns: Any, read_command: Callable[..., argparse.ArgumentParser]) -> None:
    token = nouns.add_parser("token", help="bearer tokens for remote callers (admin)",
                             epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
                             ).add_subparsers(dest="verb", required=True, metavar="VERB")
    p = token.add_parser("create", help="create a token and print its secret (once)",
                         description="Create a bearer token. Its secret is printed once on stdout; "
                                     "galleond keeps only a hash of it.")
    p.add_argument("name", help="DNS label: lowercase letters, digits and '-'")
    p.add_argument("--role", required=True, choices=["admin", "operator", "viewer"])
    p.add_argument("--tenant", help="bind it to a tenant (operator or viewer only)")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 12h, 30d (default: never)")
    p.set_defaults(func=token_create)
    read_command(token, "list", "list tokens (never their secrets)", token_list)
    p = token.add_parser("revoke", help="refuse a token from now on", description="Revoke a token.")
    p.add_argument("name")
    p.set_defaults(func=token_revoke)

    tenant = nouns.add_parser("tenant", help="tenants: isolated volumes, storage classes and quota"
                              ).add_subparsers(dest="verb", required=True, metavar="VERB")
    p = tenant.add_parser("create", help="create a tenant",
                          description="Create a tenant. Tokens and certificates bound to it see only "
                                      "its volumes, use only its classes, within its quota.")
    p.add_argument("name")
    p.add_argument("--max-bytes", metavar="SIZE", help="sum of its volumes' sizes, e.g. 100G (default: no limit)")
    p.add_argument("--max-volumes", type=int, metavar="N", help="how many volumes (default: no limit)")
    p.add_argument("--classes", metavar="A,B", help="storage classes it may use (default: all)")
    p.set_defaults(func=tenant_create)
    read_command(tenant, "list", "list tenants with their usage", tenant_list)
    read_command(tenant, "get", "show one tenant", tenant_get).add_argument("name")
    p = tenant.add_parser("delete", help="delete a tenant (refused while it has volumes or tokens)",
                          description="Delete a tenant.")
    p.add_argument("name")
    p.set_defaults(func=tenant_delete)
