"""Lock objects in the target: who may change the repository now.

Writers, restores and deletes take a *shared* lock, GC takes an *exclusive* one (the restic
scheme, which needs nothing from the target but put, list, get and delete):

1. write ``locks/<random>`` (sealed: kind, host, pid, purpose, time, ttl);
2. list ``locks/`` and read every other lock; a lock is stale when its time is more than its
   ttl in the past, or when it names this host and a pid that no longer runs;
3. if a live lock conflicts (either side exclusive), delete ours and fail (or wait and retry).
   Two takers racing both see each other and both back off: never both win.

A holder refreshes its lock every ``lock_refresh_s`` from a thread. ``check()`` raises
``LockLost`` when the lock object disappeared (someone judged it stale) or when the last
successful refresh is older than ``ttl - clock skew``: a writer calls it right before it
commits a manifest, and GC right before it deletes, so neither acts on a lock another
process may already have judged stale. An unreadable lock object counts as a conflict
(fail closed); ``break_locks`` is the operator's way out.

What it must not do: judge a lock stale on anything but its age or a dead local pid.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import GalleonError
from . import limits
from .errors import LockLost, ObjectCorrupt, ObjectMissing, RepositoryLocked
from .keys import Keys
from .layout import LOCKS
from .sealed import MAGIC_LOCK, seal, unseal
from .targets import Target

log = logging.getLogger(__name__)
HOST = socket.gethostname()


class Lockable(Protocol):
    """What locks need of a repository (``repository.Repository`` is one). Declared here
    rather than imported: the repository takes its locks from this module."""

    @property
    def target(self) -> Target: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class LockInfo:
    name: str
    exclusive: bool
    host: str
    pid: int
    purpose: str
    time: float
    ttl_s: float

    def stale(self, now: float) -> bool:
        if now - self.time > self.ttl_s:
            return True
        if self.host == HOST and self.pid != os.getpid():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.time))
        kind = "exclusive" if self.exclusive else "shared"
        return f"{self.purpose} ({kind}) on {self.host} pid {self.pid} since {when}"


def read_lock(repo: Lockable, name: str) -> LockInfo:
    data = unseal(repo.keys, MAGIC_LOCK, name, repo.target.get(name), repo.url)
    try:
        doc: Any = json.loads(data)
        return LockInfo(name, bool(doc["exclusive"]), str(doc["host"]), int(doc["pid"]),
                        str(doc["purpose"]), float(doc["time"]), float(doc["ttl_s"]))
    except (ValueError, KeyError, TypeError):
        raise ObjectCorrupt(name=name, target=repo.url, reason="it is not a lock record") from None


class Lock:
    """A held lock; a context manager that releases it."""

    def __init__(self, repo: Lockable, *, exclusive: bool, purpose: str,
                 ttl_s: float, refresh_s: float) -> None:
        self.repo = repo
        self.exclusive, self.purpose = exclusive, purpose
        self.ttl_s, self.refresh_s = ttl_s, refresh_s
        self.name = f"{LOCKS}{os.urandom(16).hex()}"
        self._last_ok = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        doc = {"exclusive": self.exclusive, "host": HOST, "pid": os.getpid(),
               "purpose": self.purpose, "time": time.time(), "ttl_s": self.ttl_s}
        return seal(self.repo.keys, MAGIC_LOCK, self.name, json.dumps(doc).encode())

    def _write(self) -> None:
        started = time.monotonic()
        self.repo.target.put(self.name, self._payload())
        self._last_ok = started

    def conflicts(self) -> list[str]:
        """Who holds a lock that conflicts with ours (descriptions), after writing ours."""
        now, out = time.time(), []
        for name, _size in list(self.repo.target.list(LOCKS)):
            if name == self.name:
                continue
            try:
                other = read_lock(self.repo, name)
            except ObjectMissing:
                continue                                # released while we listed
            except GalleonError as exc:
                out.append(f"an unreadable lock {name} ({exc})")
                continue
            if other.stale(now):
                continue
            if self.exclusive or other.exclusive:
                out.append(other.describe())
        return out

    def acquire(self, wait_s: float = limits.lock_wait_default_s) -> Lock:
        deadline = time.monotonic() + wait_s
        while True:
            self._write()
            try:
                holders = self.conflicts()
            except BaseException:
                self._remove()
                raise
            if not holders:
                break
            self._remove()
            if time.monotonic() >= deadline:
                raise RepositoryLocked(target=self.repo.url, holder=holders[0])
            # Jitter so that two exclusive takers do not back off in lockstep forever.
            time.sleep(limits.lock_retry_interval_s * (0.5 + os.urandom(1)[0] / 255))
        self._thread = threading.Thread(target=self._refresher, name="backup-lock", daemon=True)
        self._thread.start()
        return self

    def _refresher(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                if self.repo.target.head(self.name) is None:
                    self._lost = "its lock object was removed by another process"
                    return
                self._write()
            except GalleonError as exc:
                # Not fatal yet: check() refuses to commit once the lock may have expired.
                log.info("could not refresh backup lock %s: %s", self.name, exc)

    def check(self) -> None:
        if self._lost:
            raise LockLost(target=self.repo.url, reason=self._lost)
        age = time.monotonic() - self._last_ok
        if age > self.ttl_s - min(limits.lock_clock_skew_s, self.ttl_s / 2):
            raise LockLost(target=self.repo.url, reason=f"it was last refreshed {age:.0f} s ago")
        if self.repo.target.head(self.name) is None:
            raise LockLost(target=self.repo.url, reason="its lock object was removed by another process")

    def _remove(self) -> None:
        try:
            self.repo.target.delete(self.name)
        except GalleonError as exc:
            # Left behind, the lock blocks GC only until it expires (lock_ttl_s).
            log.info("could not remove backup lock %s (it expires by itself): %s", self.name, exc)

    def release(self) -> None:
        """Stop refreshing and remove the lock object; never raises (the work is done)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._remove()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def list_locks(repo: Lockable, on_error: Callable[[str, GalleonError], None] | None = None) -> list[LockInfo]:
    out = []
    for name, _size in list(repo.target.list(LOCKS)):
        try:
            out.append(read_lock(repo, name))
        except GalleonError as exc:
            if on_error is None:
                raise
            on_error(name, exc)
    return out


def break_locks(repo: Lockable, *, stale_only: bool = True) -> list[str]:
    """Delete lock objects (only stale ones unless told otherwise); return their names."""
    now, removed = time.time(), []
    for name, _size in list(repo.target.list(LOCKS)):
        if stale_only:
            try:
                if not read_lock(repo, name).stale(now):
                    continue
            except GalleonError:
                continue                                # unreadable: only a forced break removes it
        repo.target.delete(name)
        removed.append(name)
    return removed
