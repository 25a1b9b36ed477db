"""Worker control sockets (issue 9, finding 4), as another local user tries them.

The old address was the abstract name ``galleonfs/<volume id>``: any local user who read
the id in /proc/mounts could bind it first (the volume then failed to mount and was left
marked for check) or talk to the worker. Now the daemon binds a path socket in a 0700
directory and hands it to the worker. The daemon here lives in a directory every user can
walk through, so that only that 0700 directory stands in the way.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from node.util import allows_warnings, ctl_ok, finish

from galleonfs.engine.engine import NEEDS_CHECK_FILE
from galleonfs.errors import PermissionDenied
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.volops import channel, online
from galleonfs.volops.messages import Ping
from security.local_users import LocalUser

_SYSTEM_PYTHON = "/usr/bin/python3"     # users cannot run the venv's (under root's 0700 home)

# Bind the old abstract name, try to bind and to connect to the new path, then keep the
# abstract one and answer anyone who connects with a forged "ok".
_SQUATTER = r"""
import json, socket, sys
name, path = sys.argv[1], sys.argv[2]
squat = socket.socket(socket.AF_UNIX)
squat.bind("\0" + name)
squat.listen()
result = {"abstract": "bound"}
for what in ("bind", "connect"):
    s = socket.socket(socket.AF_UNIX)
    try:
        getattr(s, what)(path)
        result[what] = 0
    except OSError as exc:
        result[what] = exc.errno
print(json.dumps(result), flush=True)
while True:
    conn, _ = squat.accept()
    conn.sendall(b'{"ok": true, "pid": 1}\n')
    conn.close()
"""


@pytest.fixture
def open_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="gfs-ctl-", dir="/tmp"))
    try:
        for path in (base, base / "data", base / "mnt"):
            path.mkdir(exist_ok=True)
            path.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def open_daemon(open_base: Path, fuse_ok: None, request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    d = RunningDaemon(open_base, env={"GALLEONFS_MOUNT_ROOTS": str(open_base / "mnt")})
    try:
        d.start()
        yield d
    except BaseException:
        d.cleanup()
        raise
    finish(d, check_logs=not allows_warnings(request))


def test_a_squatter_cannot_stop_a_mount_nor_reach_the_worker(open_daemon: RunningDaemon,
                                                             local_user: LocalUser) -> None:
    d = open_daemon
    ctl_ok(d, "volume", "create", "v", "--size", "64M")
    volume_id = json.loads(ctl_ok(d, "volume", "get", "v", "-o", "json"))["id"]
    control_dir = d.data_dir / "run" / "control"
    info = os.stat(control_dir)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == 0
    sock_path = control_dir / channel.socket_file(volume_id)

    squatter = subprocess.Popen([_SYSTEM_PYTHON, "-c", _SQUATTER, f"galleonfs/{volume_id}", str(sock_path)],
                                user=local_user.uid, group=local_user.gid, extra_groups=[],
                                stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
    try:
        assert squatter.stdout is not None
        tried = json.loads(squatter.stdout.readline())
        # The old address was free for the taking; the new one cannot even be reached.
        assert tried == {"abstract": "bound", "bind": errno.EACCES, "connect": errno.EACCES}, tried

        mnt = d.data_dir.parent / "mnt" / "v"
        ctl_ok(d, "volume", "mount", "v", str(mnt))
        (mnt / "f").write_bytes(b"still mine")
        stats = json.loads(ctl_ok(d, "volume", "stats", "v", "-o", "json"))
        assert stats["mounted"] is True and stats["worker_pid"] > 1, stats   # the worker answered, not the squatter
        assert not (d.data_dir / "volumes" / volume_id / NEEDS_CHECK_FILE).exists()
        # Now that the worker listens, the user still cannot connect to it.
        probe = local_user.run([_SYSTEM_PYTHON, "-c", "import socket,sys; socket.socket(socket.AF_UNIX)"
                                ".connect(sys.argv[1])", str(sock_path)])
        assert probe.returncode != 0 and "PermissionError" in probe.stderr, probe.stderr
        assert (mnt / "f").read_bytes() == b"still mine"
        ctl_ok(d, "volume", "unmount", "v")
    finally:
        squatter.kill()
        squatter.wait()


_FAKE_WORKER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(b'{"ok": true, "pid": 1, "volume_id": "forged"}\n')
    conn.close()
"""


def test_the_daemon_trusts_no_control_socket_another_user_serves(local_user: LocalUser) -> None:
    """Should another user's socket ever sit where a worker's is expected, its answers are
    refused (the caller checks who listens: SO_PEERCRED) before a byte is sent to it."""
    where = Path(tempfile.mkdtemp(prefix="gfs-fake-", dir="/tmp"))
    os.chown(where, local_user.uid, local_user.gid)
    where.chmod(0o755)
    path = where / "worker.sock"
    fake = subprocess.Popen([_SYSTEM_PYTHON, "-c", _FAKE_WORKER, str(path)], user=local_user.uid,
                            group=local_user.gid, extra_groups=[], stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_UNIX) as plain:        # it does answer anyone ...
            plain.connect(str(path))
            assert b'"forged"' in plain.recv(4096)
        with pytest.raises(PermissionDenied) as refused:     # ... but not us
            trio.run(lambda: online.call(str(path), Ping(), timeout_s=5))
        assert f"served by uid {local_user.uid}" in str(refused.value)
    finally:
        fake.kill()
        fake.wait()
        shutil.rmtree(where, ignore_errors=True)
