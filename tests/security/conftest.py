"""The security tier: each test does what an attacker (or an unlucky operator) does, against
real parts: a real galleond, real FUSE mounts, and real unprivileged local users that the test
creates and removes. Each asserts the refusal *and* that nothing changed on the host.

Fixtures: ``local_user`` (a fresh unprivileged account, removed afterwards) and the daemon
fixtures of the node tier (``daemon``, ``shared_daemon``, ``client``).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from node.conftest import client, daemon, module_daemon, shared_daemon  # noqa: F401  (fixtures)


@dataclass(frozen=True)
class LocalUser:
    """An unprivileged account on this machine, made for one test."""

    name: str
    uid: int
    gid: int
    home: str

    def run(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``command`` as this user (real uid/gid, no supplementary groups of root's),
        with a clean environment except what the caller passes in ``env``."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
               "LANG": "C.UTF-8", **kwargs.pop("env", {})}
        kwargs.setdefault("timeout", 120)
        return subprocess.run(command, user=self.uid, group=self.gid, extra_groups=[],
                              env=env, capture_output=True, text=True, check=False, **kwargs)


def _create_user(name: str) -> LocalUser:
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return LocalUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _remove_user(user: LocalUser) -> None:
    # Processes a test left behind as this user would keep the account busy.
    subprocess.run(["pkill", "-KILL", "-u", str(user.uid)], capture_output=True, check=False)
    subprocess.run(["userdel", "--remove", user.name], capture_output=True, check=False)


@pytest.fixture
def local_user() -> Iterator[LocalUser]:
    """A fresh unprivileged user (``gfs-<random>``), deleted with its home after the test."""
    user = _create_user(f"gfs-{uuid.uuid4().hex[:10]}")
    try:
        yield user
    finally:
        _remove_user(user)


@pytest.fixture
def other_user() -> Iterator[LocalUser]:
    """A second unprivileged user, for tests that need two (tenant A and tenant B)."""
    user = _create_user(f"gfs-{uuid.uuid4().hex[:10]}")
    try:
        yield user
    finally:
        _remove_user(user)


def mount_table() -> list[str]:
    """The mount points of this machine, from the kernel (to assert nothing was mounted)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)
