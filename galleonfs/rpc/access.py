"""TokenService and TenantService: translate, call ``AccessManager`` on the trio thread, translate back.

Who may call which method is ``rpc.auth``'s table; here only what a tenant-bound caller
*sees* is narrowed: its own tenant, never another's (NOT_FOUND, as if absent).
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..managers.access import AccessManager, Role, Tenant, Token
from ..managers.storage_classes import StorageClassManager
from ..managers.tenancy import current as current_tenant
from ..v1 import tenant_pb2, tenant_pb2_grpc, token_pb2, token_pb2_grpc
from . import auth
from .bridge import TrioBridge
from .convert import timestamp


def token_to_pb(t: Token, now_ns: int) -> token_pb2.Token:
    pb = token_pb2.Token(name=t.name, role=t.role.value, tenant=t.tenant,
                         created_at=timestamp(t.created_ns), state=t.state(now_ns),
                         created_by=t.created_by)
    if t.expires_ns:
        pb.expires_at.CopyFrom(timestamp(t.expires_ns))
    if t.revoked_ns:
        pb.revoked_at.CopyFrom(timestamp(t.revoked_ns))
    return pb


def _now_ns() -> int:
    from ..managers.model import now_ns

    return now_ns()


class TokenService(token_pb2_grpc.TokenServiceServicer):
    def __init__(self, bridge: TrioBridge, access: AccessManager) -> None:
        self.bridge = bridge
        self.access = access

    def Create(self, request: Any, context: Any) -> Any:
        role = Role.parse(request.role) if request.role else Role.VIEWER
        principal = auth.current()
        token, secret = self.bridge.run_sync(lambda: self.access.create_token(
            request.name, role, tenant=request.tenant, ttl_s=request.ttl_seconds,
            created_by=principal.name if principal else ""))
        return token_pb2.CreateTokenResponse(token=token_to_pb(token, _now_ns()), secret=secret)

    def List(self, request: Any, context: Any) -> Any:
        now = _now_ns()
        return token_pb2.ListTokensResponse(
            tokens=[token_to_pb(t, now) for t in self.bridge.run_sync(self.access.tokens)])

    def Revoke(self, request: Any, context: Any) -> Any:
        return token_to_pb(self.bridge.run_sync(self.access.revoke_token, request.name), _now_ns())


class TenantService(tenant_pb2_grpc.TenantServiceServicer):
    def __init__(self, bridge: TrioBridge, access: AccessManager, classes: StorageClassManager) -> None:
        self.bridge = bridge
        self.access = access
        self.classes = classes

    def _pb(self, t: Tenant) -> tenant_pb2.Tenant:
        volumes, used = self.access.usage(t.name)
        return tenant_pb2.Tenant(name=t.name, max_bytes=t.max_bytes, max_volumes=t.max_volumes,
                                 storage_classes=t.storage_classes, created_at=timestamp(t.created_ns),
                                 volumes=volumes, used_bytes=used)

    def Create(self, request: Any, context: Any) -> Any:
        p = request.tenant
        tenant = Tenant(name=p.name, max_bytes=p.max_bytes, max_volumes=p.max_volumes,
                        storage_classes=list(p.storage_classes))

        def create() -> tenant_pb2.Tenant:
            known = [c.name for c in self.classes.list()]
            return self._pb(self.access.create_tenant(tenant, known))
        return self.bridge.run_sync(create)

    def Get(self, request: Any, context: Any) -> Any:
        def get() -> tenant_pb2.Tenant:
            own = current_tenant()
            if own and request.name != own:       # another tenant's: as if absent
                raise NotFound(f"tenant {request.name[:64]!r} does not exist (see `galleonctl tenant list`)")
            return self._pb(self.access.tenant(request.name))
        return self.bridge.run_sync(get)

    def List(self, request: Any, context: Any) -> Any:
        def tenants() -> list[tenant_pb2.Tenant]:
            own = current_tenant()
            return [self._pb(t) for t in self.access.tenants() if not own or t.name == own]
        return tenant_pb2.ListTenantsResponse(tenants=self.bridge.run_sync(tenants))

    def Delete(self, request: Any, context: Any) -> Any:
        self.bridge.run_sync(self.access.delete_tenant, request.name)
        return tenant_pb2.DeleteTenantResponse()
