"""Who may call galleond: roles, API tokens and tenants (the node catalog's side of it).

Roles, most powerful first: ``admin`` (everything), ``operator`` (volumes, snapshots,
mounts), ``viewer`` (reads only). ``rpc.auth`` maps each gRPC method to the least role it
needs; this module keeps the principals that are not unix users: tokens and tenants.

A token is ``gfs1.<name>.<secret>``: the name says which record to check, the secret is 32
random bytes (base64url) of which the catalog keeps only the SHA-256, compared with
``hmac.compare_digest``. The secret is shown once, by ``create``; nothing can show it
again. A revoked token keeps its record (so a caller is told it was revoked, not that it
never existed) until an admin reuses its name.

A tenant bounds what its principals (tokens or certificates bound to it) may do: they see
and touch only the tenant's volumes (``managers.tenancy``), use only its storage classes,
within its quota of volumes and bytes.

What it must not do: authenticate a gRPC call (``rpc.auth`` does, with what this returns),
or hold state outside the catalog. Runs on the daemon's trio thread, like every manager.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import limits, names
from ..errors import AlreadyExists, Busy, InvalidArgument, NotFound, Unauthenticated
from ..meta.catalog import Catalog
from .model import now_ns

TOKEN_PREFIX = "gfs1"
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}\Z")     # 32 bytes, base64url without padding


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise InvalidArgument(f"unknown role {names.quote(text)}: use admin, operator or viewer") from None


_RANKS = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 10**9))


@dataclass
class Token:
    name: str
    role: Role
    digest: str                      # SHA-256 (hex) of the secret part
    tenant: str = ""
    created_ns: int = field(default_factory=now_ns)
    expires_ns: int = 0              # 0: never
    revoked_ns: int = 0
    created_by: str = ""             # the principal that created it (for `token list`)

    def state(self, now_ns_: int) -> str:
        if self.revoked_ns:
            return "revoked"
        if self.expires_ns and self.expires_ns <= now_ns_:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = self.role.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Token:
        return cls(**{**data, "role": Role(data["role"])})


@dataclass
class Tenant:
    name: str
    max_bytes: int = 0               # 0: no limit on the sum of its volumes' sizes
    max_volumes: int = 0             # 0: no limit on how many volumes it has
    storage_classes: list[str] = field(default_factory=list)   # empty: every class
    created_ns: int = field(default_factory=now_ns)

    def allows_class(self, name: str) -> bool:
        return not self.storage_classes or name in self.storage_classes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tenant:
        return cls(**data)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccessManager:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # --- tokens ----------------------------------------------------------------------------------
    def create_token(self, name: str, role: Role, *, tenant: str = "", ttl_s: int = 0,
                     created_by: str = "") -> tuple[Token, str]:
        """A new token and its secret (the only time the secret exists outside the caller)."""
        names.check(name, names.TOKEN)
        if tenant:
            self.tenant(tenant)
            if role == Role.ADMIN:
                raise InvalidArgument("an admin token cannot be bound to a tenant (an admin may do "
                                      "everything); bind an operator or viewer token instead")
        if not 0 <= ttl_s <= limits.token_lifetime_max_s:
            raise InvalidArgument(f"a token's lifetime must be at most "
                                  f"{limits.token_lifetime_max_s // 86_400} days")
        old = self.catalog.token(name)
        if old is not None and not old.get("revoked_ns"):
            raise AlreadyExists(f"a token named {name!r} already exists; revoke it first to reuse the name")
        if old is None and len(self.catalog.tokens()) >= limits.tokens_max:
            raise Busy(f"this node holds {limits.tokens_max} tokens already; reuse the name of a "
                       f"revoked one")
        secret = base64.urlsafe_b64encode(secrets.token_bytes(limits.token_secret_bytes)).decode().rstrip("=")
        now = now_ns()
        token = Token(name=name, role=role, digest=_digest(secret), tenant=tenant, created_ns=now,
                      expires_ns=now + ttl_s * 10**9 if ttl_s else 0, created_by=created_by)
        self.catalog.put_token(token.to_json())
        return token, f"{TOKEN_PREFIX}.{name}.{secret}"

    def tokens(self) -> list[Token]:
        return sorted((Token.from_json(t) for t in self.catalog.tokens()), key=lambda t: t.name)

    def revoke_token(self, name: str) -> Token:
        data = self.catalog.token(name)
        if data is None:
            raise NotFound(f"token {names.quote(name)} does not exist (see `galleonctl token list`)")
        token = Token.from_json(data)
        if not token.revoked_ns:
            token.revoked_ns = now_ns()
            self.catalog.put_token(token.to_json())
        return token

    def verify(self, presented: str) -> Token:
        """The token whose secret ``presented`` is, if it is valid now; else ``Unauthenticated``."""
        prefix, _, rest = presented.strip().partition(".")
        name, _, secret = rest.partition(".")
        if prefix != TOKEN_PREFIX or not names.TOKEN.pattern.match(name) or not _SECRET.match(secret):
            raise Unauthenticated("the bearer token is malformed: a GalleonFS token looks like "
                                  "gfs1.NAME.SECRET, as `galleonctl token create` printed it")
        data = self.catalog.token(name)
        # Compared even when there is no record, so that the time taken does not tell.
        stored = data["digest"] if data is not None else "0" * 64
        if not hmac.compare_digest(stored, _digest(secret)) or data is None:
            raise Unauthenticated(f"token {name!r} is not valid (unknown, or replaced by a newer "
                                  f"token of that name); ask an admin for a new one")
        token = Token.from_json(data)
        state = token.state(now_ns())
        if state == "revoked":
            raise Unauthenticated(f"token {name!r} was revoked at {_when(token.revoked_ns)}; "
                                  f"ask an admin for a new one")
        if state == "expired":
            raise Unauthenticated(f"token {name!r} expired at {_when(token.expires_ns)}; "
                                  f"ask an admin for a new one (`galleonctl token create`)")
        return token

    # --- tenants ---------------------------------------------------------------------------------
    def create_tenant(self, tenant: Tenant, known_classes: list[str]) -> Tenant:
        names.check(tenant.name, names.TENANT)
        if tenant.max_bytes < 0 or tenant.max_volumes < 0:
            raise InvalidArgument("a tenant's quotas are 0 (no limit) or more")
        unknown = [c for c in tenant.storage_classes if c not in known_classes]
        if unknown:
            raise InvalidArgument(f"storage class {names.quote(unknown[0])} does not exist "
                                  f"(known: {', '.join(known_classes)})")
        if self.catalog.tenant(tenant.name) is not None:
            raise AlreadyExists(f"a tenant named {tenant.name!r} already exists")
        if len(self.catalog.tenants()) >= limits.tenants_max:
            raise Busy(f"this node has {limits.tenants_max} tenants already; delete unused ones first")
        tenant.storage_classes = sorted(set(tenant.storage_classes))
        tenant.created_ns = now_ns()
        self.catalog.put_tenant(tenant.to_json())
        return tenant

    def tenant(self, name: str) -> Tenant:
        data = self.catalog.tenant(name) if name else None
        if data is None:
            raise NotFound(f"tenant {names.quote(name)} does not exist (see `galleonctl tenant list`)")
        return Tenant.from_json(data)

    def tenants(self) -> list[Tenant]:
        return sorted((Tenant.from_json(t) for t in self.catalog.tenants()), key=lambda t: t.name)

    def usage(self, name: str) -> tuple[int, int]:
        """(volumes, bytes provisioned) of a tenant."""
        sizes = [int(v["size"]) for v in self.catalog.volumes() if v.get("tenant", "") == name]
        return len(sizes), sum(sizes)

    def delete_tenant(self, name: str) -> None:
        self.tenant(name)
        volumes = sorted(v["name"] for v in self.catalog.volumes() if v.get("tenant", "") == name)
        if volumes:
            raise Busy(f"tenant {name} still has volumes ({', '.join(volumes[:5])}"
                       f"{', ...' if len(volumes) > 5 else ''}); delete them first")
        tokens = sorted(t.name for t in self.tokens() if t.tenant == name and not t.revoked_ns)
        if tokens:
            raise Busy(f"tenant {name} still has tokens ({', '.join(tokens[:5])}"
                       f"{', ...' if len(tokens) > 5 else ''}); revoke them first")
        self.catalog.delete_tenant(name)
