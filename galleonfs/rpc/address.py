"""Listen/connect addresses: ``unix:/path/to.sock`` or ``host:port`` (``[::1]:port`` for IPv6)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument


@dataclass(frozen=True)
class Address:
    unix_path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def grpc_target(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.grpc_target


def parse_address(text: str) -> Address:
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path.startswith("/"):
            raise InvalidArgument(what="address", value=repr(text),
                                  expected="a unix socket needs an absolute path, e.g. "
                                           "unix:/run/galleonfs/galleond.sock")
        return Address(unix_path=path)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(what="address", value=repr(text), expected="use unix:/path/to.sock or host:port")
    return Address(host=host, port=int(port))
