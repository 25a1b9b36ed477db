"""``Xattrs``: extended attributes, in the four Linux namespaces, with ext4's limits.

Names must carry a namespace (``user.``, ``trusted.``, ``security.``, ``system.``) and a
name after it; values are at most ``limits.xattr_value_max_bytes``; the names of one inode
together at most ``limits.xattr_list_max_bytes`` (what ``listxattr`` must fit). Setting or
removing one changes the inode's ctime.

What it must not do: show ``trusted.*`` names to anyone but root (the kernel checks reads
and writes of them itself, but passes a list through unfiltered).
"""

from __future__ import annotations

import time

from .. import limits
from ..engine.engine import Engine
from ..errors import InvalidArgument, NoAttribute, NoSpace, NotSupported, OutOfRange, TooBig
from ..ids import InodeId
from ..meta import schema
from ..meta.schema import Db
from .common import XATTR_NAMESPACES, Ctx
from .nodes import Nodes


def _check_name(name: bytes) -> None:
    if len(name) > limits.xattr_name_max_bytes or not name:
        raise OutOfRange("xattr name is empty or longer than 255 bytes")
    if name in XATTR_NAMESPACES:
        raise InvalidArgument(f"xattr name {name!r} has a namespace but no name")
    if not name.startswith(XATTR_NAMESPACES):
        raise NotSupported(f"xattr namespace of {name!r} is not supported")


class Xattrs:
    def __init__(self, engine: Engine, nodes: Nodes) -> None:
        self._engine = engine
        self._nodes = nodes
        self._meta = engine.meta

    def get(self, ino: InodeId, name: bytes) -> bytes:
        _check_name(name)
        self._nodes.inode(ino)
        view, local = self._nodes.view(ino)
        value = view.get(self._meta, Db.XATTRS, schema.xattr_key(local, name))
        if value is None:
            raise NoAttribute(f"no attribute {name!r}")
        return value

    def set(self, ino: InodeId, name: bytes, value: bytes) -> None:
        self._nodes.admit(ino)
        _check_name(name)
        if len(value) > limits.xattr_value_max_bytes:
            raise TooBig("xattr value is larger than 64 KiB")
        inode = self._nodes.inode(ino)
        key = schema.xattr_key(ino, name)
        if self._meta.get(Db.XATTRS, key) is None:
            total = sum(len(k) - 8 + 1 for k, _ in self._meta.scan(Db.XATTRS, prefix=schema.ino_key(ino)))
            if total + len(name) + 1 > limits.xattr_list_max_bytes:
                raise NoSpace("too many extended attributes on this file")
        with self._engine.operation():
            self._meta.put(Db.XATTRS, key, value)
            inode.ctime_ns = self._nodes.file_time(inode.mode, time.time_ns())
            self._nodes.put(inode)

    def list(self, ino: InodeId, ctx: Ctx) -> list[bytes]:
        """The attribute names; ``trusted.*`` ones only for root, as ext4 and tmpfs list them.

        The kernel checks ``trusted.*`` reads and writes itself but passes the list through
        unfiltered, so hiding the names is ours. FUSE tells us no capabilities: uid 0 stands
        in for ``CAP_SYS_ADMIN``.
        """
        self._nodes.inode(ino)
        view, local = self._nodes.view(ino)
        names = [bytes(key[8:]) for key, _ in view.scan(self._meta, Db.XATTRS, schema.ino_key(local))]
        if ctx.uid != 0:
            names = [name for name in names if not name.startswith(b"trusted.")]
        return names

    def remove(self, ino: InodeId, name: bytes) -> None:
        self._nodes.admit(ino)
        _check_name(name)
        inode = self._nodes.inode(ino)
        key = schema.xattr_key(ino, name)
        if self._meta.get(Db.XATTRS, key) is None:
            raise NoAttribute(f"no attribute {name!r}")
        with self._engine.operation():
            self._meta.delete(Db.XATTRS, key)
            inode.ctime_ns = self._nodes.file_time(inode.mode, time.time_ns())
            self._nodes.put(inode)
