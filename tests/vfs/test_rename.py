"""rename(2) and renameat2(2) on the VFS without a kernel: every case, its errno, the link
counts it leaves, and that a replaced file's space comes back."""

from __future__ import annotations

import errno
import os
import stat

from galleonfs.engine import snapshots
from galleonfs.vfs.common import RENAME_EXCHANGE, RENAME_NOREPLACE
from galleonfs.vfs.vfs import Vfs

from .util import BS, ROOT, USER, Volume, fails, names, new_file


def content(v: Vfs, parent: int, name: bytes) -> bytes:
    inode = v.lookup(parent, name)
    fh = v.open(inode.ino, False)
    data = v.read(fh, 0, inode.size)
    v.release(fh)
    v.forget([(inode.ino, 1)])
    return data


def mkdir(v: Vfs, parent: int, name: bytes) -> int:
    ino = v.mkdir(parent, name, 0o755, USER).ino
    v.forget([(ino, 1)])
    return ino


def test_a_rename_moves_the_name_and_keeps_the_inode(vol: Volume, vfs: Vfs) -> None:
    f = new_file(vfs, b"old", b"payload")
    d = mkdir(vfs, ROOT, b"d")
    vfs.rename(ROOT, b"old", d, b"new", 0)
    assert names(vfs) == [b"d"] and names(vfs, d) == [b"new"]
    assert vfs.lookup(d, b"new").ino == f.ino
    vfs.forget([(f.ino, 1)])
    fails(vfs, errno.ENOENT, vfs.rename, ROOT, b"old", d, b"again", 0)
    vfs = vol.reopen()
    assert content(vfs, d, b"new") == b"payload"


def test_replacing_a_file_frees_what_only_it_used(vfs: Vfs) -> None:
    new_file(vfs, b"keep", os.urandom(3 * BS))
    new_file(vfs, b"gone", os.urandom(5 * BS))
    assert vfs.engine.used_bytes == 8 * BS
    vfs.rename(ROOT, b"keep", ROOT, b"gone", 0)
    assert names(vfs) == [b"gone"] and vfs.engine.used_bytes == 3 * BS
    assert vfs.getattr(ROOT).nlink == 2


def test_a_replaced_file_that_is_open_lives_until_released(vfs: Vfs) -> None:
    new_file(vfs, b"src", b"new")
    victim = new_file(vfs, b"dst", b"old contents")
    fh = vfs.open(victim.ino, False)
    vfs.rename(ROOT, b"src", ROOT, b"dst", 0)
    assert vfs.read(fh, 0, 100) == b"old contents"
    assert vfs.getattr(victim.ino).nlink == 0
    vfs.release(fh)
    fails(vfs, errno.ENOENT, vfs.getattr, victim.ino)
    assert content(vfs, ROOT, b"dst") == b"new"


def test_replacing_checks_the_kinds_and_emptiness(vfs: Vfs) -> None:
    new_file(vfs, b"file")
    empty = mkdir(vfs, ROOT, b"empty")
    full = mkdir(vfs, ROOT, b"full")
    new_file(vfs, b"x", parent=full)
    src = mkdir(vfs, ROOT, b"src")
    fails(vfs, errno.ENOTDIR, vfs.rename, ROOT, b"src", ROOT, b"file", 0)
    fails(vfs, errno.EISDIR, vfs.rename, ROOT, b"file", ROOT, b"empty", 0)
    fails(vfs, errno.ENOTEMPTY, vfs.rename, ROOT, b"src", ROOT, b"full", 0)
    vfs.rename(ROOT, b"src", ROOT, b"empty", 0)         # an empty directory may be replaced
    assert sorted(names(vfs)) == [b"empty", b"file", b"full"]
    assert vfs.lookup(ROOT, b"empty").ino == src
    fails(vfs, errno.ENOENT, vfs.getattr, empty)
    assert vfs.getattr(ROOT).nlink == 4                  # 2 + its subdirectories empty and full
    vfs.forget([(src, 1)])


def test_a_directory_cannot_move_into_itself(vfs: Vfs) -> None:
    a = mkdir(vfs, ROOT, b"a")
    b = mkdir(vfs, a, b"b")
    fails(vfs, errno.EINVAL, vfs.rename, ROOT, b"a", b, b"a", 0)
    fails(vfs, errno.EINVAL, vfs.rename, ROOT, b"a", a, b"self", 0)
    new_file(vfs, b"f", parent=b)                        # a file may move anywhere
    vfs.rename(b, b"f", ROOT, b"f", 0)


