"""Authentication and authorization of every gRPC call, at one place: ``AuthInterceptor``.

Who is calling (the *principal*), by transport:

* unix socket (through ``gate.UnixGate``, which knows the kernel's credentials of each
  connection): uid 0 is ``admin``; a member of ``operator_group`` (its gid, or one of its
  supplementary groups, as they were at ``connect``) is ``operator``; anyone else is
  refused (PERMISSION_DENIED), however the socket's mode was set. A connection to the gRPC
  server's internal socket that the gate did not make is UNAUTHENTICATED.
* TLS: the client certificate, when ``tls_client_ca`` is configured (the handshake already
  refused a missing one, one from another CA, or an expired one). Its subject says who:
  ``CN`` is the principal's name, ``OU`` its role (admin, operator or viewer) and ``O``, if
  present, the tenant it is bound to (which must exist; an admin cannot be bound). Without
  ``tls_client_ca`` a bearer token is required.
* plaintext TCP (``insecure_listen``, loopback only): a bearer token is required.

A bearer token (metadata ``authorization: Bearer gfs1....``) is accepted on every
transport and, when present, decides: a bad, expired or revoked one is UNAUTHENTICATED,
never a fallback to the connection's identity (so root can act as a tenant's token).

What it may do: ``METHOD_RULES`` maps every full method name to the least role it needs
and whether a tenant-bound principal may call it (node-wide changes are not for tenants).
A method that is not in the table is refused to everyone (a test walks every method of
every service and checks it has an entry). The tenant of the principal is then set as the
request's scope (``managers.tenancy``) for the duration of the call.

Token checks read the catalog, so they run on the trio thread through the bridge (about
0.1 ms, only for calls that carry a token); unix-socket callers cost a dictionary lookup.

What it must not do: look at request fields (tenant filtering is the managers'), or let a
call through when it cannot tell who is calling.
"""

from __future__ import annotations

import contextvars
import functools
import grp
import ipaddress
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc

from ..errors import GalleonError, PermissionDenied, Unauthenticated
from ..managers import tenancy
from ..managers.access import Role, Token
from .gate import PeerCredentials, UnixGate
from .status import ERROR_CLASS_KEY, status_code
from .wrapping import wrap


class Rule(NamedTuple):
    role: Role | None            # None: anyone, even unauthenticated (health checks)
    tenants: bool                # a principal bound to a tenant may call it


ADMIN, OPER, VIEW = Role.ADMIN, Role.OPERATOR, Role.VIEWER
TENANT, NODE = True, False      # a tenant may call it / only principals without a tenant may


def _service(name: str, **methods: tuple[Role | None, bool]) -> dict[str, Rule]:
    return {f"/{name}/{method}": Rule(*rule) for method, rule in methods.items()}


