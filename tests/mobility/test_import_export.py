"""Folder import/export as users drive it: a real galleond, real mounts, real galleonctl.

What each test holds a user to: an imported tree equals its source attribute by attribute
(modes, owners, times, xattrs, symlinks, hard-link groups, device nodes, holes); excludes
leave out exactly what gitignore would; a re-run copies nothing and says so; ``--dry-run``
lists and changes nothing; ``--delete`` mirrors and keeps excluded paths; an export of a
snapshot gives the snapshot's tree, not the live one; a file that cannot be copied is
named, the rest is copied, the exit code is 1; bad input gets one line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from node.util import ctl_ok, user_error

from galleonfs.testing.daemon import RunningDaemon

from .tree import SPARSE_DATA_AT, assert_same, make_tree, snapshot

KiB = 1024


def _volume(daemon: RunningDaemon, name: str) -> None:
    ctl_ok(daemon, "volume", "create", name, "--size", "1G")


def _import(daemon: RunningDaemon, name: str, src: Path, work: Path, *extra: str) -> str:
    return ctl_ok(daemon, "volume", "import", name, str(src), "--work-dir", str(work), *extra)


def _mounted(daemon: RunningDaemon, name: str, path: Path) -> Path:
    path.mkdir()
    ctl_ok(daemon, "volume", "mount", name, str(path))
    return path


def test_import_keeps_every_attribute_and_rerun_copies_nothing(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, seed=15)
    _volume(shared_daemon, "imp1")
    out = _import(shared_daemon, "imp1", src, tmp_path / "work")
    assert "errors" not in out and " 0 files copied" not in out, out
    out = _import(shared_daemon, "imp1", src, tmp_path / "work")
    assert "0 files copied (0 bytes)" in out and " 0 created, 0 updated, 0 deleted" in out, out
    mnt = _mounted(shared_daemon, "imp1", tmp_path / "mnt")
    try:
        assert_same(src, mnt)
        st = os.stat(mnt / "sparse.img")
        assert st.st_blocks * 512 <= 2 * 64 * KiB, f"the hole was filled: {st.st_blocks} blocks"
        with open(mnt / "sparse.img", "rb") as f:
            f.seek(SPARSE_DATA_AT)
            assert f.read(6) == b"middle"
        # A re-run through the existing mount point also copies nothing.
        out = _import(shared_daemon, "imp1", src, tmp_path / "work")
        assert "0 files copied (0 bytes)" in out, out
        # As a killed run leaves it: a partial temporary file, a missing file, a short one.
        victims = sorted(p for p in snapshot(src, times=False) if p.startswith("file")
                         and os.stat(src / p).st_nlink == 1 and os.stat(src / p).st_size > 0)[:2]
        (mnt / ".galleon-tmp.partial").write_bytes(b"half")
        os.unlink(mnt / victims[0])
        with open(mnt / victims[1], "r+b") as f:
            f.truncate(0)
        out = _import(shared_daemon, "imp1", src, tmp_path / "work")
        assert "2 files copied" in out and " 0 created" in out, out
        os.unlink(mnt / ".galleon-tmp.partial")     # only --delete removes a stray one
        assert_same(src, mnt, atimes=False)
    finally:
        ctl_ok(shared_daemon, "volume", "unmount", str(mnt))


def test_excludes_dry_run_and_delete(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, seed=7, files=30)
    (src / "keep.tmp").write_text("kept by the negation")
    excludes = tmp_path / "excludes"
    excludes.write_text("# comment\n*.tmp\n!keep.tmp\n/dir1/\n")
    _volume(shared_daemon, "imp2")
    _import(shared_daemon, "imp2", src, tmp_path / "work", "--exclude-from", str(excludes), "--exclude", "*.log")
    mnt = _mounted(shared_daemon, "imp2", tmp_path / "mnt")
    try:
        got = set(snapshot(mnt, times=False))
        want = {rel for rel in snapshot(src, times=False)
                if not (rel.endswith((".tmp", ".log")) and rel != "keep.tmp")
                and rel != "dir1" and not rel.startswith("dir1/")}
        assert got == want
        assert any(r.endswith(".log") for r in snapshot(src, times=False))
        # Changes on both sides; a dry run lists them and changes nothing.
        (src / "new.txt").write_text("new")
        (mnt / "extra.txt").write_text("extra")
        (mnt / "dir2-extra").mkdir()
        (mnt / os.fsdecode(b"extra\n\xff")).write_text("a name that is not UTF-8, with a newline")
        (mnt / "protected.tmp").write_text("excluded: --delete keeps it")
        before = snapshot(mnt)
        out = _import(shared_daemon, "imp2", src, tmp_path / "work", "--exclude-from", str(excludes),
                      "--exclude", "*.log", "--delete", "--dry-run")
        lines = out.splitlines()
        assert sorted(lines[:-1]) == ["copy new.txt", "delete dir2-extra/", "delete extra.txt",
                              "delete extra\\n\\udcff"], out          # one line each, escaped
        assert not any("protected.tmp" in line for line in lines), out
        assert snapshot(mnt) == before
        # --delete mirrors (through the existing mount point).
        _import(shared_daemon, "imp2", src, tmp_path / "work", "--exclude-from", str(excludes),
                "--exclude", "*.log", "--delete")
        assert (mnt / "new.txt").read_text() == "new"
        assert not (mnt / "extra.txt").exists() and not (mnt / "dir2-extra").exists()
        assert not (mnt / os.fsdecode(b"extra\n\xff")).exists()
        assert (mnt / "protected.tmp").read_text() == "excluded: --delete keeps it"
    finally:
        ctl_ok(shared_daemon, "volume", "unmount", str(mnt))


def test_export_of_a_snapshot_is_the_snapshot(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, seed=3, files=30)
    _volume(shared_daemon, "exp1")
    _import(shared_daemon, "exp1", src, tmp_path / "work")
    ctl_ok(shared_daemon, "snapshot", "create", "exp1@before")
    mnt = _mounted(shared_daemon, "exp1", tmp_path / "mnt")
    try:
        (mnt / "after.txt").write_text("written after the snapshot")
        shutil.rmtree(mnt / "dir0")
        (mnt / "sparse.img").write_bytes(b"overwritten")
        out = ctl_ok(shared_daemon, "volume", "export", "exp1@before", str(tmp_path / "out"),
                     "--work-dir", str(tmp_path / "work"))
        assert "errors" not in out
    finally:
        ctl_ok(shared_daemon, "volume", "unmount", str(mnt))
    assert_same(src, tmp_path / "out")
    st = os.stat(tmp_path / "out" / "sparse.img")
    assert st.st_blocks * 512 <= 2 * 64 * KiB, f"the export filled the hole: {st.st_blocks} blocks"
    assert os.listdir(tmp_path / "work") == []          # the temporary mount point is gone


def test_one_bad_file_is_named_and_the_rest_copied(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * KiB))      # more than the volume holds
    (src / "z.txt").write_text("z")
    ctl_ok(shared_daemon, "volume", "create", "full1", "--size", "2M")
    done = shared_daemon.ctl("volume", "import", "full1", str(src), "--work-dir", str(tmp_path / "work"))
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "error: big.bin: No space left on device" in done.stderr, done.stderr
    assert "1 entries could not be copied" in done.stderr, done.stderr
    assert "2 files copied" in done.stdout, done.stdout
    mnt = _mounted(shared_daemon, "full1", tmp_path / "mnt")
    try:
        assert sorted(os.listdir(mnt)) == ["a.txt", "z.txt"]            # no partial file left
        assert (mnt / "z.txt").read_text() == "z"
    finally:
        ctl_ok(shared_daemon, "volume", "unmount", str(mnt))


def test_bad_input_gets_one_line(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    _volume(shared_daemon, "bad1")
    user_error(shared_daemon.ctl("volume", "import", "bad1", str(tmp_path / "missing")), 3, "does not exist")
    user_error(shared_daemon.ctl("volume", "import", "nosuchvol", str(tmp_path)), 3)
    user_error(shared_daemon.ctl("volume", "export", "bad1", str(tmp_path / "o")), 2, "VOLUME@SNAPSHOT")
    user_error(shared_daemon.ctl("volume", "export", "bad1@nosnap", str(tmp_path / "o")), 3)
    user_error(shared_daemon.ctl("volume", "import", "bad1", str(tmp_path), "--exclude-from",
                                 str(tmp_path / "nofile")), 2, "exclude file")
    user_error(shared_daemon.ctl("volume", "import", "bad1", str(tmp_path), "--jobs", "0"), 2, "--jobs")
    (tmp_path / "afile").write_text("x")
    user_error(shared_daemon.ctl("volume", "export", "bad1@nosnap", str(tmp_path / "afile")), 2,
               "is not a directory")
    user_error(shared_daemon.ctl("volume", "import", "bad1", str(tmp_path), "--exclude", "!"), 2,
               "exclude pattern", "gitignore")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("snap", ["", "s1"])
def test_standalone_galleonfs_import_export(tmp_path: Path, fuse_ok: None, snap: str) -> None:
    import subprocess
    import sys

    src = tmp_path / "src"
    make_tree(src, seed=11, files=20)
    vol = tmp_path / "vol"

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonfs", *args],
                              capture_output=True, text=True, timeout=120)

    assert tool("mkfs", str(vol), "--size", "1G").returncode == 0
    done = tool("import", str(vol), str(src))
    assert done.returncode == 0, done.stderr
    if snap:
        done = tool("export", str(vol), str(tmp_path / "out"), "--snapshot", snap)
        user_error(done, 3, "no snapshot", prog="galleonfs")
        return
    # A dry run (the volume mounted read-only) lists the new file and copies nothing.
    (src / "new.txt").write_text("new")
    done = tool("import", str(vol), str(src), "--dry-run")
    assert done.returncode == 0 and "copy new.txt" in done.stdout.splitlines(), done
    os.unlink(src / "new.txt")
    # On a terminal, progress: files, bytes, rate, ETA.
    shown = subprocess.run(["script", "-qec", f"{sys.executable} -m galleonfs.cli.galleonfs import {vol} {src}",
                            "/dev/null"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown
    assert "importing: 22/22 files" in shown.stdout and "MB/s, ETA" in shown.stdout, shown.stdout
    done = tool("export", str(vol), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert_same(src, tmp_path / "out")
    assert tool("fsck", str(vol)).returncode == 0


def test_export_never_follows_a_symlink_out_of_the_target(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "f.txt").write_text("inside")
    (src / "g.txt").write_text("g")
    _volume(shared_daemon, "sym1")
    _import(shared_daemon, "sym1", src, tmp_path / "work")
    ctl_ok(shared_daemon, "snapshot", "create", "sym1@s")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "dir").symlink_to(outside)                # where the snapshot has a directory
    (dest / "g.txt").symlink_to(outside / "g.txt")    # where it has a file
    ctl_ok(shared_daemon, "volume", "export", "sym1@s", str(dest), "--work-dir", str(tmp_path / "work"))
    assert os.listdir(outside) == []
    assert not (dest / "dir").is_symlink() and (dest / "dir" / "f.txt").read_text() == "inside"
    assert not (dest / "g.txt").is_symlink() and (dest / "g.txt").read_text() == "g"


def test_checksum_catches_an_edit_that_kept_size_and_mtime(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"A" * 5000)
    (src / "b.bin").write_bytes(b"B" * 5000)
    _volume(shared_daemon, "sum1")
    _import(shared_daemon, "sum1", src, tmp_path / "work")
    st = os.stat(src / "a.bin")
    (src / "a.bin").write_bytes(b"C" * 5000)
    os.utime(src / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    out = _import(shared_daemon, "sum1", src, tmp_path / "work")
    assert "0 files copied" in out, out                      # size and mtime: looks unchanged
    out = _import(shared_daemon, "sum1", src, tmp_path / "work", "--checksum")
    assert "1 files copied" in out and "1 unchanged" in out, out
    mnt = _mounted(shared_daemon, "sum1", tmp_path / "mnt")
    try:
        assert (mnt / "a.bin").read_bytes() == b"C" * 5000
        assert os.stat(mnt / "a.bin").st_mtime_ns == st.st_mtime_ns
    finally:
        ctl_ok(shared_daemon, "volume", "unmount", str(mnt))


def test_a_killed_import_resumes_copying_only_what_is_missing(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    src.mkdir()
    total = 2000
    for i in range(total):
        (src / f"f{i:05d}").write_bytes(os.urandom(1024))
    _volume(shared_daemon, "kill1")
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", shared_daemon.address,
                             "volume", "import", "kill1", str(src), "--work-dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=shared_daemon.env)
    deadline = time.monotonic() + 60
    mnt: Path | None = None
    while time.monotonic() < deadline:
        points = list(work.glob("transfer-*")) if work.exists() else []
        if points and len(os.listdir(points[0])) >= 200:
            mnt = points[0]
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert mnt is not None, "the import did not start copying within 60 s"
    try:
        names = os.listdir(mnt)
        whole = [n for n in names if not n.startswith(".galleon-tmp.")]
        assert 0 < len(whole) < total, f"{len(whole)} of {total} files copied before the kill"
        # The orphaned temporary mount is the volume's read-write mount point: the re-run uses it.
        out = _import(shared_daemon, "kill1", src, work)
        assert f"{total - len(whole)} files copied" in out and f"{len(whole)} unchanged" in out, out
        assert sorted(os.listdir(mnt)) == sorted(os.listdir(src))      # no temporary name left
        for name in whole[:50] + sorted(os.listdir(mnt))[-50:]:
            assert (mnt / name).read_bytes() == (src / name).read_bytes(), name
    finally:
        ctl_ok(shared_daemon, "volume", "unmount", "kill1")
        if mnt.exists():
            mnt.rmdir()


def test_a_mount_on_another_machine_is_refused_not_copied_beside(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    """galleond mounts on its node; a galleonctl elsewhere (here: in its own mount namespace)
    must not copy into the empty local directory of that name and call it done."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    _volume(shared_daemon, "far1")
    work = tmp_path / "work"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
                           "galleonfs.cli.galleonctl", "--address", shared_daemon.address, "volume", "import",
                           "far1", str(src), "--work-dir", str(work)],
                          capture_output=True, text=True, timeout=120, env=shared_daemon.env)
    user_error(done, 2, "not on this machine", "on the node")
    assert os.listdir(work) == []                      # unmounted and removed again
    assert json.loads(ctl_ok(shared_daemon, "volume", "get", "far1", "-o", "json"))["mount_points"] == []
