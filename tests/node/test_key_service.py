"""KeyService's calls run on the daemon's trio loop, in the caller's context (issue 10).

A rekey runs as a task of the loop while the gRPC thread streams its progress. The task
must act for the caller: a token bound to a tenant must not reach another tenant's volume
through it (the task would otherwise start from the loop's own context, bound to no
tenant, and see every volume).
"""

from __future__ import annotations

import os
import subprocess
import sys

from galleonfs.errors import ExitCode
from galleonfs.testing.daemon import RunningDaemon
from node.util import ctl_ok, user_error


def as_token(daemon: RunningDaemon, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", daemon.address, *args],
                          capture_output=True, text=True, timeout=120,
                          env={**daemon.env, "GALLEONFS_TOKEN": secret})


def tenant_token(daemon: RunningDaemon, tenant: str) -> str:
    ctl_ok(daemon, "tenant", "create", tenant)
    done = daemon.ctl("token", "create", f"t{tenant}", "--role", "operator", "--tenant", tenant)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_rekey_acts_for_the_callers_tenant(daemon: RunningDaemon) -> None:
    ta, tb = tenant_token(daemon, "a"), tenant_token(daemon, "b")
    for token, name in ((ta, "va"), (tb, "vb")):
        done = as_token(daemon, token, "volume", "create", name, "--size", "8M")
        assert done.returncode == 0, done.stderr
    vb = os.path.join(daemon.data_dir, "volumes")
    before = sorted(os.listdir(vb))

    # a's token: b's volume does not exist for it, by name as by anything else.
    user_error(as_token(daemon, ta, "volume", "rekey", "vb"), ExitCode.NOT_FOUND, "volume 'vb' does not exist")
    # b's own token gets past the tenancy check, to the volume itself (it is not encrypted).
    user_error(as_token(daemon, tb, "volume", "rekey", "vb"), ExitCode.ERROR, "is not encrypted")
    assert sorted(os.listdir(vb)) == before
