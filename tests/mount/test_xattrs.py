"""Extended attributes: the four calls, flags, limits, namespaces, object types, persistence."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from galleonfs.testing.mount import MountedVolume

from .util import as_user, expect_errno, remount

pytestmark = pytest.mark.mount

_libc = ctypes.CDLL(None, use_errno=True)


def _raw_getxattr(path: os.PathLike[str], name: str, size: int) -> int:
    """getxattr(2) with a caller-chosen buffer size; returns the length or raises OSError."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.getxattr(os.fsencode(path), name.encode(), buf if size else None,
                       ctypes.c_size_t(size))
    if n < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(n)


def test_set_get_list_remove(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"")
    assert os.listxattr(p) == []
    os.setxattr(p, "user.a", b"1")
    os.setxattr(p, "user.empty", b"")
    os.setxattr(p, "trusted.t", b"\0binary\xff")
    os.setxattr(p, "security.s", b"sec")
    assert os.getxattr(p, "user.a") == b"1"
    assert os.getxattr(p, "user.empty") == b""
    assert os.getxattr(p, "trusted.t") == b"\0binary\xff"
    assert sorted(os.listxattr(p)) == ["security.s", "trusted.t", "user.a", "user.empty"]
    os.setxattr(p, "user.a", b"overwritten")
    assert os.getxattr(p, "user.a") == b"overwritten"
    assert _raw_getxattr(p, "user.a", 0) == len(b"overwritten")       # size query
    expect_errno(errno.ERANGE, _raw_getxattr, p, "user.a", 3)            # buffer too small
    os.removexattr(p, "user.a")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.a")
    expect_errno(errno.ENODATA, os.removexattr, p, "user.a")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.never")
    assert sorted(os.listxattr(p)) == ["security.s", "trusted.t", "user.empty"]


def test_create_and_replace_flags(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"")
    expect_errno(errno.ENODATA, os.setxattr, p, "user.k", b"v", os.XATTR_REPLACE)
    assert os.listxattr(p) == []
    os.setxattr(p, "user.k", b"v1", os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, p, "user.k", b"v2", os.XATTR_CREATE)
    assert os.getxattr(p, "user.k") == b"v1"
    os.setxattr(p, "user.k", b"v3", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.k") == b"v3"


def test_limits_and_namespaces(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"")
    big = os.urandom(64 * 1024)
    os.setxattr(p, "user.big", big)
    assert os.getxattr(p, "user.big") == big
    expect_errno(errno.E2BIG, os.setxattr, p, "user.bigger", big + b"x")
    longest = "user." + "n" * 250                             # 255 bytes: XATTR_NAME_MAX
    os.setxattr(p, longest, b"ok")
    assert os.getxattr(p, longest) == b"ok"
    expect_errno(errno.ERANGE, os.setxattr, p, longest + "n", b"no")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, "unknown.ns", b"v")
    expect_errno(errno.EOPNOTSUPP, os.getxattr, p, "unknown.ns")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, "nodot", b"v")
    assert sorted(os.listxattr(p)) == sorted(["user.big", longest])


def test_name_list_is_bounded(volume: MountedVolume) -> None:
    # listxattr(2) cannot return more than 64 KiB of names (XATTR_LIST_MAX): a file must not
    # get more names than that, or nobody could list them. ENOSPC, like a full ext4 block.
    p = volume / "f"
    p.write_bytes(b"")
    names = []
    with pytest.raises(OSError) as info:
        for i in range(400):
            name = f"user.{i:04d}" + "x" * 240
            os.setxattr(p, name, b"")
            names.append(name)
    assert info.value.errno == errno.ENOSPC
    assert 200 < len(names) < 300
    listed = os.listxattr(p)
    assert sorted(listed) == names
    assert sum(len(n) + 1 for n in listed) <= 64 * 1024
    os.removexattr(p, names[0])
    os.setxattr(p, "user.fits-again", b"")


def test_xattrs_on_dirs_symlinks_and_specials(volume: MountedVolume) -> None:
    root = volume.mountpoint
    os.mkdir(root / "d")
    os.symlink("d", root / "sym")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "d", "user.on-dir", b"dir")
    # Through the link: the attribute lands on the directory it points to.
    assert os.getxattr(root / "sym", "user.on-dir") == b"dir"
    # user.* is for files and directories only; the kernel refuses it on links and FIFOs.
    expect_errno(errno.EPERM, os.setxattr, root / "sym", "user.x", b"v", follow_symlinks=False)
    expect_errno(errno.ENODATA, os.getxattr, root / "sym", "user.x", follow_symlinks=False)
    expect_errno(errno.EPERM, os.setxattr, root / "fifo", "user.x", b"v")
    os.setxattr(root / "sym", "trusted.on-link", b"link", follow_symlinks=False)
    os.setxattr(root / "fifo", "trusted.on-fifo", b"fifo")
    assert os.listxattr(root / "sym", follow_symlinks=False) == ["trusted.on-link"]
    assert os.listxattr(root / "d") == ["user.on-dir"]
    remount(volume)
    assert os.getxattr(root / "d", "user.on-dir") == b"dir"
    assert os.getxattr(root / "sym", "trusted.on-link", follow_symlinks=False) == b"link"
    assert os.getxattr(root / "fifo", "trusted.on-fifo") == b"fifo"


def test_xattrs_survive_remount_and_die_with_the_file(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"")
    values = {f"user.k{i}": os.urandom(i * 100) for i in range(20)}
    for name, value in values.items():
        os.setxattr(p, name, value)
    os.removexattr(p, "user.k3")
    del values["user.k3"]
    remount(volume)
    assert sorted(os.listxattr(p)) == sorted(values)
    for name, value in values.items():
        assert os.getxattr(p, name) == value
    os.unlink(p)
    p.write_bytes(b"")                                     # a new file under the old name
    assert os.listxattr(p) == []


def test_trusted_namespace_is_for_root_only(volume: MountedVolume) -> None:
    p = volume / "f"
    p.write_bytes(b"")
    os.chmod(p, 0o666)
    os.setxattr(p, "trusted.secret", b"root only")
    os.setxattr(p, "user.public", b"for all")

    def user() -> list[str]:
        try:
            os.setxattr("f", "trusted.mine", b"x")
        except OSError as exc:
            assert exc.errno == errno.EPERM, exc
        else:
            raise AssertionError("a user set a trusted.* attribute")
        try:
            os.getxattr("f", "trusted.secret")
        except OSError as exc:
            assert exc.errno == errno.ENODATA, exc
        else:
            raise AssertionError("a user read a trusted.* attribute")
        return sorted(os.listxattr("f"))

    # ext4 and tmpfs leave trusted.* names out of the list for unprivileged callers.
    assert as_user(volume, 1000, 1000, user) == ["user.public"]
    assert sorted(os.listxattr(p)) == ["trusted.secret", "user.public"]
