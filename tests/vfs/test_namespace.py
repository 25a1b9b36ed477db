"""Names in directories, on the VFS without a kernel: each failure's errno (what the
application would see), link counts, special files, set-group-id directories, the
reserved ``.snapshots`` name, and that all of it persists."""

from __future__ import annotations

import errno
import stat

from galleonfs.vfs.vfs import Ctx, Vfs

from .util import ROOT, USER, Volume, fails, names, new_file


def test_lookup_finds_what_was_created_and_counts_the_kernels_references(vfs: Vfs) -> None:
    f = new_file(vfs, b"f", b"data")
    found = vfs.lookup(ROOT, b"f")
    assert found.ino == f.ino and found.size == 4 and stat.S_ISREG(found.mode)
    assert vfs.lookup(ROOT, b".").ino == ROOT and vfs.lookup(ROOT, b"..").ino == ROOT
    vfs.forget([(f.ino, 1), (ROOT, 2)])


def test_lookup_failures_have_the_errno_linux_gives(vfs: Vfs) -> None:
    f = new_file(vfs, b"file")
    fails(vfs, errno.ENOENT, vfs.lookup, ROOT, b"missing")
    fails(vfs, errno.ENOTDIR, vfs.lookup, f.ino, b"x")
    fails(vfs, errno.ENAMETOOLONG, vfs.lookup, ROOT, b"n" * 256)
    fails(vfs, errno.ENOENT, vfs.getattr, 999_999)


def test_names_are_checked_before_anything_is_created(vfs: Vfs) -> None:
    fails(vfs, errno.ENAMETOOLONG, vfs.mkdir, ROOT, b"n" * 256, 0o755, USER)
    fails(vfs, errno.EINVAL, vfs.mkdir, ROOT, b"a/b", 0o755, USER)
    fails(vfs, errno.EINVAL, vfs.mknod, ROOT, b"", 0o100644, 0, USER)
    fails(vfs, errno.EINVAL, vfs.create, ROOT, b"nul\0", 0o644, USER)
    longest = vfs.mkdir(ROOT, b"n" * 255, 0o755, USER)              # 255 bytes is allowed
    assert names(vfs) == [b"n" * 255]
    vfs.forget([(longest.ino, 1)])


def test_creating_an_existing_name_is_eexist_whatever_the_type(vfs: Vfs) -> None:
    new_file(vfs, b"taken")
    fails(vfs, errno.EEXIST, vfs.mkdir, ROOT, b"taken", 0o755, USER)
    fails(vfs, errno.EEXIST, vfs.create, ROOT, b"taken", 0o644, USER)
    fails(vfs, errno.EEXIST, vfs.symlink, ROOT, b"taken", b"target", USER)
    fails(vfs, errno.EEXIST, vfs.mknod, ROOT, b"taken", stat.S_IFIFO | 0o644, 0, USER)


def test_a_directorys_link_count_is_two_plus_its_subdirectories(vol: Volume, vfs: Vfs) -> None:
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)
    assert d.nlink == 2 and vfs.getattr(ROOT).nlink == 3
    a = vfs.mkdir(d.ino, b"a", 0o755, USER)
    b = vfs.mkdir(d.ino, b"b", 0o755, USER)
    new_file(vfs, b"file", parent=d.ino)              # files do not count
    assert vfs.getattr(d.ino).nlink == 4
    assert vfs.lookup(a.ino, b"..").ino == d.ino
    vfs.forget([(a.ino, 1), (b.ino, 1), (d.ino, 2)])
    vfs.rmdir(d.ino, b"a")
    assert vfs.getattr(d.ino).nlink == 3
    vfs = vol.reopen()
    assert vfs.getattr(d.ino).nlink == 3 and vfs.getattr(ROOT).nlink == 3


def test_rmdir_and_unlink_refuse_the_wrong_kind_of_entry(vfs: Vfs) -> None:
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)
    new_file(vfs, b"inside", parent=d.ino)
    new_file(vfs, b"f")
    fails(vfs, errno.ENOTEMPTY, vfs.rmdir, ROOT, b"d")
    fails(vfs, errno.ENOTDIR, vfs.rmdir, ROOT, b"f")
    fails(vfs, errno.EISDIR, vfs.unlink, ROOT, b"d")
    fails(vfs, errno.EINVAL, vfs.rmdir, d.ino, b".")
    fails(vfs, errno.ENOTEMPTY, vfs.rmdir, d.ino, b"..")
    fails(vfs, errno.ENOENT, vfs.unlink, ROOT, b"missing")
    fails(vfs, errno.ENOENT, vfs.rmdir, ROOT, b"missing")
    vfs.unlink(d.ino, b"inside")
    vfs.rmdir(ROOT, b"d")
    assert names(vfs) == [b"f"]
    vfs.forget([(d.ino, 1)])


def test_a_removed_directory_takes_no_new_entries(vfs: Vfs) -> None:
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)            # the kernel still holds it
    vfs.rmdir(ROOT, b"d")
    assert vfs.getattr(d.ino).nlink == 0
    fails(vfs, errno.ENOENT, vfs.create, d.ino, b"f", 0o644, USER)
    fails(vfs, errno.ENOENT, vfs.mkdir, d.ino, b"sub", 0o755, USER)
    vfs.forget([(d.ino, 1)])                         # now it goes
    fails(vfs, errno.ENOENT, vfs.getattr, d.ino)


