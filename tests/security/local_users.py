"""Unprivileged local accounts made for one test, and the machine's mount table: what the
security tier's attacks run as and check against (fixtures in this tier's conftest.py)."""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from typing import Any


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


def create_user(name: str) -> LocalUser:
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return LocalUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def remove_user(user: LocalUser) -> None:
    # Processes a test left behind as this user would keep the account busy.
    subprocess.run(["pkill", "-KILL", "-u", str(user.uid)], capture_output=True, check=False)
    subprocess.run(["userdel", "--remove", user.name], capture_output=True, check=False)



def mount_table() -> list[str]:
    """The mount points of this machine, from the kernel (to assert nothing was mounted)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)
