"""Run a function as another user, in a forked child (tests switch uid/gid there)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ChildFailed(Exception):
    pass


def run_as(uid: int, gid: int, fn: Callable[[], T], *, groups: list[int] | None = None,
           umask: int | None = None) -> T:
    """Run ``fn`` in a child with the given ids; return its result or re-raise its OSError.

    Only ``OSError`` (with its errno) and plain values cross back; anything else fails.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        outcome: tuple[str, Any]
        try:
            os.setgroups(groups or [])
            os.setgid(gid)
            os.setuid(uid)
            if umask is not None:
                os.umask(umask)
            outcome = ("ok", fn())
        except OSError as exc:
            outcome = ("oserror", (exc.errno, exc.strerror, exc.filename))
        except BaseException as exc:  # report everything to the parent
            outcome = ("error", repr(exc))
        try:
            os.write(write_fd, pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if kind == "oserror":
        errno_, strerror, filename = value
        raise OSError(errno_, strerror, filename)
    raise ChildFailed(value)
