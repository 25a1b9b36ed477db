"""``StorageClassManager``: named parameter sets for volumes; ``local`` and ``encrypted`` built in.

Built-in classes exist from the first start and cannot be deleted or redefined; a class
that volumes still use cannot be deleted either (the message names them).
"""

from __future__ import annotations

from ..errors import AlreadyExists, Busy, FailedPrecondition, InvalidArgument, NotFound
from ..meta.catalog import Catalog
from .model import BUILTIN_CLASSES, StorageClass, Volume, now_ns

BUILTIN_DEFAULT = "local"


class StorageClassManager:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        for cls in BUILTIN_CLASSES:
            if catalog.storage_class(cls.name) is None:
                catalog.put_storage_class(cls.to_json())

    def find(self, name: str) -> StorageClass | None:
        data = self.catalog.storage_class(name)
        return None if data is None else StorageClass.from_json(data)

    def get(self, name: str) -> StorageClass:
        if not name:
            raise InvalidArgument("name a storage class")
        cls = self.find(name)
        if cls is None:
            known = ", ".join(c.name for c in self.list())
            raise NotFound(f"storage class {name!r} does not exist (known: {known})")
        return cls

    def default(self) -> StorageClass:
        for cls in self.list():
            if cls.is_default:
                return cls
        return self.get(BUILTIN_DEFAULT)

    def list(self) -> list[StorageClass]:
        return sorted((StorageClass.from_json(c) for c in self.catalog.storage_classes()),
                      key=lambda c: c.name)

    def create(self, cls: StorageClass) -> StorageClass:
        cls.builtin = False
        cls.created_ns = now_ns()       # the node's clock, not whatever the request carried
        cls.validate()
        if self.find(cls.name) is not None:
            raise AlreadyExists(f"storage class {cls.name!r} already exists")
        if cls.is_default:
            for other in self.list():
                if other.is_default:
                    other.is_default = False
                    self.catalog.put_storage_class(other.to_json())
        self.catalog.put_storage_class(cls.to_json())
        return cls

    def delete(self, name: str) -> None:
        cls = self.get(name)
        if cls.builtin:
            raise FailedPrecondition(f"storage class {name} is built in and cannot be deleted")
        users = [Volume.from_json(v).name for v in self.catalog.volumes() if v["storage_class"] == name]
        if users:
            raise Busy(f"storage class {name} is used by volumes {', '.join(sorted(users))}; "
                       f"delete them first")
        self.catalog.delete_storage_class(name)
        if cls.is_default:
            # There is always a default class: the built-in one takes the role back. (A crash
            # between the two writes leaves none marked; ``default()`` falls back to it too.)
            local = self.get(BUILTIN_DEFAULT)
            local.is_default = True
            self.catalog.put_storage_class(local.to_json())
