"""The control socket of a mount worker: where it is, how it is bound, who may use it.

One request per connection, one line each way (``codec.py``). The socket is a path socket,
``<data-dir>/run/control/<volume id>.sock``, in a directory only root may enter (0700); the
daemon binds it itself and hands the listening socket to the worker (``--control-fd``). So
no other local user can bind the address first (an abstract name could be taken by anyone
who read the volume id in /proc/mounts), nor connect to it. Both ends still check each
other (``SO_PEERCRED``): the worker answers root or its own user only
(``fuse/control.py``), and the caller trusts a reply only from a socket that root (or its
own user) listens on (``online.py``). A path longer than ``sun_path`` (108 bytes) is
reached through ``/proc/self/fd/<dir fd>/<name>``.

What it must not do: read without a bound (a line is at most what the caller allows).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

import trio

_SUN_PATH_MAX = 107        # sockaddr_un.sun_path is 108 bytes with its NUL


class LineTooLong(ValueError):
    """More bytes than a line of this protocol may have."""


def socket_file(volume_id: str) -> str:
    return f"{volume_id}.sock"


def address(dir_path: str, dir_fd: int, name: str) -> str:
    """How to reach ``name`` in the control directory: its path, or the same file through
    our fd of the directory when the path is too long for a unix socket address."""
    path = os.path.join(dir_path, name)
    return path if len(os.fsencode(path)) <= _SUN_PATH_MAX else f"/proc/self/fd/{dir_fd}/{name}"


def listen(dir_fd: int, name: str) -> socket.socket:
    """Bind and listen on ``name`` in the (0700) control directory ``dir_fd``; a stale
    socket of an earlier worker is replaced. The caller hands the socket to the worker."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"/proc/self/fd/{dir_fd}/{name}")
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    """The uid of the process at the other end (the kernel's word, not the peer's)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def trusted_uid(uid: int) -> bool:
    """Root, or the user this process runs as: the only peers either end talks to."""
    return uid in (0, os.geteuid())


async def read_line(stream: trio.SocketStream, limit: int) -> bytes:
    """One line (without its newline), or what came before EOF; ``LineTooLong`` past ``limit``."""
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise LineTooLong(f"a control line is longer than {limit} bytes")
    return data.split(b"\n", 1)[0]
