"""Named crash points (STYLE: "crash points are named and armed by the tests").

The engine calls ``hit("journal.after_append_before_sync")`` at each point where a crash
would leave a distinct on-disk state. Unarmed, ``hit`` is a dict lookup on an empty dict.

Tests arm a point in-process (``arm``), which raises ``SimulatedCrash`` there; the power
cut is then modelled by the faulty storage double. A real process can be armed through
the environment, ``GALLEONFS_CRASHPOINT=name[:nth]``, which makes it ``SIGKILL`` itself
at the nth hit: the kill -9 tests use that to stop a mount worker at an exact step.
"""

from __future__ import annotations

import os
import signal


class SimulatedCrash(BaseException):
    """Raised at an armed crash point. A ``BaseException`` so that no handler swallows it."""


_armed: dict[str, int] = {}
_kill_self = False


def arm(name: str, nth: int = 1) -> None:
    _armed[name] = nth


def disarm_all() -> None:
    _armed.clear()


def hit(name: str) -> None:
    if not _armed or name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] > 0:
        return
    del _armed[name]
    if _kill_self:
        os.kill(os.getpid(), signal.SIGKILL)
    raise SimulatedCrash(name)


def arm_from_environment() -> None:
    """Arm the point named by ``GALLEONFS_CRASHPOINT`` to kill this process."""
    global _kill_self
    spec = os.environ.get("GALLEONFS_CRASHPOINT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    _kill_self = True
    arm(name, int(nth or "1"))
