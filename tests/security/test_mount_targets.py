"""Mount targets and mount flags (issue 9, findings 1 and 3), as an attacker tries them.

Each test runs a real galleond whose only mount root is a directory every local user can
reach (``/tmp/gfs-roots-*``, 0755), mounts through galleonctl or the gRPC client, and
looks at the kernel's mount table (``/proc/self/mountinfo``) to see what really happened:
a refusal must leave the table and the file system as they were.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node.util import allows_warnings, ctl_ok, finish, mounts_under, user_error

from galleonfs.errors import GalleonError, InvalidArgument
from galleonfs.fuse.kernel import find_mount
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.workers import mountapi
from security.local_users import LocalUser


@pytest.fixture
def roots_dir() -> Iterator[Path]:
    """The daemon's one mount root: in /tmp, 0755, so that local users can reach it."""
    path = Path(tempfile.mkdtemp(prefix="gfs-roots-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for point in sorted(mounts_under(path), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mdaemon(tmp_path: Path, roots_dir: Path, fuse_ok: None,
            request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    d = RunningDaemon(tmp_path, env={"GALLEONFS_MOUNT_ROOTS": str(roots_dir)})
    try:
        d.start()
        yield d
    except BaseException:
        d.cleanup()
        raise
    finish(d, check_logs=not allows_warnings(request))
    left = [p for p in mounts_under(roots_dir) if _fstype(p) == "fuse.galleonfs"]
    assert left == [], f"GalleonFS mounts left under the mount root after a clean stop: {left}"


def _fstype(path: str | Path) -> str:
    info = find_mount(str(path))
    return info.fstype if info else ""


def _options(path: str | Path) -> set[str]:
    """The per-mount flags of the topmost mount on ``path`` (mountinfo field 6)."""
    info = find_mount(str(path))
    assert info is not None, f"nothing is mounted on {path}"
    return set(info.options.split(","))


def _mount_id(path: str | Path) -> int:
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
    try:
        return mountapi.mount_ids(fd).mount_id
    finally:
        os.close(fd)


def _table(d: RunningDaemon, roots_dir: Path) -> list[str]:
    """What this test could have mounted: anything under the mount root, and every mount of
    this daemon's volumes wherever it is. (The rest of the machine's table belongs to other
    tests running beside this one.)"""
    with open("/proc/self/mountinfo") as f:
        lines = [line.split() for line in f]
    out = []
    for fields in lines:
        source = fields[fields.index("-") + 2]
        if fields[4].startswith(f"{roots_dir}/") or source.startswith(f"{d.data_dir}/"):
            out.append(f"{fields[0]} {fields[4]} {source}")
    return sorted(out)


def _galleon_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        lines = [line.split() for line in f]
    return sorted(fields[4] for fields in lines if fields[fields.index("-") + 1] == "fuse.galleonfs")


# --- where a mount may go ------------------------------------------------------------------------
def test_targets_outside_the_mount_roots_are_refused(mdaemon: RunningDaemon, roots_dir: Path) -> None:
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    targets = ["/root/.ssh", "/etc/gfs-probe", "/usr/local/bin", f"{roots_dir}/../../etc/gfs-probe2",
               "/tmp/gfs-elsewhere", f"{roots_dir}-sibling/x"]
    existed = {t: os.path.lexists(os.path.abspath(t)) for t in targets}
    before = _table(mdaemon, roots_dir)
    for target in targets:
        message = user_error(mdaemon.ctl("volume", "mount", "v", target), 8, "outside", str(roots_dir))
        assert "mount_roots" in message
    assert _table(mdaemon, roots_dir) == before
    assert {t: os.path.lexists(os.path.abspath(t)) for t in targets} == existed, "a directory was created"
    volume = json.loads(ctl_ok(mdaemon, "volume", "get", "v", "-o", "json"))
    assert volume["state"] == "AVAILABLE" and not volume.get("mount_points"), volume
    user_error(mdaemon.ctl("volume", "mount", "v", str(roots_dir)), 8, "is a mount root itself")
    long = "/etc/" + "/".join(["a" * 200] * 15)            # 3,000 characters: quoted cut short
    assert len(user_error(mdaemon.ctl("volume", "mount", "v", long), 8, "outside")) < 400
    deep = f"{roots_dir}/" + "/".join(["b" * 200] * 15)    # inside, missing: the answer stays short
    assert len(user_error(mdaemon.ctl("volume", "mount", "v", deep), 3, "does not exist")) < 400
    assert _table(mdaemon, roots_dir) == before


def test_symlinks_in_a_target_are_refused(mdaemon: RunningDaemon, roots_dir: Path) -> None:
    real = roots_dir / "real"
    (real / "empty").mkdir(parents=True)
    (roots_dir / "link").symlink_to(real)
    (roots_dir / "tlink").symlink_to(real / "empty")
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    before = _table(mdaemon, roots_dir)
    for target in (roots_dir / "link" / "new", roots_dir / "link" / "empty", roots_dir / "tlink"):
        user_error(mdaemon.ctl("volume", "mount", "v", str(target)), 2, "symbolic link", "real path")
    assert _table(mdaemon, roots_dir) == before
    assert sorted(os.listdir(real)) == ["empty"], "something was created through the symlink"


def test_only_the_last_component_is_created(mdaemon: RunningDaemon, roots_dir: Path) -> None:
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    before = _table(mdaemon, roots_dir)
    user_error(mdaemon.ctl("volume", "mount", "v", str(roots_dir / "a" / "b" / "c")), 3, "does not exist")
    assert _table(mdaemon, roots_dir) == before
    assert not (roots_dir / "a").exists(), "missing directories were created as root"

    target = roots_dir / "new"
    ctl_ok(mdaemon, "volume", "mount", "v", str(target))
    assert _fstype(target) == "fuse.galleonfs"
    assert os.listdir(roots_dir) == ["new"]
    ctl_ok(mdaemon, "volume", "unmount", str(target))
    info = os.lstat(target)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o755 and info.st_uid == 0
    assert _table(mdaemon, roots_dir) == before


def test_a_busy_or_nonempty_target_is_refused(mdaemon: RunningDaemon, roots_dir: Path) -> None:
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    full = roots_dir / "full"
    full.mkdir()
    (full / "keep").write_text("mine")
    user_error(mdaemon.ctl("volume", "mount", "v", str(full)), 2, "not empty")
    ctl_ok(mdaemon, "volume", "mount", "v", str(roots_dir / "m"), "--read-only")
    user_error(mdaemon.ctl("volume", "mount", "v", str(roots_dir / "m"), "--read-only"), 5, "already mounted")
    ctl_ok(mdaemon, "volume", "unmount", "v")
    assert (full / "keep").read_text() == "mine"


# --- nosuid, nodev ------------------------------------------------------------------------------
def test_every_mount_is_nosuid_nodev(mdaemon: RunningDaemon, roots_dir: Path, local_user: LocalUser) -> None:
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    rw, ro, snap = roots_dir / "rw", roots_dir / "ro", roots_dir / "snap"
    ctl_ok(mdaemon, "volume", "mount", "v", str(rw))
    shutil.copy("/usr/bin/id", rw / "id")
    os.chmod(rw / "id", 0o4755)                   # setuid root, on the volume
    os.mknod(rw / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    ctl_ok(mdaemon, "snapshot", "create", "v@s")
    ctl_ok(mdaemon, "volume", "mount", "v", str(ro), "--read-only")
    ctl_ok(mdaemon, "snapshot", "mount", "v@s", str(snap))

    volume_id = json.loads(ctl_ok(mdaemon, "volume", "get", "v", "-o", "json"))["id"]
    staging = mdaemon.data_dir / "mounts" / volume_id
    for path, read_only in ((rw, False), (ro, True), (snap, True), (staging, False)):
        options = _options(path)
        assert {"nosuid", "nodev"} <= options, f"{path}: {options}"
        assert ("ro" in options) == read_only, f"{path}: {options}"

    # The same binary, setuid root on the host's disk, does run as root: the check can fail.
    host_copy = roots_dir / "id-host"
    shutil.copy("/usr/bin/id", host_copy)
    os.chmod(host_copy, 0o4755)
    try:
        assert local_user.run([str(host_copy), "-u"]).stdout.strip() == "0"
    finally:
        host_copy.unlink()
    for where in (rw, ro, snap):
        done = local_user.run([str(where / "id"), "-u"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(local_user.uid), f"{where}/id ran setuid: {done.stdout}"
        # nodev: even root cannot open the device node there.
        with pytest.raises(PermissionError) as caught:
            os.open(where / "null", os.O_RDWR)
        assert caught.value.errno == errno.EACCES
    for path in (snap, ro, rw):
        ctl_ok(mdaemon, "volume", "unmount", str(path))


def test_galleonfs_mount_refuses_suid_and_dev(tmp_path: Path) -> None:
    for option in ("suid", "dev", "ro,suid"):
        done = subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonfs", "mount", str(tmp_path / "vol"),
                               str(tmp_path / "mnt"), "-o", option], capture_output=True, text=True)
        user_error(done, 2, "refused", "nosuid" if "suid" in option else "nodev", prog="galleonfs")


# --- snapshot names ------------------------------------------------------------------------------
def test_snapshot_names_that_are_paths_are_refused(mdaemon: RunningDaemon, roots_dir: Path) -> None:
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    live = roots_dir / "live"
    ctl_ok(mdaemon, "volume", "mount", "v", str(live))
    (live / "file").write_text("in the snapshot")
    ctl_ok(mdaemon, "snapshot", "create", "v@s1")
    target = roots_dir / "snap"
    before = _table(mdaemon, roots_dir)
    with Client(mdaemon.address, timeout_s=60) as client:
        for name in ("..", "", "../../..", ".", "s1/..", "../s1", "s1/../../..", "s1/"):
            with pytest.raises(InvalidArgument) as caught:
                client.mount_snapshot("v", name, str(target))
            assert "snapshot" in str(caught.value), str(caught.value)
            assert _table(mdaemon, roots_dir) == before, f"snapshot name {name!r} mounted something"
            assert not target.exists(), f"snapshot name {name!r} created the target"
        with pytest.raises(GalleonError) as missing:
            client.mount_snapshot("v", "nope", str(target))
        assert "no snapshot 'nope'" in str(missing.value)
        assert not target.exists()
        client.mount_snapshot("v", "s1", str(target))
    assert (target / "file").read_text() == "in the snapshot"
    assert {"ro", "nosuid", "nodev"} <= _options(target)
    ctl_ok(mdaemon, "volume", "unmount", "v")


# --- unmount acts on the mount GalleonFS made ------------------------------------------------
def _user_dir(path: Path, user: LocalUser) -> None:
    path.mkdir()
    os.chown(path, user.uid, user.gid)


def test_unmount_acts_on_the_recorded_mount_only(mdaemon: RunningDaemon, roots_dir: Path,
                                                 local_user: LocalUser) -> None:
    """The user owning a directory above a mount point moves the mount away and puts an
    unrelated mount (and then a symlink to one) where it was: unmount must take down
    GalleonFS's mount where it went, and leave the unrelated one alone."""
    home = roots_dir / "u"
    _user_dir(home, local_user)
    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    ctl_ok(mdaemon, "volume", "mount", "v", str(roots_dir / "keep"))      # keeps the worker up
    victim = roots_dir / "victim"
    victim.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "unrelated", str(victim)], check=True)
    try:
        (victim / "precious").write_text("not yours")
        victim_id = _mount_id(victim)
        for swap in ("mount", "symlink"):
            assert local_user.run(["mkdir", "-p", f"{home}/d"]).returncode == 0
            ctl_ok(mdaemon, "volume", "mount", "v", str(home / "d" / "t"), "--read-only")
            ours = _mount_id(home / "d" / "t")
            moved = local_user.run(["mv", f"{home}/d", f"{home}/d-{swap}"])
            assert moved.returncode == 0, moved.stderr
            if swap == "mount":      # an unrelated mount sits where ours was recorded
                (home / "d" / "t").mkdir(parents=True)
                subprocess.run(["mount", "--bind", str(victim), str(home / "d" / "t")], check=True)
            else:                    # the recorded path now runs through a symlink to it
                assert local_user.run(["ln", "-s", str(roots_dir), f"{home}/d"]).returncode == 0
                (roots_dir / "t").symlink_to(victim)
            ctl_ok(mdaemon, "volume", "unmount", str(home / "d" / "t"))
            assert _mount_id(victim) == victim_id and (victim / "precious").read_text() == "not yours"
            assert not (home / f"d-{swap}" / "t").is_mount(), "GalleonFS's mount was left behind"
            assert ours not in {_mount_id(p) for p in mounts_under(roots_dir)}
            if swap == "mount":
                assert _fstype(home / "d" / "t") == "tmpfs", "the unrelated mount was removed"
                subprocess.run(["umount", str(home / "d" / "t")], check=True)
                shutil.rmtree(home / "d")
            else:
                (home / "d").unlink()
                (roots_dir / "t").unlink()
        ctl_ok(mdaemon, "volume", "unmount", "v")
        assert _mount_id(victim) == victim_id
    finally:
        subprocess.run(["umount", "-l", str(victim)], check=False)


# The attacker cannot run the venv's interpreter (it lives under root's 0700 home).
_SYSTEM_PYTHON = "/usr/bin/python3"
_ATTACKER = r"""
import ctypes, os, sys
home, stop = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
d, other = os.path.join(home, "d").encode(), os.path.join(home, "other").encode()
# Swap u/d (a real directory) and u/other (a symlink to the victim) atomically, over and
# over: u/d is always there, one or the other.
while not os.path.exists(stop):
    libc.renameat2(AT_FDCWD, d, AT_FDCWD, other, RENAME_EXCHANGE)
"""


def test_rename_symlink_race_never_moves_a_mount(mdaemon: RunningDaemon, roots_dir: Path,
                                                 local_user: LocalUser) -> None:
    """Finding 3's race, as a real unprivileged process: the user who owns ``u`` swaps
    ``u/d`` between a real directory and a symlink to a directory with an unrelated mount
    in it, while root mounts on and unmounts ``u/d/t``, many times over."""
    home = roots_dir / "u"
    _user_dir(home, local_user)
    victim = roots_dir / "victim"
    (victim / "t").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "unrelated", str(victim / "t")], check=True)
    stop = roots_dir / "stop"
    attacker = None
    try:
        (victim / "t" / "precious").write_text("not yours")
        victim_id = _mount_id(victim / "t")
        assert local_user.run(["mkdir", "-p", f"{home}/d/t"]).returncode == 0
        assert local_user.run(["ln", "-s", str(victim), f"{home}/other"]).returncode == 0
        ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
        ctl_ok(mdaemon, "volume", "mount", "v", str(roots_dir / "keep"))
        attacker = subprocess.Popen([_SYSTEM_PYTHON, "-c", _ATTACKER, str(home), str(stop)],
                                    user=local_user.uid, group=local_user.gid, extra_groups=[],
                                    env={"PATH": "/usr/bin:/bin"})
        mounted = refused = unmount_refused = 0
        target = str(home / "d" / "t")
        with Client(mdaemon.address, timeout_s=60) as client:
            deadline = time.monotonic() + 60
            for _ in range(60):
                try:
                    client.mount_volume("v", target, read_only=True)
                    mounted += 1
                except GalleonError:
                    refused += 1
                    continue
                finally:
                    assert _fstype(victim / "t") == "tmpfs" and _mount_id(victim / "t") == victim_id
                    assert all(p == str(roots_dir / "keep") or p.startswith(f"{home}/")
                               for p in _galleon_mounts() if p.startswith(str(roots_dir))), _galleon_mounts()
                try:
                    client.unmount_volume(path=target)
                except GalleonError:
                    unmount_refused += 1       # left for the end: ours, wherever it went
                assert _mount_id(victim / "t") == victim_id
                assert (victim / "t" / "precious").read_text() == "not yours"
                if time.monotonic() > deadline:
                    break
            stop.touch()
            attacker.wait(timeout=30)
            attacker = None
            # The attacker gone, what is still recorded comes down by its ids, wherever the
            # swaps left it (u/other/t rather than the recorded u/d/t).
            for point in client.get_volume("v").mount_points:
                if point.path != str(roots_dir / "keep"):
                    client.unmount_volume(path=point.path)
        assert mounted + refused >= 10, (mounted, refused)
        assert [m for m in _galleon_mounts() if m.startswith(f"{home}/")] == []
        assert _mount_id(victim / "t") == victim_id and (victim / "t" / "precious").read_text() == "not yours"
        ctl_ok(mdaemon, "volume", "unmount", "v")
        print(f"race: {mounted} mounted, {refused} refused, {unmount_refused} unmounts refused")
    finally:
        stop.touch()
        if attacker is not None:
            attacker.kill()
            attacker.wait()
        subprocess.run(["umount", "-l", str(victim / "t")], check=False)


