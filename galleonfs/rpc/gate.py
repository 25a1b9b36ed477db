"""The unix-socket gate: who is calling on galleond's unix sockets, known exactly.

grpcio tells a servicer only ``unix:`` for a unix-socket peer and never hands out the
connection's descriptor, so it cannot say who called. The gate owns galleond's public unix
sockets instead of grpcio. For each connection it accepts, it reads the kernel's record of
the caller (``SO_PEERCRED``: pid, uid, gid; ``SO_PEERGROUPS``: supplementary groups, all as
they were at ``connect``) and then splices the bytes to the gRPC server's *internal*
listener, a unix socket in a private 0700 directory that only root can reach. The gate's
own end of that splice is first bound to a fresh path in the same directory
(``c<N>``, N never reused while the daemon runs), and grpcio reports a bound unix peer by
its path: ``context.peer()`` is then ``unix:<dir>/c<N>``, which ``credentials()`` maps to
the caller's credentials. The record is made before ``connect`` and dropped only after both
directions have ended, before the socket is closed, so every call grpcio can see on that
connection finds it. A connection to the internal socket that the gate did not make has no
record (an unbound peer reads ``unix:``) and is refused by the auth interceptor.

Why not a loopback TCP port keyed by source port (the first design considered): any local
user can connect to a loopback port, so the mapping then rests on nobody else holding that
port; a path in a root-only directory is unreachable to them in the first place, names are
never reused (no TIME_WAIT reasoning), and a gate peer can never be mistaken for a TCP
listener's peer.

The public socket gets its final mode before anybody can connect (finding 8 of issue 9):
``fchmod`` of the unbound socket (the inode ``bind`` creates has that mode less the umask,
so it is never wider), ``chmod``/``chown`` of the path after ``bind`` and only then
``listen``: until ``listen`` a connect is refused.

Cost (benchmarks/gate.py on this 2-core machine, shared with other work: one channel,
Health/Check, medians of 5 rounds of 2000 calls): 0.38 ms per unary call through the gate
against 0.33 ms straight to grpcio's socket, so +0.05 ms per call; the first call of a new
connection pays 1 to 3.5 ms more (two pump threads start). One galleonctl command makes one
connection. Bulk messages cost two extra copies through this process.

Threads, not an event loop (DESIGN §2 allows one loop, trio's, and the splice must not run
on the trio thread, which owns the daemon's state): one accept thread per socket and two
blocking pump threads per connection, at most ``limits.gate_connections_max`` connections.

What it must not do: decide anything. It reports credentials; ``rpc.auth`` decides.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
from dataclasses import dataclass

from .. import limits
from ..errors import Busy, InvalidArgument

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")             # struct ucred: pid, uid, gid
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)    # Linux >= 4.13; Python lacks the name
# Python's getsockopt takes at most 1024 bytes: 256 groups. A caller in more groups than
# that is judged by its primary gid alone (never by a guess).
_GROUPS_BYTES_MAX = 1024
RUN_BASE = "/run/galleonfs"


@dataclass(frozen=True)
class PeerCredentials:
    """The kernel's credentials of a unix-socket caller, as they were at ``connect``."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    socket_path: str                     # which public socket it connected to

    def in_group(self, gid: int) -> bool:
        return self.gid == gid or gid in self.groups


def peer_credentials(sock: socket.socket, socket_path: str) -> PeerCredentials:
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _GROUPS_BYTES_MAX)
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    except OSError as exc:
        if exc.errno not in (errno.ERANGE, errno.ENOPROTOOPT):
            raise
        groups = ()
    return PeerCredentials(pid, uid, gid, tuple(groups), socket_path)


def run_dir_for(data_dir: str) -> str:
    """The gate's private directory for one data directory: short (a unix socket path holds
    at most 107 bytes), the same across restarts (so a dead daemon's leftovers are cleared by
    the next one, which holds the data directory's lock), and root's alone."""
    base = RUN_BASE if os.geteuid() == 0 else tempfile.gettempdir()
    digest = hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:16]
    return os.path.join(base, f"gate-{digest}" if base == RUN_BASE else f"galleond-gate-{os.geteuid()}-{digest}")


