"""Who is connected to the daemon's unix sockets: the kernel's peer credentials.

grpcio tells a servicer only ``unix:`` for a unix-socket peer (no uid, no pid), and gives
no access to the connection's file descriptor. So the daemon looks at its own open
sockets: every accepted connection on one of its listening paths, with ``SO_PEERCRED``
(pid, uid, gid as the kernel recorded them at ``connect``). The caller of a running call is
one of them. When all connected clients share one uid and gid, that is the caller's; when
only one client is connected, its pid is the caller's too. Otherwise the record lists the
candidates and says it could not tell: an honest "don't know" beats a guess.

Linux only (``/proc/self/fd``, ``SO_PEERCRED``). Scanning ~100 descriptors costs well
under a millisecond, paid only by calls that change state.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")      # struct ucred: pid, uid, gid


@dataclass(frozen=True, order=True)
class Credentials:
    pid: int
    uid: int
    gid: int


def unix_peers(paths: list[str]) -> list[Credentials]:
    """Credentials of the clients connected to this process's sockets bound to ``paths``."""
    wanted = {os.path.realpath(p) for p in paths}
    found = []
    for name in _fd_names():
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue                      # closed meanwhile
        if not target.startswith("socket:"):
            continue
        creds = _peer_of(int(name), wanted)
        if creds is not None:
            found.append(creds)
    return sorted(set(found))


def _fd_names() -> list[str]:
    try:
        return os.listdir("/proc/self/fd")
    except OSError:
        return []


def _peer_of(fd: int, wanted: set[str]) -> Credentials | None:
    # A duplicate, so that closing our socket object never closes grpc's descriptor. The
    # number may have been reused since the listing: the checks below see what it is now.
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
    with contextlib.closing(sock):
        try:
            if sock.family != socket.AF_UNIX or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return None
            name = sock.getsockname()
            if not isinstance(name, str) or os.path.realpath(name) not in wanted:
                return None
            pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          _UCRED.size))
        except OSError:
            return None
    return Credentials(pid, uid, gid)
