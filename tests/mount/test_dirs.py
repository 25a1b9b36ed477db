"""Directories: mkdir/rmdir and their errors, link counts, readdir, name and path limits."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import current_umask, expect_errno, getdents, remount

pytestmark = pytest.mark.mount

DT_DIR, DT_REG, DT_LNK = 4, 8, 10


def test_mkdir_rmdir_errors(volume: MountedVolume) -> None:
    d = volume / "d"
    os.mkdir(d, 0o750)
    st = os.stat(d)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750 & ~current_umask()
    assert st.st_nlink == 2
    assert os.listdir(d) == []
    expect_errno(errno.EEXIST, os.mkdir, d)
    f = d / "file"
    f.write_bytes(b"x")
    expect_errno(errno.EEXIST, os.mkdir, f)
    expect_errno(errno.ENOTDIR, os.mkdir, f / "sub")
    expect_errno(errno.ENOTDIR, os.stat, f / "sub")
    expect_errno(errno.ENOTDIR, os.rmdir, f)
    expect_errno(errno.ENOTDIR, os.listdir, f)
    expect_errno(errno.ENOENT, os.mkdir, volume / "missing" / "sub")
    expect_errno(errno.ENOENT, os.rmdir, d / "missing")
    os.mkdir(d / "sub")
    expect_errno(errno.ENOTEMPTY, os.rmdir, d)
    expect_errno(errno.EISDIR, os.unlink, d / "sub")
    expect_errno(errno.EINVAL, os.rmdir, f"{d}/sub/.")             # rmdir(2): "." is EINVAL
    expect_errno(errno.ENOTEMPTY, os.rmdir, f"{d}/sub/..")         # ".." is ENOTEMPTY
    os.rmdir(d / "sub")
    expect_errno(errno.ENOTEMPTY, os.rmdir, d)                     # the file is still there
    os.unlink(f)
    os.rmdir(d)
    expect_errno(errno.ENOENT, os.stat, d)
    assert os.listdir(volume.mountpoint) == []
    remount(volume)
    assert os.listdir(volume.mountpoint) == []


def test_mkdir_mode_bits(volume: MountedVolume) -> None:
    umask = current_umask()
    os.mkdir(volume / "d", 0o3777)
    # mkdir(2) keeps the sticky bit and drops set-gid (only a set-gid parent passes it on).
    assert stat.S_IMODE(os.stat(volume / "d").st_mode) == 0o1777 & ~umask
    os.chmod(volume / "d", 0o2755)
    os.mkdir(volume / "d" / "child", 0o700)
    assert stat.S_IMODE(os.stat(volume / "d" / "child").st_mode) == 0o2700 & ~umask
    remount(volume)
    assert stat.S_IMODE(os.stat(volume / "d" / "child").st_mode) == 0o2700 & ~umask


def test_any_bytes_but_slash_and_nul_make_a_name(volume: MountedVolume) -> None:
    root = os.fsencode(volume.mountpoint)
    names = [b"\xff\xfe not utf-8", b"new\nline", b" spaces ", b"tab\there", b"-dash",
             b"\x01\x7f", b"...", b"UPPER", b"upper", "ünïcødé ✓".encode()]
    for name in names:
        fd = os.open(root + b"/" + name, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, name)
        os.close(fd)
    assert sorted(os.listdir(root)) == sorted(names)
    remount(volume)
    assert sorted(os.listdir(root)) == sorted(names)
    for name in names:
        with open(root + b"/" + name, "rb") as f:
            assert f.read() == name


def test_removed_cwd_refuses_new_entries(volume: MountedVolume) -> None:
    d = volume / "d"
    os.mkdir(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d)
        assert os.fstat(fd).st_nlink == 0
        expect_errno(errno.ENOENT, getdents, fd)   # the kernel marks it dead (IS_DEADDIR)
        expect_errno(errno.ENOENT, os.open, "new", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        expect_errno(errno.ENOENT, os.mkdir, "sub", dir_fd=fd)
    finally:
        os.close(fd)


def test_directory_link_counts(volume: MountedVolume) -> None:
    root = volume.mountpoint
    base = os.stat(root).st_nlink
    assert base == 2
    for name in ("a", "b", "c"):
        os.mkdir(root / name)
    (root / "file").write_bytes(b"")
    os.symlink("a", root / "link")
    assert os.stat(root).st_nlink == base + 3
    os.mkdir(root / "a" / "x")
    os.mkdir(root / "a" / "y")
    assert os.stat(root / "a").st_nlink == 4
    os.rename(root / "a" / "x", root / "b" / "x")       # a loses a subdirectory, b gains one
    assert os.stat(root / "a").st_nlink == 3
    assert os.stat(root / "b").st_nlink == 3
    assert os.stat(root / "b" / "x" / "..").st_ino == os.stat(root / "b").st_ino
    os.rmdir(root / "c")
    assert os.stat(root).st_nlink == base + 2
    remount(volume)
    assert os.stat(root).st_nlink == base + 2
    assert os.stat(root / "a").st_nlink == 3
    assert os.stat(root / "b").st_nlink == 3
    assert os.stat(root / "b" / "x").st_nlink == 2
    assert os.stat(root / "b" / "x" / "..").st_ino == os.stat(root / "b").st_ino


def test_directory_times_change_with_entries(volume: MountedVolume) -> None:
    d = volume / "d"
    os.mkdir(d)
    marks = []
    for step in (lambda: (d / "f").write_bytes(b""), lambda: os.rename(d / "f", d / "g"),
                 lambda: os.unlink(d / "g"), lambda: os.mkdir(d / "s"), lambda: os.rmdir(d / "s")):
        before = os.stat(d)
        step()
        after = os.stat(d)
        assert after.st_mtime_ns > before.st_mtime_ns
        assert after.st_ctime_ns > before.st_ctime_ns
        marks.append(after.st_mtime_ns)
    remount(volume)
    assert os.stat(d).st_mtime_ns == marks[-1]


def test_readdir_lists_every_entry_with_its_type(volume: MountedVolume) -> None:
    d = volume / "d"
    os.mkdir(d)
    expected: dict[str, int] = {}
    for i in range(280):                              # more than one 256-entry scan batch
        name = f"f{i:03d}-" + "x" * (i % 7 * 30)       # names up to 190 bytes
        (d / name).write_bytes(b"")
        expected[name] = DT_REG
    for i in range(20):
        os.mkdir(d / f"dir{i}")
        expected[f"dir{i}"] = DT_DIR
    os.symlink("f000-", d / "sym")
    expected["sym"] = DT_LNK

    def check() -> None:
        assert sorted(os.listdir(d)) == sorted(expected)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            seen: list[tuple[int, int, bytes]] = []
            while batch := getdents(fd, 4096):
                seen += [(ino, dtype, name) for ino, _, dtype, name in batch]
        finally:
            os.close(fd)
        names = [name.decode() for _, _, name in seen]
        assert names.count(".") == 1 and names.count("..") == 1
        assert sorted(n for n in names if n not in (".", "..")) == sorted(expected)
        for ino, dtype, name in seen:
            if name in (b".", b".."):
                assert dtype == DT_DIR
                continue
            assert dtype == expected[name.decode()], name
            assert ino == os.lstat(d / name.decode()).st_ino, name
        by_name = {name: ino for ino, _, name in seen}
        assert by_name[b"."] == os.stat(d).st_ino
        assert by_name[b".."] == os.stat(volume.mountpoint).st_ino

    check()
    remount(volume)
    check()


def test_readdir_offsets_stable_while_directory_changes(volume: MountedVolume) -> None:
    d = volume / "d"
    os.mkdir(d)
    keep = [f"keep-{i:03d}" for i in range(120)]
    doomed = [f"doomed-{i:03d}" for i in range(40)]
    for i, name in enumerate(keep):                       # doomed ones spread in between, so
        (d / name).write_bytes(b"")                       # some die before they are listed
        if i % 3 == 0:                                    # and some after
            (d / doomed[i // 3]).write_bytes(b"")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        seen: list[bytes] = []
        offsets: list[tuple[bytes, int]] = []
        round_ = 0
        # 512-byte buffers: about 15 entries per call, so the changes land mid-listing.
        while batch := getdents(fd, 512):
            seen += [name for _, _, _, name in batch]
            offsets += [(name, off) for _, off, _, name in batch]
            round_ += 1
            if round_ > 6:
                continue                                  # let the listing catch up and end
            for i in range(5):                            # entries come and go meanwhile
                (d / f"new-{round_:02d}-{i}").write_bytes(b"")
            for name in doomed[round_ * 5:round_ * 5 + 5]:
                os.unlink(d / name)
            if round_ % 2:
                os.rename(d / f"new-{round_:02d}-0", d / f"moved-{round_:02d}")
        assert round_ > 6, "the listing should take many getdents calls"
        names = [n.decode() for n in seen]
        assert len(names) == len(set(names)), "an entry was returned twice"
        for name in keep:
            assert names.count(name) == 1, name
        os.lseek(fd, 0, os.SEEK_SET)
        again: list[bytes] = []
        while batch := getdents(fd, 8192):
            again += [name for _, _, _, name in batch]
        assert sorted(n.decode() for n in again) == sorted([".", "..", *os.listdir(d)])
        # Resuming at a saved offset (telldir/seekdir) continues right after that entry.
        name_k, off_k = next((n, o) for n, o in offsets[40:] if n.decode() in keep)
        os.lseek(fd, off_k, os.SEEK_SET)
        resumed = [name for _, _, _, name in getdents(fd, 512)]
        at = again.index(name_k)
        assert resumed and resumed == again[at + 1:at + 1 + len(resumed)]
    finally:
        os.close(fd)


def test_name_length_limits(volume: MountedVolume) -> None:
    st = os.statvfs(volume.mountpoint)
    assert st.f_namemax == 255
    root = volume.mountpoint
    ok, too_long = "n" * 255, "n" * 256
    (root / ok).write_bytes(b"255")
    os.mkdir(root / ("d" * 255))
    os.symlink("target", root / ("s" * 255))
    os.link(root / ok, root / ("h" * 255))
    os.rename(root / ("h" * 255), root / ("r" * 255))
    utf8_ok, utf8_long = "é" * 127, "é" * 128             # 254 and 256 bytes
    (root / utf8_ok).write_bytes(b"")
    for call, args in [
        (os.open, (root / too_long, os.O_CREAT | os.O_WRONLY, 0o644)),
        (os.open, (root / utf8_long, os.O_CREAT | os.O_WRONLY, 0o644)),
        (os.mkdir, (root / too_long,)),
        (os.stat, (root / too_long,)),
        (os.symlink, ("target", root / too_long)),
        (os.link, (root / ok, root / too_long)),
        (os.rename, (root / ok, root / too_long)),
        (os.mknod, (root / too_long, stat.S_IFIFO | 0o644)),
    ]:
        expect_errno(errno.ENAMETOOLONG, call, *args)
    remount(volume)
    assert sorted(os.listdir(root)) == sorted([ok, "d" * 255, "s" * 255, "r" * 255, utf8_ok])
    assert (root / ok).read_bytes() == b"255"


def test_deep_paths_beyond_path_max(volume: MountedVolume) -> None:
    name = "level-" + "d" * 44                              # 50 bytes per component
    depth = 120                                              # about 6 KiB of path in all
    # Walk down with a dir_fd, so no path handed to the kernel is longer than one name.
    # Each parent is closed while the walk goes on: a burst of closes right before the
    # unmount would race their (asynchronous) RELEASEDIR requests against it.
    parent = os.open(volume.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, 0o755, dir_fd=parent)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent)
            parent_ino = os.fstat(parent).st_ino
            os.close(parent)
            parent = child
        fd = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=parent)
        os.write(fd, b"deep down")
        os.close(fd)
        assert os.stat("..", dir_fd=parent).st_ino == parent_ino
    finally:
        os.close(parent)
    full = os.path.join(volume.mountpoint, *[name] * depth, "leaf")
    assert len(full) > 4096
    expect_errno(errno.ENAMETOOLONG, os.stat, full)         # the kernel's PATH_MAX, not ours
    remount(volume)
    # Walk down again in chunks that each stay below PATH_MAX, by changing directory.
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(volume.mountpoint)
        for _ in range(depth // 30):
            os.chdir(os.path.join(*[name] * 30))
        assert os.stat(".").st_nlink == 2
        with open("leaf", "rb") as f:
            assert f.read() == b"deep down"
        os.chdir(os.path.join(*[".."] * depth))
        assert os.stat(".").st_ino == os.stat(volume.mountpoint).st_ino
    finally:
        os.fchdir(cwd)
        os.close(cwd)


def test_fsyncdir(volume: MountedVolume) -> None:
    d = volume / "d"
    os.mkdir(d)
    (d / "f").write_bytes(b"entry")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.fsync(fd) is None
    finally:
        os.close(fd)
    volume.kill()                                 # no clean unmount: only what was made durable
    volume.mount()
    assert os.listdir(d) == ["f"]
    assert (d / "f").read_bytes() == b"entry"
