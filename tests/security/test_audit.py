"""No state change without its audit record (issue 9, finding 7), against a real galleond.

* A call whose request is huge (hundreds of long labels) is recorded, its fields cut with a
  marker that says how much was left out; before, a record over 64 KiB was skipped and the
  call ran unrecorded while `audit verify` said intact.
* An audit log that cannot be written (its file system full, its reserve used up) refuses
  the call before it takes effect: UNAVAILABLE, exit 9, nothing created or deleted; once
  there is room again calls go through and the chain is intact.
* `audit verify` reads the files at their paths: a replaced audit.log is named as such
  (it read the daemon's open descriptor and said intact), and calls are refused until it is
  put back or galleond restarts.
* Rotation (audit.log -> audit.log.N) keeps one chain across files; verify checks across
  them and names the file of a bad line.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from node.util import api, ctl_json, ctl_ok, finish, user_error

from galleonfs.errors import ExitCode, GalleonError
from galleonfs.limits import audit_record_bytes_max
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

CREATE = "galleonfs.v1.VolumeService/Create"


def many_labels(count: int) -> dict[str, str]:
    """Valid labels of ~300 bytes each: 400 of them are ~120 KiB of request."""
    return {f"example.com/{'k' * 200}-{i:04d}": "v" * 63 for i in range(count)}


def audit_lines(daemon: RunningDaemon, name: str = "audit.log") -> list[dict[str, object]]:
    return [json.loads(line) for line in (daemon.data_dir / name).read_bytes().splitlines()]


def test_a_call_with_many_labels_is_recorded_with_what_was_cut(daemon: RunningDaemon) -> None:
    labels = many_labels(400)
    try:
        with Client(daemon.address) as client:
            client.create_volume("labelled", 64 << 20, labels=labels)
        answered = "OK"
    except GalleonError as exc:                       # a label cap would refuse it: recorded all the same
        answered = exc.grpc_status
    calls = ctl_json(daemon, "audit", "list")
    assert [(c["method"], c["volume"], c["code"]) for c in calls] == [(CREATE, "labelled", answered)]
    raw = (daemon.data_dir / "audit.log").read_bytes().splitlines()
    assert len(raw) == 2 and all(len(line) + 1 <= audit_record_bytes_max for line in raw)
    recorded = json.loads(calls[0]["request_json"])["labels"]
    marker = recorded.pop("…", None)
    assert all(labels[k] == v for k, v in recorded.items())           # what is there is exact
    if marker is None:
        assert recorded == labels
    else:
        left_out = int(marker.removeprefix("+").removesuffix(" entries"))
        assert len(recorded) + left_out == len(labels) and left_out > 0, marker
    assert ctl_ok(daemon, "audit", "verify") == "audit log intact: 2 records\n"
    if answered == "OK":
        ctl_ok(daemon, "volume", "delete", "labelled")


@pytest.fixture
def small_audit_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs holding the audit log, bind-mounted over DATA_DIR/audit.log: filling it
    fills the audit log's file system and nothing else's."""
    fs = tmp_path / "auditfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M,mode=0700", "tmpfs", str(fs)], check=True)
    try:
        yield fs
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


@pytest.mark.allow_warnings            # the refused calls are logged as ERRORs
def test_an_audit_log_that_cannot_be_written_refuses_the_call_before_it_runs(
        tmp_path: Path, fuse_ok: None, small_audit_fs: Path) -> None:
    (tmp_path / "node").mkdir()
    d = RunningDaemon(tmp_path / "node")
    audit = d.data_dir / "audit.log"
    d.data_dir.mkdir(mode=0o700)
    (small_audit_fs / "audit.log").touch(mode=0o600)
    audit.touch(mode=0o600)
    subprocess.run(["mount", "--bind", str(small_audit_fs / "audit.log"), str(audit)], check=True)
    try:
        d.start()
        ctl_ok(d, "volume", "create", "first", "--size", "16M")
        filler = small_audit_fs / "filler"
        # The audit log's file system, full.
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError, match="No space left on device"):
            while True:
                f.write(b"\0" * 4096)

        # The log's reserve (allocated past its end) still takes records: an operator on a
        # full disk can unmount and delete. Refused calls (bad names, ~30 KiB of labels
        # each) eat it up, as any calls would, until the log can take no more.
        ctl_ok(d, "volume", "create", "second", "--size", "16M")
        recorded = 0
        with Client(d.address) as client:
            while True:
                with pytest.raises(GalleonError) as refused:
                    client.create_volume("Bad_Name", 16 << 20, labels=many_labels(100))
                if refused.value.grpc_status != "INVALID_ARGUMENT":
                    break
                recorded += 1
                assert recorded < 100, "the audit log took far more than its reserve"
        assert recorded >= 15, f"the reserve took only {recorded} calls"      # ~1 MiB of records
        before = sorted(os.listdir(d.data_dir / "volumes"))

        for _ in range(2):              # twice: the first failure left the file as it was
            with pytest.raises(GalleonError) as refused, Client(d.address) as client:
                client.create_volume("third", 16 << 20, labels=many_labels(100))
            assert (type(refused.value).__name__, refused.value.exit_code) == ("AuditUnavailable",
                                                                               ExitCode.UNAVAILABLE)
            assert str(refused.value).startswith(
                "the call was not carried out: its audit record cannot be written (cannot append to "
                f"the audit log {audit}: No space left on device)"), str(refused.value)
        assert [v["name"] for v in api(d, "list_volumes")] == ["first", "second"]
        assert sorted(os.listdir(d.data_dir / "volumes")) == before
        assert audit.read_bytes().endswith(b"\n")                  # no torn line left behind

        filler.unlink()                                            # room again: calls go through
        ctl_ok(d, "volume", "create", "third", "--size", "16M")
        assert ctl_ok(d, "audit", "verify") == f"audit log intact: {2 * (3 + recorded)} records\n"
        calls = ctl_json(d, "audit", "list")
        assert [(c["volume"], c["code"]) for c in calls if c["code"] == "OK"] == [
            ("first", "OK"), ("second", "OK"), ("third", "OK")]
        assert len(calls) == 3 + recorded
    finally:
        if d.proc is not None:
            assert d.stop() == 0
        subprocess.run(["umount", str(audit)], check=True)     # before finish() looks for mounts
        finish(d, check_logs=False)