# --- the setting ---------------------------------------------------------------------------------
def test_mount_roots_setting(tmp_path: Path) -> None:
    from node.test_config import galleond, printed

    values, sources = printed(galleond("--config", os.devnull, "--print-config"))
    assert values["mount_roots"] == ["/mnt", "/media", "/srv", "/run/galleonfs/mounts", "/var/lib/kubelet"]
    values, sources = printed(galleond("--config", os.devnull, "--print-config",
                                       env={"GALLEONFS_MOUNT_ROOTS": "/srv/vols/, /mnt"}))
    assert values["mount_roots"] == ["/srv/vols", "/mnt"] and sources["mount_roots"] == "environment"
    config = tmp_path / "galleond.toml"
    for text, phrase in (('mount_roots = ["/"]\n', "'/' cannot be a mount root"),
                         ('mount_roots = ["srv"]\n', "'srv' is not an absolute path")):
        config.write_text(text)
        user_error(galleond("--config", str(config), "--print-config"), 2, "mount_roots", phrase, prog="galleond")


def test_mount_points_recorded_without_ids_still_unmount(mdaemon: RunningDaemon, roots_dir: Path) -> None:
    """A catalog from before mount ids were recorded: after a ``kill -9`` and a new daemon
    (which adopts the running worker), the old mount point is recognised as GalleonFS's
    own mount at its recorded path, given its ids, and unmounts as usual."""
    from galleonfs.meta.catalog import Catalog

    ctl_ok(mdaemon, "volume", "create", "v", "--size", "64M")
    target = roots_dir / "old"
    ctl_ok(mdaemon, "volume", "mount", "v", str(target))
    (target / "f").write_text("kept")
    ours = _mount_id(target)
    mdaemon.kill()
    catalog = Catalog(str(mdaemon.data_dir))
    try:
        (volume,) = list(catalog.volumes())
        assert volume["mount_points"][0]["mount_id"] == ours
        for point in volume["mount_points"]:
            del point["mount_id"], point["mount_unique_id"]
        catalog.put_volume(volume)
    finally:
        catalog.close()
    mdaemon.start()
    assert _mount_id(target) == ours and (target / "f").read_text() == "kept"     # adopted, untouched
    ctl_ok(mdaemon, "volume", "unmount", str(target))
    assert not target.is_mount() and _fstype(target) != "fuse.galleonfs"