METHOD_RULES: dict[str, Rule] = {
    **_service("galleonfs.v1.VolumeService",
               Create=(OPER, TENANT), Get=(VIEW, TENANT), List=(VIEW, TENANT),
               Delete=(OPER, TENANT), Expand=(OPER, TENANT), Mount=(OPER, TENANT),
               Unmount=(OPER, TENANT), GetStats=(VIEW, TENANT), Clone=(OPER, TENANT),
               Flatten=(OPER, TENANT)),
    **_service("galleonfs.v1.SnapshotService",
               Create=(OPER, TENANT), Get=(VIEW, TENANT), List=(VIEW, TENANT),
               Delete=(OPER, TENANT), Restore=(OPER, TENANT), Diff=(VIEW, TENANT),
               Mount=(OPER, TENANT)),
    # Policies pick volumes by label across the node: not a tenant's to define.
    **_service("galleonfs.v1.SnapshotPolicyService",
               Create=(OPER, NODE), Get=(VIEW, TENANT), List=(VIEW, TENANT), Delete=(OPER, NODE)),
    # Classes and QoS policies shape the whole node: admins define them, operators use them.
    **_service("galleonfs.v1.StorageClassService",
               Create=(ADMIN, NODE), Get=(VIEW, TENANT), List=(VIEW, TENANT), Delete=(ADMIN, NODE)),
    **_service("galleonfs.v1.QosService",
               Create=(ADMIN, NODE), Get=(VIEW, TENANT), Update=(ADMIN, NODE),
               List=(VIEW, TENANT), Delete=(ADMIN, NODE), Assign=(OPER, TENANT)),
    **_service("galleonfs.v1.NodeService", GetStatus=(VIEW, TENANT)),
    # The audit log shows every caller and every tenant's requests.
    **_service("galleonfs.v1.AuditService", List=(ADMIN, NODE), Verify=(VIEW, NODE)),
    **_service("galleonfs.v1.KeyService", Rotate=(ADMIN, NODE), Rekey=(OPER, TENANT)),
    **_service("galleonfs.v1.TokenService",
               Create=(ADMIN, NODE), List=(ADMIN, NODE), Revoke=(ADMIN, NODE)),
    **_service("galleonfs.v1.TenantService",
               Create=(ADMIN, NODE), Get=(VIEW, TENANT), List=(VIEW, TENANT), Delete=(ADMIN, NODE)),
    # The cluster's members and their scheduling are node-wide: not a tenant's to see or
    # change. A volume's placement is the volume's owner's to read.
    **_service("galleonfs.v1.ClusterService",
               GetStatus=(VIEW, NODE), Cordon=(ADMIN, NODE), Uncordon=(ADMIN, NODE),
               Drain=(ADMIN, NODE), GetPlacement=(VIEW, TENANT)),
    # Backups (issue 13). A target names where the node's secrets come from, and a policy's
    # hooks are commands galleond runs as itself (root): admins define both. Backing up,
    # restoring and deleting backups is an operator's. All node-scoped: a target is shared by
    # the node's tenants, and its backups are listed by volume name across them.
    **_service("galleonfs.v1.BackupTargetService",
               Create=(ADMIN, NODE), List=(VIEW, NODE), Delete=(ADMIN, NODE)),
    **_service("galleonfs.v1.BackupService",
               Create=(OPER, NODE), Get=(VIEW, NODE), List=(VIEW, NODE), Delete=(OPER, NODE),
               Restore=(OPER, NODE), Verify=(OPER, NODE)),
    **_service("galleonfs.v1.BackupPolicyService",
               Create=(ADMIN, NODE), List=(VIEW, NODE), Delete=(OPER, NODE)),
    # Probes (kubelet, load balancers) ask without credentials; the answer is SERVING or not.
    **_service("grpc.health.v1.Health",
               Check=(None, TENANT), Watch=(None, TENANT), List=(None, TENANT)),
    **_service("grpc.reflection.v1alpha.ServerReflection", ServerReflectionInfo=(VIEW, TENANT)),
}


@dataclass(frozen=True)
class Principal:
    name: str                    # "uid 1000", "token ci", "cert alice"
    role: Role
    tenant: str = ""
    creds: PeerCredentials | None = None

    def __str__(self) -> str:
        return self.name + (f" (tenant {self.tenant})" if self.tenant else "")


# The principal of the call running on this thread, for the servicers (``current()``).
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("galleonfs_principal",
                                                                              default=None)


def current() -> Principal | None:
    return _principal.get()


# What the audit record says about each call's caller, found by its context; entries go
# when grpcio drops the call's context.
_seen: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_seen_lock = threading.Lock()


def audit_peer(context: Any) -> dict[str, Any] | None:
    """The audit log's ``peer`` entry for a call this interceptor saw: who was authenticated
    (or, for a refused call, what is known of the caller)."""
    with _seen_lock:
        entry = _seen.get(context)
    return None if entry is None else dict(entry)


