"""Backups as users drive them (issue 13): a real galleond, real FUSE mounts, real galleonctl,
a directory target and a moto S3 server on loopback.

What each test holds a user to:

* a full backup and an incremental one (after changes) of a mounted volume each restore, on
  their own, into a new volume equal file by file to the tree when it was backed up:
  contents, modes, owners, times, xattrs, symlinks, hard links, holes of sparse files; the
  incremental sends only what changed; the restored volumes are fsck-clean;
* a fresh daemon given only the target's address and key lists and restores the backups
  (disaster recovery);
* ``backup verify --deep`` passes, and names a damaged pack (exit 7) after one is changed;
* wrong credentials, an unreachable endpoint, a missing bucket, a wrong key: one line, the
  stable exit code, nothing registered;
* a backup policy runs on its schedule with its hooks; retention keeps exactly the newest
  ``--keep-last``; a failing pre-hook fails the run with a message naming it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from node.util import (
    api,
    assert_only_expected_loud,
    ctl_json,
    ctl_ok,
    finish,
    mounts_under,
    user_error,
    wait_until,
)

from galleonfs.backup.testing import MotoServer
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

from .util import CREDENTIALS_ENV, new_bucket

MiB = 1024 * 1024
KEY_ENV = "GALLEONTEST_BACKUP_KEY"
ENV = {KEY_ENV: "correct horse battery staple", f"{CREDENTIALS_ENV}_ACCESS_KEY_ID": "testing",
       f"{CREDENTIALS_ENV}_SECRET_ACCESS_KEY": "testing"}


def new_daemon(base: Path, env: dict[str, str] = ENV) -> RunningDaemon:
    base.mkdir()
    return RunningDaemon(base, env=env)


@pytest.fixture
def bdaemon(tmp_path: Path, fuse_ok: None, request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    """A galleond whose environment holds the repository passphrase and S3 credentials."""
    d = new_daemon(tmp_path / "node")
    try:
        d.start()
        yield d
    except BaseException:
        d.cleanup()
        raise
    finish(d, check_logs=request.node.get_closest_marker("allow_warnings") is None)


def add_target(d: RunningDaemon, kind: str, tmp_path: Path, moto: MotoServer | None) -> tuple[str, list[str]]:
    if kind == "dir":
        args = ["offsite", f"file://{tmp_path / 'backups'}", "--key-env", KEY_ENV]
    else:
        assert moto is not None
        args = ["offsite", f"s3://{new_bucket(moto)}/galleon", "--endpoint", moto.endpoint,
                "--region", "us-east-1", "--credentials-env", CREDENTIALS_ENV, "--key-env", KEY_ENV]
    out = ctl_ok(d, "backup-target", "create", *args)
    assert "a new repository" in out, out
    return "offsite", args


# --- the tree, as a user sees it ------------------------------------------------------------
def populate(root: Path) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_bytes(b"alpha\n" * 1000)
    (root / "docs" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "docs" / "same.bin").write_bytes(b"\x07" * 200_000)        # dedups with itself
    os.chmod(root / "docs" / "b.bin", 0o640)
    os.chown(root / "docs" / "b.bin", 1234, 5678)
    os.setxattr(root / "docs" / "a.txt", "user.origin", b"scanner-7")
    os.symlink("docs/a.txt", root / "link")
    os.link(root / "docs" / "a.txt", root / "hard")
    with open(root / "sparse", "wb") as f:                              # a hole of 8 MiB
        f.seek(8 * MiB)
        f.write(b"tail")
    (root / "empty-dir").mkdir(mode=0o700)
    os.utime(root / "docs" / "b.bin", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))


def change(root: Path) -> None:
    with open(root / "docs" / "b.bin", "r+b") as f:                     # one block changed
        f.seek(65536)
        f.write(b"X" * 100)
    (root / "docs" / "same.bin").unlink()
    (root / "new.txt").write_text("added after the first backup\n")
    os.rename(root / "empty-dir", root / "renamed-dir")
    os.setxattr(root / "renamed-dir", "user.note", b"on a directory")


def tree(root: Path) -> dict[str, Any]:
    """Everything a user can tell about a tree (atime and ctime aside), by path."""
    out: dict[str, Any] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".snapshots")
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            entry: dict[str, Any] = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                                     "nlink": st.st_nlink, "mtime_ns": st.st_mtime_ns,
                                     "xattrs": {x: os.getxattr(path, x, follow_symlinks=False).hex()
                                                for x in sorted(os.listxattr(path, follow_symlinks=False))}}
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                entry["size"] = st.st_size
                entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
                entry["sparse"] = st.st_blocks * 512 < st.st_size // 2
                entry["hardlink_of"] = inodes.setdefault(st.st_ino, rel)
            out[rel] = entry
    return out


def backup_create(d: RunningDaemon, volume: str, target: str) -> dict[str, Any]:
    ctl_ok(d, "backup", "create", volume, "--target", target)
    return ctl_json(d, "backup", "list", volume)[-1]  # type: ignore[no-any-return]


def restore_and_read(d: RunningDaemon, ref: str, name: str, mount: Path) -> dict[str, Any]:
    out = ctl_ok(d, "backup", "restore", ref, "--to", name)
    assert f"restored to new volume {name}" in out, out
    mount.mkdir()
    api(d, "mount_volume", name, str(mount))
    try:
        return tree(mount)
    finally:
        api(d, "unmount_volume", name=name)


# --- full and incremental, restored -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_full_and_incremental_restore_file_by_file_and_on_a_fresh_node(
        kind: str, bdaemon: RunningDaemon, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    d = bdaemon
    moto = request.getfixturevalue("moto") if kind == "s3" else None
    target, target_args = add_target(d, kind, tmp_path, moto)
    mnt = tmp_path / "db"
    mnt.mkdir()
    api(d, "create_volume", "db", 64 * MiB)
    api(d, "mount_volume", "db", str(mnt))
    populate(mnt)
    first_tree = tree(mnt)
    assert first_tree["sparse"]["sparse"] and first_tree["docs/a.txt"]["hardlink_of"] == "hard"
    full = backup_create(d, "db", target)
    assert full["parent"] == "" and full["target"] == target
    assert int(full["bytes_new"]) >= 300_000           # the random file at least was sent

    change(mnt)
    second_tree = tree(mnt)
    incr = backup_create(d, "db", target)
    assert incr["parent"] == full["id"]
    # Only the changed block and the new small file went: far less than the first backup.
    assert int(incr["bytes_new"]) <= 2 * 65536, incr
    # The first backup's base snapshot was dropped; the second is kept as the next base.
    snaps = [s["name"] for s in api(d, "list_snapshots", "db")]
    assert len(snaps) == 1 and snaps[0] == incr["snapshot"]
    api(d, "unmount_volume", name="db")

    assert restore_and_read(d, f"db@{full['id']}", "r-full", tmp_path / "r-full") == first_tree
    assert restore_and_read(d, f"db@{incr['id']}", "r-incr", tmp_path / "r-incr") == second_tree

    ok = ctl_ok(d, "backup", "verify", target, "--deep")
    assert "OK" in ok and "2 backups" in ok, ok

    # Disaster recovery: a new node with nothing but the address and the key.
    fresh = new_daemon(tmp_path / "fresh")
    fresh.start()
    try:
        out = ctl_ok(fresh, "backup-target", "create", *target_args)
        assert "the existing repository" in out, out
        listed = ctl_json(fresh, "backup", "list", "db")
        assert [b["id"] for b in listed] == [full["id"], incr["id"]]
        assert restore_and_read(fresh, f"db@{incr['id']}", "db", tmp_path / "dr") == second_tree
    except BaseException:
        fresh.cleanup()
        raise
    finish(fresh, check_logs=True)


# --- damage and bad input ---------------------------------------------------------------------------
def test_verify_names_a_damaged_pack_and_bad_targets_get_one_line(
        bdaemon: RunningDaemon, tmp_path: Path, moto: MotoServer) -> None:
    d = bdaemon
    target, _ = add_target(d, "dir", tmp_path, None)
    api(d, "create_volume", "v", 16 * MiB)
    mnt = tmp_path / "v"
    mnt.mkdir()
    api(d, "mount_volume", "v", str(mnt))
    (mnt / "f").write_bytes(os.urandom(200_000))
    made = backup_create(d, "v", target)
    # Two at once: they run one after the other, the second on top of the first.
    jobs = [subprocess.Popen([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", d.address,
                              "backup", "create", "v", "--target", target], env=d.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [job.wait(timeout=120) for job in jobs] == [0, 0], [job.stderr.read() for job in jobs if job.stderr]
    three = ctl_json(d, "backup", "list", "v")
    assert [b["parent"] for b in three] == ["", three[0]["id"], three[1]["id"]]
    assert [s["name"] for s in api(d, "list_snapshots", "v")] == [three[2]["snapshot"]]
    for b in three[1:]:
        out = ctl_ok(d, "backup", "delete", f"v@{b['id']}")
        assert f"v@{b['id']} deleted from {target};" in out and "freed" in out, out
    # A backup with data of its own: deleting it frees that data (GC runs after a delete).
    (mnt / "g").write_bytes(os.urandom(400_000))
    own = backup_create(d, "v", target)
    with Client(d.address, timeout_s=60) as client:
        reply = client.delete_backup(f"v@{own['id']}")
    assert reply.gc_error == "" and reply.freed_bytes >= 400_000, reply
    (mnt / "g").unlink()
    # The backup that is kept is whole.
    assert "OK (1 backups" in ctl_ok(d, "backup", "verify", target, "--deep")
    api(d, "unmount_volume", name="v")
    # The human forms, as an operator reads them.
    listing = ctl_ok(d, "backup", "list", "v")
    assert listing.splitlines()[0].split() == ["BACKUP", "TARGET", "TIME", "SNAPSHOT", "USED", "SENT"]
    assert f"v@{made['id']}" in listing and made["snapshot"] in listing
    assert f"id: {made['id']}" in ctl_ok(d, "backup", "get", f"v@{made['id']}")
    assert f"id: {made['id']}" in ctl_ok(d, "backup", "get", f"v@{made['id'][:15]}")   # b-YYYYMMDDTHHMM
    assert f"file://{tmp_path / 'backups'}" in ctl_ok(d, "backup-target", "list")
    # Mutations are audited (reads are not), the streamed Create like a unary call.
    calls = {(c["method"], c["volume"], c["code"]) for c in ctl_json(d, "audit", "list")}
    assert ("galleonfs.v1.BackupService/Create", "v", "OK") in calls, calls
    assert ("galleonfs.v1.BackupTargetService/Create", "", "OK") in calls, calls
    assert not any(m.endswith(("BackupService/List", "BackupService/Get")) for m, _v, _c in calls)
    packs = sorted((tmp_path / "backups" / "packs").rglob("*"))
    pack = next(p for p in packs if p.is_file())
    data = bytearray(pack.read_bytes())
    data[100] ^= 0xFF
    pack.write_bytes(bytes(data))
    done = d.ctl("backup", "verify", target, "--deep")
    assert done.returncode == 7, done
    assert pack.name in done.stderr and "Traceback" not in done.stderr
    # A restore names the damaged object, and leaves no half-restored volume behind.
    user_error(d.ctl("backup", "restore", f"v@{made['id']}", "--to", "w"), 7, pack.name)
    assert [v["name"] for v in api(d, "list_volumes")] == ["v"]

    bucket = new_bucket(moto)
    s3 = ["--endpoint", moto.endpoint, "--region", "us-east-1", "--key-env", KEY_ENV]
    user_error(d.ctl("backup-target", "create", "nocreds", f"s3://{bucket}/p", *s3,
                     "--credentials-env", "NOT_SET_ANYWHERE"), 8, "NOT_SET_ANYWHERE_ACCESS_KEY_ID")
    user_error(d.ctl("backup-target", "create", "nobucket", "s3://no-such-bucket-here/p", *s3,
                     "--credentials-env", CREDENTIALS_ENV), 3, "no-such-bucket-here")
    user_error(d.ctl("backup-target", "create", "away", f"s3://{bucket}/p", "--endpoint", "http://127.0.0.1:9",
                     "--region", "us-east-1", "--key-env", KEY_ENV, "--credentials-env", CREDENTIALS_ENV),
               9, "127.0.0.1:9")
    user_error(d.ctl("backup-target", "create", "nokey", f"file://{tmp_path / 'other'}",
                     "--key-env", "UNSET_KEY_VAR"), 1, "UNSET_KEY_VAR")
    user_error(d.ctl("backup-target", "create", "relative", "backups/here", "--key-env", KEY_ENV), 2, "file:///path")
    user_error(d.ctl("backup", "restore", "v@b-nonexistent", "--to", "w"), 3, "no backup b-nonexistent")
    user_error(d.ctl("backup", "create", "v", "--target", "nosuch"), 3, "backup target 'nosuch' does not exist")
    user_error(d.ctl("backup-target", "create", "Bad_Name", f"file://{tmp_path / 'x'}", "--key-env", KEY_ENV),
               2, "backup target name")
    user_error(d.ctl("backup-target", "create", "x", f"file://{tmp_path / 'x'}", "--key-env", "lower"),
               2, "not an environment variable name")
    user_error(d.ctl("backup-target", "create", target, f"file://{tmp_path / 'x'}", "--key-env", KEY_ENV),
               4, "already exists")
    ref = f"v@{made['id']}"
    user_error(d.ctl("backup", "restore", ref, "--to", "v"), 4, "already exists")
    user_error(d.ctl("backup", "restore", "no-at-sign", "--to", "w"), 2, "VOLUME@b-")
    user_error(d.ctl("backup", "create", "v", "--target", target, "--snapshot", "v@nosuch"), 3, "no snapshot 'nosuch'")
    policy = ["backup-policy", "create", "p", "--target", target]
    user_error(d.ctl(*policy, "--schedule", "every day", "--keep-last", "1"), 2, "schedule")
    user_error(d.ctl(*policy, "--schedule", "0 2 * * *"), 2, "must keep something")
    user_error(d.ctl("backup-policy", "create", "p", "--target", "nosuch", "--schedule", "0 2 * * *",
                     "--keep-daily", "7"), 3, "backup target 'nosuch'")
    user_error(d.ctl(*policy, "--schedule", "0 2 * * *", "--keep-daily", "7", "--hook-timeout", "0"), 2, "--hook-timeout must be more than 0")
    assert ctl_json(d, "backup-policy", "list") == []
    names = [t["name"] for t in ctl_json(d, "backup-target", "list")]
    assert names == [target]
    assert [b["id"] for b in ctl_json(d, "backup", "list", "v")] == [made["id"]]     # nothing harmed


def test_wrong_key_is_refused_without_registering(bdaemon: RunningDaemon, tmp_path: Path) -> None:
    d = bdaemon
    add_target(d, "dir", tmp_path, None)
    other = new_daemon(tmp_path / "other", {**ENV, KEY_ENV: "another passphrase"})
    other.start()
    try:
        done = other.ctl("backup-target", "create", "offsite", f"file://{tmp_path / 'backups'}", "--key-env", KEY_ENV)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1 and "key" in done.stderr.lower(), done.stderr
        assert ctl_json(other, "backup-target", "list") == []
    except BaseException:
        other.cleanup()
        raise
    finish(other, check_logs=True)


# --- policies -----------------------------------------------------------------------------------------
@pytest.mark.allow_warnings
def test_policy_runs_hooks_and_keeps_exactly_the_newest(bdaemon: RunningDaemon, tmp_path: Path) -> None:
    d = bdaemon
    target, _ = add_target(d, "dir", tmp_path, None)
    api(d, "create_volume", "pv", 16 * MiB, labels={"app": "db"})
    marks = tmp_path / "hooks.log"
    # A hook runs as galleond (root): an operator may back up, but not create a policy.
    operator = d.ctl("token", "create", "ops", "--role", "operator", check=True).stdout.strip()
    as_operator = {**d.env, "GALLEONFS_TOKEN": operator}
    command = [sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", d.address]
    refused = subprocess.run([*command, "backup-policy", "create", "sneaky", "--schedule", "0 2 * * *",
                              "--target", target, "--keep-last", "1", "--pre-hook", "id > /tmp/pwned"],
                             env=as_operator, capture_output=True, text=True, timeout=120)
    user_error(refused, 8, "admin")
    assert subprocess.run([*command, "backup", "create", "pv", "--target", target], env=as_operator,
                          capture_output=True, timeout=120).returncode == 0
    ctl_ok(d, "backup-policy", "create", "often", "--schedule", "* * * * * */2", "--selector", "app=db",
           "--target", target, "--keep-last", "2",
           "--pre-hook", f"echo pre $GALLEONFS_VOLUME >> {marks}",
           "--post-hook", f"echo post $GALLEONFS_VOLUME >> {marks}")
    wait_until(lambda: marks.exists() and marks.read_text().count("post pv") >= 3, "three policy runs", 60)
    ctl_ok(d, "backup-policy", "delete", "often")

    def settled() -> list[dict[str, Any]] | None:
        """The backups once a run that was in flight has finished (its retention too)."""
        before = (marks.read_text(), [b["id"] for b in ctl_json(d, "backup", "list", "pv")])
        time.sleep(1.5)
        after = ctl_json(d, "backup", "list", "pv")
        return after if before == (marks.read_text(), [b["id"] for b in after]) else None
    backups = wait_until(settled, "the last policy run to finish")
    lines = marks.read_text().splitlines()
    assert lines[:2] == ["pre pv", "post pv"], lines
    assert len(backups) == 2, [b["id"] for b in backups]
    # The newest backup is among those kept: its snapshot is the volume's one base snapshot.
    assert [s["name"] for s in api(d, "list_snapshots", "pv")] == [backups[-1]["snapshot"]]

    ctl_ok(d, "backup-policy", "create", "broken", "--schedule", "* * * * * */2", "--target", target,
           "--keep-last", "1", "--selector", "app=db", "--pre-hook", "echo quiesce failed >&2; exit 3")

    def failed() -> Any:
        policies = {p["name"]: p for p in ctl_json(d, "backup-policy", "list")}
        return policies["broken"]["last_error"]
    error = wait_until(failed, "the broken policy's run")
    table = ctl_ok(d, "backup-policy", "list")
    assert "broken" in table and "app=db" in table and "pre-hook failed" in table
    assert "pre-hook failed with exit code 3 (quiesce failed)" in error, error
    ctl_ok(d, "backup-policy", "delete", "broken")
    ctl_ok(d, "backup-policy", "create", "slow", "--schedule", "* * * * * */2", "--target", target,
           "--keep-last", "1", "--selector", "app=db", "--pre-hook", "sleep 30", "--hook-timeout", "0.5")

    def timed_out() -> Any:
        return {p["name"]: p for p in ctl_json(d, "backup-policy", "list")}["slow"]["last_error"]
    error = wait_until(timed_out, "the slow policy's run")
    assert "pre-hook did not finish within 0.5 s" in error, error
    ctl_ok(d, "backup-policy", "delete", "slow")
    assert len(ctl_json(d, "backup", "list", "pv")) == 2
    assert_only_expected_loud(d, r"backup policy broken, volume pv: the backup's pre-hook failed",
                              r"backup policy slow, volume pv: the backup's pre-hook did not finish")


# --- progress over the API, and an encrypted volume ---------------------------------------------
def test_an_encrypted_volume_backs_up_and_restores_and_progress_is_streamed(
        tmp_path: Path, fuse_ok: None) -> None:
    """The target holds no plaintext of the encrypted volume (the repository encrypts), and
    the backup restores into the encrypted class and into a plain one. The API streams
    progress events before the result."""
    d = new_daemon(tmp_path / "node", {**ENV, "GALLEONFS_KEY_FILE": str(tmp_path / "kek")})
    d.start()
    try:
        target, _ = add_target(d, "dir", tmp_path, None)
        api(d, "create_volume", "sec", 32 * MiB, storage_class="encrypted")
        mnt = tmp_path / "sec"
        mnt.mkdir()
        api(d, "mount_volume", "sec", str(mnt))
        marker = b"MARKER-BACKUP-SECRET-0613" * 4000
        (mnt / "secret.txt").write_bytes(marker)
        expected = tree(mnt)
        api(d, "unmount_volume", name="sec")
        with Client(d.address, timeout_s=60) as client:
            events = list(client.create_backup("sec", target))
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[-1] == "backup" and "progress" in kinds, kinds
        last = [e.progress for e in events if e.WhichOneof("event") == "progress"][-1]
        assert last.done and last.phase == "backup" and last.bytes_done >= len(marker), last
        ref = f"sec@{events[-1].backup.id}"
        stored = b"".join(p.read_bytes() for p in (tmp_path / "backups").rglob("*") if p.is_file())
        assert b"MARKER-BACKUP-SECRET" not in stored
        ctl_ok(d, "backup", "restore", ref, "--to", "sec-again", "--storage-class", "encrypted")
        ctl_ok(d, "backup", "restore", ref, "--to", "sec-plain")
        for name in ("sec-again", "sec-plain"):
            where = tmp_path / name
            where.mkdir()
            api(d, "mount_volume", name, str(where))
            try:
                assert tree(where) == expected
            finally:
                api(d, "unmount_volume", name=name)
        classes = {v["name"]: v["storage_class"] for v in api(d, "list_volumes")}
        assert classes["sec-again"] == "encrypted" and classes["sec-plain"] == "local"
        assert d.stop() == 0
    finally:
        left = mounts_under(d.base)
        d.cleanup()
    assert left == []


# --- kill -9 during a backup ------------------------------------------------------------------------
def test_a_backup_killed_with_the_daemon_leaves_no_backup_and_the_next_sends_only_the_rest(
        bdaemon: RunningDaemon, tmp_path: Path) -> None:
    d = bdaemon
    target, _ = add_target(d, "dir", tmp_path, None)
    api(d, "create_volume", "big", 256 * MiB)
    mnt = tmp_path / "big"
    mnt.mkdir()
    api(d, "mount_volume", "big", str(mnt))
    size = 160 * MiB
    with open(mnt / "random.bin", "wb") as f:          # incompressible: 16 MiB packs of it
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        os.fsync(f.fileno())
    expected = tree(mnt)
    packs_dir = tmp_path / "backups" / "packs"

    def packs() -> list[Path]:
        return [p for p in packs_dir.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]

    job = subprocess.Popen([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", d.address,
                            "backup", "create", "big", "--target", target],
                           env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(packs()) >= 3, "three packs stored", 120)
    d.kill()
    job.communicate(timeout=60)
    assert job.returncode != 0
    stored_before = sum(p.stat().st_size for p in packs())
    assert stored_before < size                          # it was cut short
    assert not list((tmp_path / "backups" / "backups").glob("*"))   # nothing looks like a backup

    d.start()
    assert ctl_json(d, "backup", "list", "big") == []
    resumed = backup_create(d, "big", target)
    # What the killed run stored is found again and not sent twice.
    assert int(resumed["bytes_new"]) <= size - stored_before + 2 * MiB, (resumed["bytes_new"], stored_before)
    snaps = [s["name"] for s in api(d, "list_snapshots", "big")]
    assert snaps == [resumed["snapshot"]]                # the killed run's snapshot is gone too
    api(d, "unmount_volume", name="big")
    assert restore_and_read(d, f"big@{resumed['id']}", "big-r", tmp_path / "big-r") == expected
    ok = ctl_ok(d, "backup", "verify", target, "--deep")
    assert "OK" in ok, ok


# --- a store failing while the volume exports the next batch ---------------------------------------
@pytest.mark.allow_warnings
def test_a_store_failing_mid_backup_names_the_object_and_leaves_no_backup(
        bdaemon: RunningDaemon, tmp_path: Path) -> None:
    """Blocks are exported batch after batch while the previous batch is stored (issue 13's
    throughput work): a store that fails while the next export is running fails the backup
    in one sentence naming the object, no manifest appears, the mounted volume goes on
    serving, and once the target is fixed the next backup completes and restores."""
    d = bdaemon
    target, _ = add_target(d, "dir", tmp_path, None)
    api(d, "create_volume", "big", 256 * MiB)
    mnt = tmp_path / "big"
    mnt.mkdir()
    api(d, "mount_volume", "big", str(mnt))
    with open(mnt / "random.bin", "wb") as f:          # three 64 MiB export calls
        for _ in range(160):
            f.write(os.urandom(MiB))
        os.fsync(f.fileno())
    expected = tree(mnt)
    repo = tmp_path / "backups"
    packs_dir, moved = repo / "packs", repo / "packs.moved"

    job = subprocess.Popen([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", d.address,
                            "backup", "create", "big", "--target", target],
                           env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: sum(1 for p in packs_dir.rglob("*") if p.is_file()) >= 2, "two packs stored", 120)
    packs_dir.rename(moved)                            # every later pack store fails
    packs_dir.write_bytes(b"not a directory")
    _out, err = job.communicate(timeout=120)
    assert job.returncode != 0 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "failed on packs/" in err and "backup target" in err, err
    assert not list((repo / "backups").glob("*"))      # nothing looks like a backup
    assert ctl_json(d, "backup", "list", "big") == []
    assert tree(mnt) == expected                        # the mount worker is alive and unharmed

    packs_dir.unlink()
    moved.rename(packs_dir)
    made = backup_create(d, "big", target)
    api(d, "unmount_volume", name="big")
    assert restore_and_read(d, f"big@{made['id']}", "big-r", tmp_path / "big-r") == expected
