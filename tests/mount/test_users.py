"""Other users: ownership and umask of new objects, set-group-id and sticky directories,
chown/chgrp/chmod rules for non-root, access(2), utime permissions.

The mount uses ``default_permissions``: the kernel checks the rights, GalleonFS stores the
owners and modes they are checked against. Every user-side step runs in a forked child
(``as_user``) whose working directory is the mount point.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import as_user, remount

pytestmark = pytest.mark.mount

ALICE, BOB, CAROL = 1000, 1001, 1002
STAFF = 3000


def _errno_of(fn: object, *args: object, **kwargs: object) -> int:
    """Run in a child: 0 if the call worked, else its errno (children cannot use pytest)."""
    try:
        fn(*args, **kwargs)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_new_objects_belong_to_the_caller_with_their_umask(volume: MountedVolume) -> None:
    os.mkdir(volume / "pub")
    os.chmod(volume / "pub", 0o777)

    def make() -> None:
        os.close(os.open("pub/file", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir("pub/dir", 0o777)
        os.mkfifo("pub/fifo", 0o666)
        os.symlink("file", "pub/link")
        os.mknod("pub/node", stat.S_IFREG | 0o606)

    as_user(volume, ALICE, ALICE, make, umask=0o027)

    def check() -> None:
        want = {"file": 0o640, "dir": 0o750, "fifo": 0o640, "node": 0o600, "link": 0o777}
        for name, mode in want.items():
            st = os.lstat(volume / "pub" / name)
            assert (st.st_uid, st.st_gid) == (ALICE, ALICE), name
            assert stat.S_IMODE(st.st_mode) == mode, (name, oct(st.st_mode))

    check()
    # Devices are for root only; the kernel says so before asking us.
    code = as_user(volume, ALICE, ALICE,
                   lambda: _errno_of(os.mknod, "pub/dev", stat.S_IFCHR | 0o600, os.makedev(1, 3)))
    assert code == errno.EPERM
    remount(volume)
    check()


def test_setgid_directory_passes_its_group_on(volume: MountedVolume) -> None:
    os.mkdir(volume / "shared")
    os.chown(volume / "shared", 0, STAFF)
    os.chmod(volume / "shared", 0o2777)

    def make() -> None:
        (open("shared/file", "wb")).close()
        os.mkdir("shared/sub", 0o755)
        os.mkdir("shared/sub/deeper", 0o755)

    as_user(volume, ALICE, ALICE, make, umask=0o022)
    (volume / "shared" / "by-root").write_bytes(b"")

    def check() -> None:
        st = os.stat(volume / "shared" / "file")
        assert (st.st_uid, st.st_gid) == (ALICE, STAFF)
        assert not st.st_mode & stat.S_ISGID                 # files do not get the bit
        for sub in ("sub", "sub/deeper"):
            st = os.stat(volume / "shared" / sub)
            assert (st.st_uid, st.st_gid) == (ALICE, STAFF), sub
            assert stat.S_IMODE(st.st_mode) == stat.S_ISGID | 0o755, sub   # dirs inherit it
        assert os.stat(volume / "shared" / "by-root").st_gid == STAFF

    check()
    remount(volume)
    check()


def test_sticky_directory_protects_other_users_files(volume: MountedVolume) -> None:
    os.mkdir(volume / "tmp")
    os.chmod(volume / "tmp", 0o1777)
    as_user(volume, ALICE, ALICE, lambda: open("tmp/alice", "wb").close())

    def bob() -> list[int]:
        open("tmp/bob", "wb").close()
        return [_errno_of(os.unlink, "tmp/alice"),
                _errno_of(os.rename, "tmp/alice", "tmp/mine-now"),
                _errno_of(os.rename, "tmp/bob", "tmp/alice")]

    # sticky: only the file's (or the directory's) owner may delete or replace it.
    assert as_user(volume, BOB, BOB, bob) == [errno.EPERM] * 3
    assert os.stat(volume / "tmp" / "alice").st_uid == ALICE
    assert as_user(volume, ALICE, ALICE, lambda: _errno_of(os.unlink, "tmp/alice")) == 0
    assert sorted(os.listdir(volume / "tmp")) == ["bob"]
    remount(volume)
    assert stat.S_IMODE(os.stat(volume / "tmp").st_mode) == 0o1777


def test_chown_chgrp_chmod_as_a_user(volume: MountedVolume) -> None:
    f = volume / "f"
    f.write_bytes(b"")
    os.chown(f, ALICE, ALICE)
    os.chmod(f, 0o644)

    def alice() -> list[int]:
        return [
            _errno_of(os.chown, "f", BOB, -1),           # giving a file away: EPERM
            _errno_of(os.chown, "f", ALICE, -1),         # to oneself: allowed
            _errno_of(os.chown, "f", -1, 4000),          # to a group one is not in: EPERM
            _errno_of(os.chown, "f", -1, STAFF),         # to one's own group: allowed
            _errno_of(os.chmod, "f", 0o2640),            # set-gid for a group one is in
        ]

    assert as_user(volume, ALICE, ALICE, alice, groups=[ALICE, STAFF]) == [
        errno.EPERM, 0, errno.EPERM, 0, 0]
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (ALICE, STAFF)
    assert stat.S_IMODE(st.st_mode) == 0o2640

    def bob() -> list[int]:
        return [_errno_of(os.chown, "f", -1, BOB), _errno_of(os.chmod, "f", 0o777),
                _errno_of(os.utime, "f", ns=(1, 1))]

    assert as_user(volume, BOB, BOB, bob, groups=[BOB, STAFF]) == [errno.EPERM] * 3
    # The owner, outside the file's group now, asks for set-gid: the kernel drops the bit.
    os.chown(f, ALICE, 4000)
    assert as_user(volume, ALICE, ALICE, lambda: _errno_of(os.chmod, "f", 0o2755)) == 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o755
    remount(volume)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ALICE, 4000, 0o755)


def test_access_as_users(volume: MountedVolume) -> None:
    f = volume / "f"
    f.write_bytes(b"secret")
    os.chown(f, ALICE, ALICE)
    os.chmod(f, 0o640)
    os.mkdir(volume / "private")
    os.chmod(volume / "private", 0o700)
    (volume / "private" / "inner").write_bytes(b"")

    def probe() -> tuple[bool, bool, bool, int, int]:
        return (os.access("f", os.R_OK), os.access("f", os.W_OK), os.access("f", os.X_OK),
                _errno_of(lambda: open("f", "rb").read()),
                _errno_of(os.stat, "private/inner"))

    # owner: rw-; group: r--; others: ---. The private directory is root's 0700.
    assert as_user(volume, ALICE, ALICE, probe) == (True, True, False, 0, errno.EACCES)
    assert as_user(volume, BOB, ALICE, probe) == (True, False, False, 0, errno.EACCES)
    assert as_user(volume, CAROL, CAROL, probe) == (False, False, False, errno.EACCES,
                                                     errno.EACCES)
    # A supplementary group counts like the primary one.
    assert as_user(volume, CAROL, CAROL, probe, groups=[CAROL, ALICE]) == (
        True, False, False, 0, errno.EACCES)
    # Root may read and write anything, but execute only what someone may execute.
    assert (os.access(f, os.R_OK), os.access(f, os.W_OK), os.access(f, os.X_OK)) == (
        True, True, False)


def test_utime_permissions(volume: MountedVolume) -> None:
    (volume / "open").write_bytes(b"")
    os.chmod(volume / "open", 0o666)
    (volume / "closed").write_bytes(b"")
    os.chmod(volume / "closed", 0o644)

    def bob() -> list[int]:
        return [_errno_of(os.utime, "open", None),            # "now" needs write access only
                _errno_of(os.utime, "open", ns=(5, 5)),       # explicit times: owner only
                _errno_of(os.utime, "closed", None)]

    assert as_user(volume, BOB, BOB, bob) == [0, errno.EPERM, errno.EACCES]


def test_write_by_another_user_clears_setuid(volume: MountedVolume) -> None:
    f = volume / "prog"
    f.write_bytes(b"#!/bin/sh\n")
    os.chmod(f, 0o6777)

    def bob() -> None:
        with open("prog", "ab") as out:
            out.write(b"echo changed\n")

    as_user(volume, BOB, BOB, bob)
    # write(2) by someone without CAP_FSETID drops set-uid, and set-gid when group-exec.
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    remount(volume)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    assert f.read_bytes() == b"#!/bin/sh\necho changed\n"


def test_directory_write_permission_guards_entries(volume: MountedVolume) -> None:
    os.mkdir(volume / "ro-dir")
    (volume / "ro-dir" / "f").write_bytes(b"")
    os.chmod(volume / "ro-dir", 0o755)

    def alice() -> list[int]:
        return [_errno_of(os.unlink, "ro-dir/f"), _errno_of(os.mkdir, "ro-dir/sub"),
                _errno_of(os.rename, "ro-dir/f", "ro-dir/g"),
                _errno_of(os.open, "ro-dir/new", os.O_CREAT | os.O_WRONLY, 0o644)]

    assert as_user(volume, ALICE, ALICE, alice) == [errno.EACCES] * 4
    assert os.listdir(volume / "ro-dir") == ["f"]
