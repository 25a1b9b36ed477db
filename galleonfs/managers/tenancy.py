"""The tenant a request acts for, and what that allows: which volumes, classes and quota.

``rpc.auth`` sets the scope (``enter``) for the duration of a call made by a principal
bound to a tenant; trio carries it from the gRPC thread into the manager code on the trio
thread (``trio.from_thread.run`` runs in a copy of the caller's context, and each trio task
has its own). The managers consult it at their few entry points:

* ``VolumeManager.get`` and ``list``: a volume of another tenant (or of none) is reported
  exactly like one that does not exist, so names are never leaked. Every volume-scoped
  operation (snapshots, clones, QoS assignment, rekey, mounts) looks its volume up there.
* ``admit`` at creation (volumes and clones): the storage class must be one the tenant may
  use, and the new volume must fit the tenant's quota (number of volumes, sum of sizes);
  the new volume is recorded as the tenant's. ``admit_growth`` at expansion.

Outside a scope (root and group members on the unix socket, untenanted tokens and
certificates, the daemon's own tasks) nothing is filtered and no quota applies: quotas bind
a tenant's principals, not an admin.

Atomicity: the quota is checked and the new volume saved with no ``await`` between, on the
trio thread, so two concurrent creates of one tenant cannot both pass a check that only one
of them fits.

What it must not do: authenticate, or import anything above the managers.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from ..errors import NotFound, PermissionDenied, QuotaExceeded
from ..meta.catalog import Catalog
from ..units import format_size
from .access import Tenant
from .model import StorageClass
from .storage_classes import StorageClassManager

_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("galleonfs_tenant", default="")


def current() -> str:
    """The tenant this request acts for; "" when it is not bound to one."""
    return _tenant.get()


def enter(tenant: str) -> None:
    """Act for ``tenant`` ("" for none) from now on, in this thread's (or task's) context.
    ``rpc.auth`` enters the caller's tenant before each call and "" after it."""
    _tenant.set(tenant)


@contextlib.contextmanager
def scoped(tenant: str) -> Iterator[None]:
    token = _tenant.set(tenant)
    try:
        yield
    finally:
        _tenant.reset(token)


def visible(volume: dict[str, object] | object) -> bool:
    """Whether the current request may see a volume (a catalog dict or a ``Volume``)."""
    tenant = current()
    if not tenant:
        return True
    owner = volume.get("tenant", "") if isinstance(volume, dict) else getattr(volume, "tenant", "")
    return owner == tenant


def _tenant_of_scope(catalog: Catalog) -> Tenant | None:
    name = current()
    if not name:
        return None
    data = catalog.tenant(name)
    if data is None:
        raise PermissionDenied(f"tenant {name} no longer exists; ask an admin")
    return Tenant.from_json(data)


def class_allowed(catalog: Catalog, storage_class: str) -> bool:
    tenant = _tenant_of_scope(catalog)
    return tenant is None or tenant.allows_class(storage_class)


def admit(catalog: Catalog, *, storage_class: str, size: int) -> str:
    """Check that the current tenant may create a volume of ``size`` bytes in
    ``storage_class``; return the tenant the new volume belongs to ("" for none)."""
    tenant = _tenant_of_scope(catalog)
    if tenant is None:
        return ""
    if not tenant.allows_class(storage_class):
        raise PermissionDenied(f"tenant {tenant.name} may not use storage class {storage_class}; "
                               f"it may use {', '.join(tenant.storage_classes)}")
    sizes = [int(v["size"]) for v in catalog.volumes() if v.get("tenant", "") == tenant.name]
    if tenant.max_volumes and len(sizes) + 1 > tenant.max_volumes:
        raise QuotaExceeded(f"tenant {tenant.name} has {len(sizes)} volumes, its quota; delete one "
                            f"or ask an admin for a larger quota")
    _check_bytes(tenant, sum(sizes), size)
    return tenant.name


def admit_growth(catalog: Catalog, volume_tenant: str, old_size: int, new_size: int) -> None:
    """Check that growing a volume of the current tenant stays within its byte quota."""
    tenant = _tenant_of_scope(catalog)
    if tenant is None or volume_tenant != tenant.name or new_size <= old_size:
        return
    used = sum(int(v["size"]) for v in catalog.volumes() if v.get("tenant", "") == tenant.name)
    _check_bytes(tenant, used, new_size - old_size)


def _check_bytes(tenant: Tenant, used: int, more: int) -> None:
    if tenant.max_bytes and used + more > tenant.max_bytes:
        raise QuotaExceeded(
            f"tenant {tenant.name} would have {format_size(used + more)} of volumes, above its quota "
            f"of {format_size(tenant.max_bytes)} ({format_size(used)} in use); ask for less, or "
            f"ask an admin for a larger quota")


def visible_classes(classes: StorageClassManager) -> list[StorageClass]:
    """The storage classes the current request may see: a tenant's allowed ones, or all."""
    return [c for c in classes.list() if class_allowed(classes.catalog, c.name)]


def visible_class(classes: StorageClassManager, name: str) -> StorageClass:
    """``classes.get(name)``, but for a tenant a class it may not use is "not found", and
    the message lists only the classes it may use."""
    if not current():
        return classes.get(name)
    cls = classes.find(name) if name else None
    if cls is None or not class_allowed(classes.catalog, cls.name):
        if not name:
            return classes.get(name)             # "name a storage class"
        known = ", ".join(c.name for c in visible_classes(classes))
        raise NotFound(f"storage class {name[:64]!r} does not exist (known: {known})")
    return cls