def test_hard_links_share_the_inode_and_count(vfs: Vfs) -> None:
    f = new_file(vfs, b"a", b"shared")
    linked = vfs.link(f.ino, ROOT, b"b", USER)
    assert linked.ino == f.ino and linked.nlink == 2
    fails(vfs, errno.EEXIST, vfs.link, f.ino, ROOT, b"a", USER)
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)
    fails(vfs, errno.EPERM, vfs.link, d.ino, ROOT, b"d2", USER)
    vfs.unlink(ROOT, b"a")
    assert vfs.getattr(f.ino).nlink == 1
    fh = vfs.open(f.ino, False)
    assert vfs.read(fh, 0, 100) == b"shared"
    vfs.release(fh)
    vfs.forget([(f.ino, 1), (d.ino, 1)])


def test_symlinks_keep_their_target_and_refuse_bad_ones(vol: Volume, vfs: Vfs) -> None:
    link = vfs.symlink(ROOT, b"l", b"../somewhere/else", USER)
    assert stat.S_ISLNK(link.mode) and link.size == len(b"../somewhere/else")
    assert vfs.readlink(link.ino) == b"../somewhere/else"
    fails(vfs, errno.ENOENT, vfs.symlink, ROOT, b"empty", b"", USER)
    fails(vfs, errno.ENAMETOOLONG, vfs.symlink, ROOT, b"long", b"t" * 4096, USER)
    assert vfs.readlink(vfs.symlink(ROOT, b"max", b"t" * 4095, USER).ino) == b"t" * 4095
    f = new_file(vfs, b"f")
    fails(vfs, errno.EINVAL, vfs.readlink, f.ino)
    vfs = vol.reopen()
    assert vfs.readlink(link.ino) == b"../somewhere/else"


def test_mknod_makes_special_files_and_refuses_directories(vfs: Vfs) -> None:
    fifo = vfs.mknod(ROOT, b"fifo", stat.S_IFIFO | 0o600, 1234, USER)
    assert stat.S_ISFIFO(fifo.mode) and fifo.rdev == 0      # rdev only means something for devices
    dev = vfs.mknod(ROOT, b"dev", stat.S_IFCHR | 0o600, 0x0103, USER)
    assert stat.S_ISCHR(dev.mode) and dev.rdev == 0x0103
    plain = vfs.mknod(ROOT, b"plain", 0o644, 0, USER)            # no type: a regular file
    assert stat.S_ISREG(plain.mode)
    fails(vfs, errno.EINVAL, vfs.mknod, ROOT, b"dir", stat.S_IFDIR | 0o755, 0, USER)
    fails(vfs, errno.EINVAL, vfs.mknod, ROOT, b"link", stat.S_IFLNK | 0o777, 0, USER)


def test_new_entries_take_owner_from_the_request_and_group_from_a_setgid_directory(vfs: Vfs) -> None:
    d = vfs.mkdir(ROOT, b"shared", 0o2775, Ctx(0, 50))
    assert d.mode & stat.S_ISGID and d.gid == 50
    f = vfs.create(d.ino, b"f", 0o644, USER)
    assert (f.uid, f.gid) == (1000, 50)
    sub = vfs.mkdir(d.ino, b"sub", 0o755, USER)
    assert sub.gid == 50 and sub.mode & stat.S_ISGID
    plain = vfs.mkdir(ROOT, b"plain", 0o755, USER)
    assert (plain.uid, plain.gid) == (1000, 1000) and not plain.mode & stat.S_ISGID
    vfs.release(f.ino)


def test_dot_snapshots_in_the_root_is_reserved(vfs: Vfs) -> None:
    fails(vfs, errno.EEXIST, vfs.mkdir, ROOT, b".snapshots", 0o755, USER)
    fails(vfs, errno.EEXIST, vfs.create, ROOT, b".snapshots", 0o644, USER)
    fails(vfs, errno.EROFS, vfs.unlink, ROOT, b".snapshots")
    fails(vfs, errno.EROFS, vfs.rmdir, ROOT, b".snapshots")
    d = vfs.mkdir(ROOT, b"d", 0o755, USER)
    assert vfs.mkdir(d.ino, b".snapshots", 0o755, USER).nlink == 2   # only the root's is reserved
    assert names(vfs) == [b"d"]                                      # and readdir does not show it


def test_creating_and_removing_stamp_the_parent(vfs: Vfs) -> None:
    before = vfs.getattr(ROOT)
    new_file(vfs, b"f")
    after = vfs.getattr(ROOT)
    assert after.mtime_ns > before.mtime_ns and after.ctime_ns == after.mtime_ns
    vfs.unlink(ROOT, b"f")
    assert vfs.getattr(ROOT).mtime_ns > after.mtime_ns


def test_readdir_lists_every_type_with_its_attributes(vfs: Vfs) -> None:
    f = new_file(vfs, b"file", b"x" * 10)
    vfs.mkdir(ROOT, b"dir", 0o700, USER)
    vfs.symlink(ROOT, b"link", b"file", USER)
    entries = {e.name: e for e in vfs.readdir(ROOT, 0)}
    assert set(entries) == {b".", b"..", b"file", b"dir", b"link"}
    assert entries[b"file"].inode.ino == f.ino and entries[b"file"].inode.size == 10
    assert stat.S_ISDIR(entries[b"dir"].inode.mode) and stat.S_IMODE(entries[b"dir"].inode.mode) == 0o700
    assert stat.S_ISLNK(entries[b"link"].inode.mode)
    offsets = [e.next_offset for e in vfs.readdir(ROOT, 0)]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert [e.name for e in vfs.readdir(ROOT, offsets[2])] == [e.name for e in vfs.readdir(ROOT, 0)][3:]
