"""The audit log end to end: a real galleond, the real galleonctl, a real mount.

State-changing calls (a failed one included) are recorded with who made them and their
result, reads are not; the chain survives a daemon restart; and an edited or removed line
makes `galleonctl audit verify` fail with exit 7 and a sentence naming the line.

Each call is two records (its intent, written before it runs, and its outcome); `audit list`
shows one line per call, numbered by its intent's record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from node.util import ctl_json, ctl_ok, user_error

from galleonfs.errors import ExitCode
from galleonfs.testing.daemon import RunningDaemon

CREATE, MOUNT = "galleonfs.v1.VolumeService/Create", "galleonfs.v1.VolumeService/Mount"
UNMOUNT, DELETE = "galleonfs.v1.VolumeService/Unmount", "galleonfs.v1.VolumeService/Delete"


def test_audit_records_changes_and_verify_catches_tampering(daemon: RunningDaemon, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    ctl_ok(daemon, "volume", "create", "data", "--size", "64M")
    user_error(daemon.ctl("volume", "create", "Bad_Name", "--size", "64M"), ExitCode.USAGE,
               "invalid volume name 'Bad_Name'")
    ctl_ok(daemon, "volume", "mount", "data", str(mnt))
    ctl_ok(daemon, "volume", "list")                              # a read: not audited
    ctl_ok(daemon, "volume", "get", "data")
    ctl_ok(daemon, "volume", "unmount", str(mnt))                 # by path: the volume is still named
    ctl_ok(daemon, "volume", "delete", "data")

    records = ctl_json(daemon, "audit", "list")
    assert [(r["method"], r["volume"], r["code"]) for r in records] == [
        (CREATE, "data", "OK"), (CREATE, "Bad_Name", "INVALID_ARGUMENT"), (MOUNT, "data", "OK"),
        (UNMOUNT, "data", "OK"), (DELETE, "data", "OK")]
    assert [r["seq"] for r in records] == ["1", "3", "5", "7", "9"]
    assert records[1]["message"].startswith("invalid volume name 'Bad_Name': ")
    assert all(r["message"] == "" for r in records if r["code"] == "OK")
    for r in records:
        peer = r["peer"]
        assert (peer["transport"], peer["credentials_known"], peer["uid"], peer["gid"]) == (
            "unix", True, os.getuid(), os.getgid()), peer
        assert peer["pid"] > 0 and peer["pid"] != daemon.pid
    assert len({r["peer"]["pid"] for r in records}) == 5           # one galleonctl process each
    assert json.loads(records[0]["request_json"]) == {
        "name": "data", "size_bytes": str(64 << 20), "access_modes": ["READ_WRITE_ONCE"],
        "type": "PERSISTENT"}
    assert json.loads(records[3]["request_json"]) == {"path": str(mnt)}
    lines = (daemon.data_dir / "audit.log").read_bytes().splitlines()
    assert [json.loads(line)["phase"] for line in lines] == ["intent", "outcome"] * 5
    assert [json.loads(line).get("call") for line in lines[1::2]] == [1, 3, 5, 7, 9]
    assert [r["hash"] for r in records] == [json.loads(line)["hash"] for line in lines[0::2]]

    assert [r["seq"] for r in ctl_json(daemon, "audit", "list", "--volume", "data")] == ["1", "5", "7", "9"]
    assert len(ctl_json(daemon, "audit", "list", "--since", "1h")) == 5
    assert ctl_ok(daemon, "audit", "list", "--since", "2999-01-01T00:00:00Z") == "no audit records\n"
    table = ctl_ok(daemon, "audit", "list").splitlines()
    assert table[0].split() == ["SEQ", "TIME", "WHO", "METHOD", "VOLUME", "RESULT"]
    assert f"uid {os.getuid()} gid {os.getgid()} pid" in table[2]
    assert table[2].split()[8:12] == ["VolumeService/Create", "Bad_Name", "INVALID_ARGUMENT:", "invalid"]
    user_error(daemon.ctl("audit", "list", "--since", "yesterday"), ExitCode.USAGE,
               "invalid --since 'yesterday'")
    assert ctl_ok(daemon, "audit", "verify") == "audit log intact: 10 records\n"

    # The chain head is recovered at start: records after a restart continue it.
    assert daemon.stop() == 0
    daemon.start()
    ctl_ok(daemon, "volume", "create", "two", "--size", "64M")
    ctl_ok(daemon, "volume", "delete", "two")
    assert ctl_ok(daemon, "audit", "verify") == "audit log intact: 14 records\n"

    path = daemon.data_dir / "audit.log"
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    lines[4] = lines[4].replace(str(mnt).encode(), b"/elsewhere")        # the mount's intent
    path.write_bytes(b"".join(lines))
    user_error(daemon.ctl("audit", "verify"), ExitCode.CORRUPT,
               f"audit log {path} is broken at line 5: its contents do not match its hash "
               f"(the line was edited)")

    path.write_bytes(b"".join(original.splitlines(keepends=True)[:1] + original.splitlines(keepends=True)[2:]))
    user_error(daemon.ctl("audit", "verify"), ExitCode.CORRUPT,
               "broken at line 2: it is record 3 but record 2 should come next (a line was removed")

    path.write_bytes(b"".join(original.splitlines(keepends=True)[:-1]))
    user_error(daemon.ctl("audit", "verify"), ExitCode.CORRUPT,
               "broken at line 14: the log ends at record 13 but the daemon wrote up to record 14")
    path.write_bytes(original)
    assert ctl_ok(daemon, "audit", "verify") == "audit log intact: 14 records\n"