@pytest.mark.allow_warnings
def test_verify_notices_a_replaced_audit_log_and_calls_wait_for_it(daemon: RunningDaemon) -> None:
    ctl_ok(daemon, "volume", "create", "one", "--size", "16M")
    path = daemon.data_dir / "audit.log"
    copy = daemon.data_dir / "audit.log.copy"
    shutil.copy2(path, copy)
    os.replace(copy, path)                  # the same bytes, another file: what verify must see
    user_error(daemon.ctl("audit", "verify"), ExitCode.CORRUPT,
               f"audit log {path} is broken: the file at {path} is not the audit log galleond "
               f"writes to (it was replaced or moved")
    user_error(daemon.ctl("volume", "delete", "one"), ExitCode.UNAVAILABLE,
               "not carried out", "restart galleond")
    assert [v["name"] for v in api(daemon, "list_volumes")] == ["one"]

    saved = path.read_bytes()
    path.unlink()
    user_error(daemon.ctl("audit", "verify"), ExitCode.CORRUPT,
               f"the audit log {path} was removed while galleond was writing to it")
    path.write_bytes(saved)                 # put back, as a new file: still not the daemon's
    user_error(daemon.ctl("volume", "delete", "one"), ExitCode.UNAVAILABLE, "not carried out")

    # A restart continues the chain in the file at the path.
    assert daemon.stop() == 0
    daemon.start()
    ctl_ok(daemon, "volume", "delete", "one")
    assert ctl_ok(daemon, "audit", "verify") == "audit log intact: 4 records\n"
    assert [(c["volume"], c["code"]) for c in ctl_json(daemon, "audit", "list")] == [
        ("one", "OK"), ("one", "OK")]


@pytest.fixture
def rotating_daemon(tmp_path: Path, fuse_ok: None) -> Iterator[RunningDaemon]:
    d = RunningDaemon(tmp_path, env={"GALLEONFS_AUDIT_ROTATE_BYTES": "256K"})
    try:
        d.start()
        yield d
    finally:
        finish(d, check_logs=False)


def test_rotation_keeps_one_chain_across_files(rotating_daemon: RunningDaemon) -> None:
    d = rotating_daemon
    with Client(d.address) as client:
        for i in range(24):                   # refused (bad name), recorded: ~32 KiB each
            with pytest.raises(GalleonError):
                client.create_volume(f"Bad_{i}", 64 << 20, labels=many_labels(200))
    files = sorted(p.name for p in d.data_dir.glob("audit.log*"))
    assert files[:3] == ["audit.log", "audit.log.1", "audit.log.2"], files
    assert all((d.data_dir / f).stat().st_size <= 256 * 1024 for f in files)
    records = [r for name in [*files[1:], "audit.log"] for r in audit_lines(d, name)]
    assert [r["seq"] for r in records] == list(range(1, 49))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    assert ctl_ok(d, "audit", "verify") == "audit log intact: 48 records\n"
    calls = ctl_json(d, "audit", "list")
    assert [(c["volume"], c["code"]) for c in calls] == [(f"Bad_{i}", "INVALID_ARGUMENT") for i in range(24)]

    first = d.data_dir / "audit.log.1"
    original = first.read_bytes()
    lines = original.splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"INVALID_ARGUMENT"', b'"OK"')
    first.write_bytes(b"".join(lines))
    user_error(d.ctl("audit", "verify"), ExitCode.CORRUPT,
               f"audit log {first} is broken at line 2: its contents do not match its hash")
    first.unlink()                                    # an operator "archived" the oldest file
    user_error(d.ctl("audit", "verify"), ExitCode.CORRUPT,
               "is broken at line 1: it is record", "but record 1 should come next")
    first.write_bytes(original)

    # A restart continues the chain from the last file.
    assert d.stop() == 0
    d.start()
    with pytest.raises(GalleonError), Client(d.address) as client:
        client.create_volume("Bad_after", 64 << 20)
    assert ctl_ok(d, "audit", "verify") == "audit log intact: 50 records\n"
