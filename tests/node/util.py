"""Helpers for the daemon tiers: galleonctl calls, the one-line error contract, polling,
mounts, and the end-of-test check of a daemon (``finish``) that tests/conftest.py's daemon
fixtures run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from galleonfs.cli.output import to_dict
from galleonfs.engine.engine import NEEDS_CHECK_FILE
from galleonfs.engine.fsck import fsck
from galleonfs.fuse.kernel import _unescape
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

T = TypeVar("T")

# Log lines a quiet run must not have: the daemon's text format and the workers' format both
# put the level name between spaces.
LOUD_LINE = re.compile(r" (WARNING|ERROR|CRITICAL) ")
POLL_TIMEOUT_S = 30.0


def ctl_ok(daemon: RunningDaemon, *args: str) -> str:
    """Run galleonctl; assert exit 0 and a quiet stderr; return stdout."""
    done = daemon.ctl(*args)
    assert done.returncode == 0, f"galleonctl {' '.join(args)} exited {done.returncode}: {done.stderr}"
    assert done.stderr == "", f"galleonctl {' '.join(args)} wrote to stderr: {done.stderr}"
    return done.stdout


def ctl_json(daemon: RunningDaemon, *args: str) -> Any:
    return json.loads(ctl_ok(daemon, *args, "-o", "json"))


def api(daemon: RunningDaemon, op: str, *args: Any, **kwargs: Any) -> Any:
    """One call through the Python client, answered as ``-o json`` would print it.

    For setting a scene and polling: a galleonctl process costs ~0.3 s of start-up, a call
    ~1 ms. A fresh channel each time, so that a restarted daemon is found at once.
    """
    with Client(daemon.address, timeout_s=60) as client:
        reply = getattr(client, op)(*args, **kwargs)
    if isinstance(reply, list):
        return [to_dict(r) for r in reply]
    return None if reply is None else to_dict(reply)


def user_error(done: subprocess.CompletedProcess[str], code: int, *phrases: str,
               prog: str = "galleonctl") -> str:
    """Assert the user-error contract: exit ``code``, one line ``prog: error: ...``, no traceback.

    Returns the message. ``phrases`` must all appear in it (case-insensitive).
    """
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (
        f"exit {done.returncode}, expected {code}; stderr: {done.stderr!r}")
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {done.stderr!r}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert done.stdout == "", f"a failed command printed {done.stdout!r}"
    message = lines[0][len(f"{prog}: error: "):]
    for phrase in phrases:
        assert phrase.lower() in message.lower(), f"{phrase!r} not in {message!r}"
    return message


def wait_until(check: Callable[[], T | None], what: str, timeout_s: float = POLL_TIMEOUT_S) -> T:
    """Poll ``check`` (exceptions count as "not yet") until it returns a true value."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s} s (last: {last!r})")
        time.sleep(0.1)


def mounts_under(base: str | Path) -> list[str]:
    """Mount points at or below ``base``, from this process's mountinfo."""
    prefix = os.path.realpath(base)
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def is_mount(path: str | Path) -> bool:
    return str(os.path.realpath(path)) in mounts_under(path)


def loud_lines(path: Path, offset: int = 0) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = f.read()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if LOUD_LINE.search(line)]


def log_files(daemon: RunningDaemon) -> list[Path]:
    """The daemon's log and every mount worker's log."""
    return [daemon.log_path, *sorted((daemon.data_dir / "logs").glob("*.log"))]


def log_sizes(daemon: RunningDaemon) -> dict[Path, int]:
    return {p: p.stat().st_size for p in log_files(daemon) if p.exists()}


def new_loud_lines(daemon: RunningDaemon, since: dict[Path, int]) -> list[str]:
    out = []
    for path in log_files(daemon):
        out += [f"{path.name}: {line}" for line in loud_lines(path, since.get(path, 0))]
    return out


def assert_only_expected_loud(daemon: RunningDaemon, *patterns: str) -> None:
    """Every WARNING-or-worse line in the logs matches one of ``patterns``; each pattern matched."""
    loud = new_loud_lines(daemon, {})
    unexpected = [line for line in loud if not any(re.search(p, line) for p in patterns)]
    assert not unexpected, "unexpected log lines:\n" + "\n".join(unexpected)
    for p in patterns:
        assert any(re.search(p, line) for line in loud), f"no log line matches {p!r}:\n" + "\n".join(loud)


def write_synced(path: str | Path, data: bytes, mode: str = "wb") -> None:
    """Write, fsync and close: what a kill -9 of the worker must not lose (README)."""
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def statvfs_size(path: str | Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def allows_warnings(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("allow_warnings") is not None


def finish(daemon: RunningDaemon, *, check_logs: bool) -> None:
    """Stop (restarting first if a test left it killed), then check the data directory."""
    try:
        if daemon.proc is None:
            # A test that killed the daemon leaves its workers running; only a daemon can
            # stop them cleanly, so bring one up (it adopts them) and stop that.
            daemon.start()
        code = daemon.stop()
        left = mounts_under(daemon.base)
    finally:
        daemon.cleanup()
    assert code == 0, f"galleond exited with {code} on SIGTERM:\n{daemon.log()}"
    assert left == [], f"still mounted after a clean stop: {left}"
    dirs = sorted((daemon.data_dir / "volumes").glob("*")) + sorted((daemon.data_dir / "retained").glob("*"))
    for volume_dir in dirs:
        report = fsck(str(volume_dir))
        assert report.clean, f"{volume_dir}:\n{report.render()}"
        assert not (volume_dir / NEEDS_CHECK_FILE).exists(), f"{volume_dir} is left marked for check"
    if check_logs:
        loud = new_loud_lines(daemon, {})
        assert not loud, "galleond or a mount worker logged:\n" + "\n".join(loud)