def _private_dir(path: str) -> None:
    """Create ``path`` as a fresh 0700 directory of ours, clearing what a dead daemon left."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise InvalidArgument(f"{path} exists and is not a directory of this user; remove it")
        shutil.rmtree(path)
    os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise InvalidArgument(f"{path} is not a private directory (mode {info.st_mode & 0o777:04o})")


def _unix_listener(path: str, mode: int, gid: int | None) -> socket.socket:
    """A listening socket at ``path`` whose mode (and group) are final before it listens."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise InvalidArgument(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
            raise Busy(f"another daemon already listens on {path}")
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)               # left by a daemon that died
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        os.fchmod(sock.fileno(), mode)    # bind creates the inode with this, less the umask
        sock.bind(path)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)              # give back what the umask took: still not listening
        sock.listen(limits.gate_backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class UnixGate:
    def __init__(self, run_dir: str) -> None:
        _private_dir(run_dir)
        self.run_dir = run_dir
        self.internal_path = os.path.join(run_dir, "grpc.sock")
        self._listeners: list[tuple[socket.socket, str]] = []
        self._peers: dict[str, PeerCredentials] = {}
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._slots = threading.BoundedSemaphore(limits.gate_connections_max)
        self._closing = False
        self._threads: list[threading.Thread] = []

    @property
    def internal_target(self) -> str:
        """The gRPC server's internal listener, for ``add_insecure_port``."""
        return f"unix:{self.internal_path}"

    def listen(self, path: str, mode: int, gid: int | None = None) -> None:
        """Own the public socket ``path`` (connections are accepted from ``start``)."""
        self._listeners.append((_unix_listener(path, mode, gid), path))

    def start(self) -> None:
        for sock, path in self._listeners:
            thread = threading.Thread(target=self._accept_loop, args=(sock, path),
                                      name=f"gate-accept-{os.path.basename(path)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def credentials(self, peer: str) -> PeerCredentials | None:
        """The caller behind a gRPC peer string, if the gate made that connection."""
        with self._lock:
            return self._peers.get(peer)

    # --- accepting and splicing ------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket, path: str) -> None:
        while True:
            self._slots.acquire()         # at the bound, callers wait in the kernel's backlog
            try:
                conn, _ = listener.accept()
            except OSError:
                self._slots.release()
                if self._closing:
                    return
                log.exception("the gate on %s stopped accepting", path)
                return
            try:
                self._splice(conn, path)
            except OSError as exc:
                # The caller hung up at once, or the internal socket is gone (stopping).
                log.info("gate on %s: dropped a connection: %s", path, exc)
                conn.close()
                self._slots.release()

    def _splice(self, conn: socket.socket, path: str) -> None:
        creds = peer_credentials(conn, path)
        name = os.path.join(self.run_dir, f"c{next(self._numbers)}")
        key = f"unix:{name}"
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            up.bind(name)
            with self._lock:               # before connect: grpcio may serve at once
                self._peers[key] = creds
                self._open.update((conn, up))
            try:
                up.connect(self.internal_path)
            finally:
                os.unlink(name)            # the name stays the socket's; the file is litter
        except BaseException:
            with self._lock:
                self._peers.pop(key, None)
                self._open.difference_update((conn, up))
            up.close()
            raise
        ends = [2]

        def pump(src: socket.socket, dst: socket.socket) -> None:
            buf = bytearray(limits.gate_buffer_bytes)
            view = memoryview(buf)
            try:
                while n := src.recv_into(buf):
                    dst.sendall(view[:n])
            except OSError:
                # One side reset: end the other direction as well.
                with contextlib.suppress(OSError):
                    src.shutdown(socket.SHUT_RDWR)
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                with self._lock:
                    ends[0] -= 1
                    last = ends[0] == 0
                    if last:
                        # Forget the caller before the socket (and its name) can go.
                        self._peers.pop(key, None)
                        self._open.difference_update((conn, up))
                if last:
                    conn.close()
                    up.close()
                    self._slots.release()

        for src, dst, way in ((conn, up, "in"), (up, conn, "out")):
            threading.Thread(target=pump, args=(src, dst), name=f"gate-{way}-{key.rsplit('/', 1)[-1]}",
                             daemon=True).start()

    # --- stopping --------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        """Close the public sockets (and remove their paths); open connections go on."""
        self._closing = True
        for sock, path in self._listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)     # wakes accept() on Linux
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for thread in self._threads:
            thread.join(timeout=limits.gate_stop_timeout_s)
        self._listeners.clear()

    def close(self) -> None:
        """End every connection still open, and remove the private directory."""
        self.stop_accepting()
        with self._lock:
            still = list(self._open)
        for sock in still:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        shutil.rmtree(self.run_dir, ignore_errors=True)