def test_moving_a_directory_moves_a_link_count_and_its_dotdot(vfs: Vfs) -> None:
    a = mkdir(vfs, ROOT, b"a")
    b = mkdir(vfs, ROOT, b"b")
    child = mkdir(vfs, a, b"child")
    assert vfs.getattr(a).nlink == 3 and vfs.getattr(b).nlink == 2
    vfs.rename(a, b"child", b, b"child", 0)
    assert vfs.getattr(a).nlink == 2 and vfs.getattr(b).nlink == 3
    assert vfs.lookup(child, b"..").ino == b
    vfs.forget([(b, 1)])


def test_renaming_onto_another_link_of_the_same_file_does_nothing(vfs: Vfs) -> None:
    f = new_file(vfs, b"a", b"x")
    vfs.forget([(vfs.link(f.ino, ROOT, b"b", USER).ino, 1)])
    lsn = vfs.engine.appended_lsn
    vfs.rename(ROOT, b"a", ROOT, b"b", 0)
    assert vfs.engine.appended_lsn == lsn            # not even a record
    assert sorted(names(vfs)) == [b"a", b"b"] and vfs.getattr(f.ino).nlink == 2


def test_noreplace_refuses_an_existing_target(vfs: Vfs) -> None:
    new_file(vfs, b"a", b"1")
    new_file(vfs, b"b", b"2")
    fails(vfs, errno.EEXIST, vfs.rename, ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE)
    vfs.rename(ROOT, b"a", ROOT, b"c", RENAME_NOREPLACE)
    assert sorted(names(vfs)) == [b"b", b"c"]


def test_exchange_swaps_two_names_in_place(vfs: Vfs) -> None:
    new_file(vfs, b"a", b"AAA")
    new_file(vfs, b"b", b"BBB")
    before = [(e.name, e.next_offset) for e in vfs.readdir(ROOT, 0)]
    vfs.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE)
    assert content(vfs, ROOT, b"a") == b"BBB" and content(vfs, ROOT, b"b") == b"AAA"
    assert [(e.name, e.next_offset) for e in vfs.readdir(ROOT, 0)] == before
    fails(vfs, errno.ENOENT, vfs.rename, ROOT, b"a", ROOT, b"missing", RENAME_EXCHANGE)
    fails(vfs, errno.EINVAL, vfs.rename, ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE | RENAME_NOREPLACE)
    fails(vfs, errno.EINVAL, vfs.rename, ROOT, b"a", ROOT, b"b", 0x80)


def test_exchanging_a_file_and_a_directory_across_directories_moves_the_link_count(vfs: Vfs) -> None:
    a = mkdir(vfs, ROOT, b"a")
    b = mkdir(vfs, ROOT, b"b")
    new_file(vfs, b"f", b"file", parent=a)
    sub = mkdir(vfs, b, b"sub")
    vfs.rename(a, b"f", b, b"sub", RENAME_EXCHANGE)
    assert vfs.lookup(a, b"f").ino == sub and stat.S_ISDIR(vfs.getattr(sub).mode)
    assert vfs.getattr(a).nlink == 3 and vfs.getattr(b).nlink == 2
    assert vfs.lookup(sub, b"..").ino == a
    assert content(vfs, b, b"sub") == b"file"
    vfs.forget([(sub, 1), (a, 1)])


def test_a_replaced_name_keeps_its_place_in_readdir(vfs: Vfs) -> None:
    for name in (b"a", b"b", b"c"):
        new_file(vfs, name)
    place = {e.name: e.next_offset for e in vfs.readdir(ROOT, 0)}
    vfs.rename(ROOT, b"c", ROOT, b"a", 0)
    after = {e.name: e.next_offset for e in vfs.readdir(ROOT, 0)}
    assert after[b"a"] == place[b"a"] and b"c" not in after


def test_rename_inside_a_snapshot_is_read_only(vfs: Vfs) -> None:
    new_file(vfs, b"f", b"x")
    snapshots.create(vfs.engine, "s")
    vfs.snapshots_changed()
    snapdir = vfs.lookup(ROOT, b".snapshots")
    snap_root = vfs.lookup(snapdir.ino, b"s")
    fails(vfs, errno.EROFS, vfs.rename, snap_root.ino, b"f", snap_root.ino, b"g", 0)
    fails(vfs, errno.EROFS, vfs.rename, ROOT, b"f", snap_root.ino, b"g", 0)
    fails(vfs, errno.EROFS, vfs.rename, ROOT, b".snapshots", ROOT, b"x", 0)
    vfs.forget([(snapdir.ino, 1), (snap_root.ino, 1)])