def _bearer(context: Any) -> str:
    """The bearer token of the call, "" when there is none."""
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if not values:
        return ""
    if len(values) > 1:
        raise Unauthenticated("the call carries more than one authorization header; send one")
    scheme, _, token = str(values[0]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization header must be 'Bearer <token>'")
    return token.strip()


def _loopback(peer: str) -> bool:
    host = peer.split(":", 1)[1].rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def _certificate_subject(pem: bytes) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(CN values, OU values, O values) of a client certificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.load_pem_x509_certificate(pem).subject

    def values(oid: x509.ObjectIdentifier) -> tuple[str, ...]:
        return tuple(str(a.value) for a in subject.get_attributes_for_oid(oid))

    return (values(NameOID.COMMON_NAME), values(NameOID.ORGANIZATIONAL_UNIT_NAME),
            values(NameOID.ORGANIZATION_NAME))


def _short(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "…")


class Authenticator:
    """Who a call is from. ``verify_token`` and ``tenant_exists`` read the catalog (the
    daemon hands in functions that run them on the trio thread)."""

    def __init__(self, gate: UnixGate | None, *, verify_token: Callable[[str], Token],
                 tenant_exists: Callable[[str], bool], operator_group: str) -> None:
        self.gate = gate
        self.verify_token = verify_token
        self.tenant_exists = tenant_exists
        self.operator_group = operator_group

    def peer_entry(self, context: Any) -> dict[str, Any]:
        """The audit log's ``peer`` entry for a call: who is calling, even when the call is
        about to be refused (then what is known of the caller, and why not more)."""
        seen: dict[str, Any] = {}
        try:
            principal = self.identify(context, seen)
        except GalleonError as exc:
            seen["refused"] = str(exc)[:200]
            return seen
        seen.update(principal=principal.name, role=principal.role.value, tenant=principal.tenant)
        return seen

    def identify(self, context: Any, seen: dict[str, Any]) -> Principal:
        """The principal of the call; fills ``seen`` with what is known even on a refusal."""
        peer = str(context.peer())
        if peer.startswith("unix:"):
            creds = self.gate.credentials(peer) if self.gate is not None else None
            if creds is None:
                raise Unauthenticated("this connection did not come through galleond's socket; "
                                      "connect to the address galleond listens on")
            seen.update(transport="unix", address=creds.socket_path, uid=creds.uid, gid=creds.gid,
                        pid=creds.pid, principal=f"uid {creds.uid}")
            token = _bearer(context)
            if token:
                return self._token(token, creds)
            return self._unix(creds)
        seen.update(transport="tcp", address=peer)
        if not peer.startswith(("ipv4:", "ipv6:")):
            raise Unauthenticated(f"galleond cannot tell who is calling over {_short(peer)}")
        token = _bearer(context)
        auth = context.auth_context() or {}
        if auth.get("transport_security_type") != [b"ssl"]:
            # Only loopback addresses are ever plaintext listeners (config refuses others).
            if not _loopback(peer):
                raise PermissionDenied("plaintext calls are only served on loopback")
            if token:
                return self._token(token, None)
            raise Unauthenticated("galleond's plaintext TCP listener needs a bearer token: set "
                                  "GALLEONFS_TOKEN or pass --token-file")
        if token:
            return self._token(token, None)
        pem = auth.get("x509_pem_cert")
        if pem:
            return self._certificate(pem[0])
        raise Unauthenticated("over TCP galleond needs a client certificate (--tls-cert and "
                              "--tls-key) or a bearer token (GALLEONFS_TOKEN or --token-file)")

    def _unix(self, creds: PeerCredentials) -> Principal:
        if creds.uid == 0:
            return Principal("uid 0", Role.ADMIN, creds=creds)
        try:
            gid = grp.getgrnam(self.operator_group).gr_gid if self.operator_group else None
        except KeyError:
            gid = None
        if gid is not None and creds.in_group(gid):
            return Principal(f"uid {creds.uid}", Role.OPERATOR, creds=creds)
        group = f"members of the group {self.operator_group}" if self.operator_group else "nobody else"
        raise PermissionDenied(who=f"uid {creds.uid}", action="use galleond",
                               reason=f"only root, {group}, or a caller with a token "
                                      f"(GALLEONFS_TOKEN or --token-file) may")

    def _token(self, secret: str, creds: PeerCredentials | None) -> Principal:
        token = self.verify_token(secret)
        return Principal(f"token {token.name}", token.role, token.tenant, creds)

    def _certificate(self, pem: bytes) -> Principal:
        try:
            names, units, orgs = _certificate_subject(pem)
        except ValueError:
            raise Unauthenticated("the client certificate cannot be read") from None
        if len(names) != 1 or not names[0]:
            raise PermissionDenied("the client certificate must name its principal in exactly one CN")
        who = f"cert {names[0][:64]}"
        if len(units) != 1:
            raise PermissionDenied(f"the client certificate of {who} must give its role in exactly one "
                                   f"OU (admin, operator or viewer)")
        try:
            role = Role(units[0])
        except ValueError:
            raise PermissionDenied(f"the client certificate of {who} has OU {_short(units[0])}, which "
                                   f"is not a role: use admin, operator or viewer") from None
        if len(orgs) > 1:
            raise PermissionDenied(f"the client certificate of {who} names more than one tenant (O)")
        tenant = orgs[0] if orgs else ""
        if tenant and role == Role.ADMIN:
            raise PermissionDenied(f"the client certificate of {who} binds an admin to tenant "
                                   f"{_short(tenant)}; an admin cannot be bound to a tenant")
        if tenant and not self.tenant_exists(tenant):
            raise PermissionDenied(f"tenant {_short(tenant)} (the O of the client certificate of "
                                   f"{who}) does not exist on this node")
        return Principal(who, role, tenant)


def authorize(method: str, rule: Rule | None, principal: Principal) -> None:
    short = method.lstrip("/").removeprefix("galleonfs.v1.")
    if rule is None:
        raise PermissionDenied(f"{short} is not in galleond's access table, so nobody may call it")
    if rule.role is not None and not principal.role.allows(rule.role):
        article = "an" if principal.role.value[0] in "aeiou" else "a"
        raise PermissionDenied(f"{principal} is {article} {principal.role.value}; {short} needs "
                               f"{rule.role.value}")
    if principal.tenant and not rule.tenants:
        raise PermissionDenied(f"{principal} is bound to a tenant; {short} acts on the whole node, "
                               f"which needs a principal without a tenant")


class AuthInterceptor(grpc.ServerInterceptor):
    """Runs inside the audit interceptor (so refusals are recorded, with who was refused)
    and outside the error interceptor."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        rule = METHOD_RULES.get(method)
        return wrap(handler, unary=lambda inner: self._guard(method, rule, inner, False),
                    stream=lambda inner: self._guard(method, rule, inner, True), client_streams=True)

    def _admit(self, method: str, rule: Rule | None, context: Any) -> Principal | None:
        if rule is not None and rule.role is None:
            return None
        seen: dict[str, Any] = {}
        try:
            principal = self.authenticator.identify(context, seen)
            seen.update(principal=principal.name, role=principal.role.value, tenant=principal.tenant)
            authorize(method, rule, principal)
        except GalleonError as exc:
            _remember(context, seen)
            context.set_trailing_metadata(((ERROR_CLASS_KEY, type(exc).__name__),))
            context.abort(status_code(exc), str(exc))
            raise AssertionError("context.abort returned") from None
        _remember(context, seen)
        return principal

    def _guard(self, method: str, rule: Rule | None, behaviour: Callable[..., Any],
               streams: bool) -> Callable[..., Any]:
        # ContextVar.set, then set back to empty (not reset): a response generator may be
        # closed from another context, where a reset token would not be valid.
        if streams:
            def guarded_stream(request: Any, context: Any) -> Iterator[Any]:
                principal = self._admit(method, rule, context)
                _principal.set(principal)
                tenancy.enter(principal.tenant if principal else "")
                try:
                    yield from behaviour(request, context)
                finally:
                    _principal.set(None)
                    tenancy.enter("")
            return guarded_stream

        def guarded(request: Any, context: Any) -> Any:
            principal = self._admit(method, rule, context)
            _principal.set(principal)
            tenancy.enter(principal.tenant if principal else "")
            try:
                return behaviour(request, context)
            finally:
                _principal.set(None)
                tenancy.enter("")
        return guarded


def _remember(context: Any, seen: dict[str, Any]) -> None:
    with _seen_lock:
        _seen[context] = seen
