"""Named crash points (STYLE: "crash points are named and armed by the tests").

The engine calls ``hit("journal.after_append_before_sync")`` at each point where a crash
would leave a distinct on-disk state. Unarmed, ``hit`` is a check of an empty dict.

``POINTS`` registers every name, with the state a crash there leaves. Arming a name that is
not registered raises, so a test with a misspelt point fails instead of silently testing
nothing; a test (tests/unit/test_crashpoints.py) checks that the code hits exactly these.

Tests arm a point in-process (``arm``), which raises ``SimulatedCrash`` there; the power
cut is then modelled by the faulty storage double. A real process can be armed through
the environment, ``GALLEONFS_CRASHPOINT=name[:nth]``, which makes it ``SIGKILL`` itself
at the nth hit: the kill -9 tests use that to stop a mount worker at an exact step.
"""

from __future__ import annotations

import os
import signal

from ..errors import InvalidArgument

POINTS: dict[str, str] = {
    "segment.after_append": "block frames written to a data segment, no journal record names them yet",
    "journal.after_append_before_sync": "a journal record written, not yet synced",
    "commit.after_data_sync_before_journal_sync": "a commit synced the data segments, not the journal",
    "checkpoint.before_meta_commit": "a checkpoint synced the journal, the metadata store not committed",
    "checkpoint.after_meta_commit": "the metadata store committed, the journal below it not yet deleted",
    "recovery.after_restoring_inline_frames": "a recovery wrote inline frames back to their segments, "
                                              "not yet synced, nothing checkpointed",
}


class SimulatedCrash(BaseException):
    """Raised at an armed crash point. A ``BaseException`` so that no handler swallows it."""


_armed: dict[str, int] = {}
_kill_self = False


def arm(name: str, nth: int = 1) -> None:
    """Crash at the ``nth`` hit of point ``name`` (one of ``POINTS``)."""
    if name not in POINTS:
        raise InvalidArgument(f"unknown crash point {name!r}; known: {', '.join(sorted(POINTS))}")
    if nth < 1:
        raise InvalidArgument(f"crash point {name}: the hit to crash at must be 1 or more, not {nth}")
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
    try:
        count = int(nth or "1")
    except ValueError:
        raise InvalidArgument(f"GALLEONFS_CRASHPOINT={spec!r}: the hit after ':' must be a number") from None
    arm(name, count)
    _kill_self = True
