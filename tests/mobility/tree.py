"""A seeded tree generator with every kind of entry import/export must keep, and an
attribute-by-attribute comparison of two trees (what a user of ``rsync -a`` relies on)."""

from __future__ import annotations

import os
import random
import stat
import time
from pathlib import Path

KiB = 1024
SPARSE_SIZE = 4 * 1024 * KiB
SPARSE_DATA_AT = 2 * 1024 * KiB


def make_tree(root: Path, seed: int, *, files: int = 60) -> None:
    """Directories (odd modes, owners), regular files (empty to 300 KiB, modes with
    set-user-id, owners, times in ns, user xattrs), symlinks (relative, absolute, dangling,
    pointing out of the tree), hard link groups across directories, one sparse file, a FIFO,
    a character device (as root)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root]
    for i in range(8):
        d = rng.choice(dirs) / f"dir{i}"
        d.mkdir()
        dirs.append(d)
    made: list[Path] = []
    for i in range(files):
        p = rng.choice(dirs) / f"file{i}.{rng.choice(['txt', 'bin', 'log', 'tmp'])}"
        size = rng.choice([0, 1, 100, 4096, 65536, 70_000, 300 * KiB])
        p.write_bytes(rng.randbytes(size))
        if rng.random() < 0.3:
            os.setxattr(p, f"user.k{i}", rng.randbytes(rng.randint(0, 40)))
        made.append(p)
    for i in range(6):                          # hard links, some across directories
        first = rng.choice(made)
        os.link(first, rng.choice(dirs) / f"link{i}.bin")
    (root / "sym-rel").symlink_to("dir0/../file-none")
    (root / "sym-abs").symlink_to("/etc/passwd")                 # copied as a link, never followed
    (root / "sym-dir").symlink_to("/etc")                        # never walked into
    (root / os.fsdecode(b"odd\nna\xffme")).write_bytes(b"a name that is not UTF-8, with a newline")
    (root / "sym-out").symlink_to("../../../../outside")
    os.symlink(os.path.relpath(made[0], dirs[1]), dirs[1] / "sym-file")
    sparse = root / "sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
        f.seek(SPARSE_DATA_AT)
        f.write(b"middle" * 1000)
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-dev", 0o640 | stat.S_IFCHR, os.makedev(1, 3))
    for p in [*made, sparse, root / "fifo", root / "null-dev"]:
        os.chown(p, rng.randint(1000, 1010), rng.randint(1000, 1010))
        os.chmod(p, rng.choice([0o644, 0o600, 0o755, 0o4755, 0o2750, 0o444]))
    for p in [root / "sym-rel", root / "sym-abs"]:
        os.chown(p, 1001, 1002, follow_symlinks=False)
    for d in reversed(dirs[1:]):
        os.chown(d, rng.randint(1000, 1010), 1000)
        os.chmod(d, rng.choice([0o755, 0o750, 0o711, 0o1777]))
    set_times(root, rng)


def set_times(root: Path, rng: random.Random) -> None:
    """Times in ns, deepest first (a directory's own last); atime after mtime and recent, so
    reading a file does not move its atime under relatime."""
    now = time.time_ns() - 3600 * 10**9
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            mtime = now - rng.randint(10**9, 10**17)
            os.utime(os.path.join(dirpath, name), ns=(now + rng.randint(0, 10**12), mtime),
                     follow_symlinks=False)
    os.utime(root, ns=(now, now - 5 * 10**9))


def snapshot(root: Path, *, times: bool = True, atimes: bool = True) -> dict[str, tuple[object, ...]]:
    """Every entry: type, mode, owner, size, times, link target, xattrs, content hash, and
    which hard-link group it belongs to (by the first path of its inode)."""
    out: dict[str, tuple[object, ...]] = {}
    first_of: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*filenames, *dirnames]):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            group = first_of.setdefault(st.st_ino, rel) if stat.S_ISREG(st.st_mode) else ""
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
            xattrs = () if stat.S_ISLNK(st.st_mode) else tuple(
                sorted((a, os.getxattr(p, a)) for a in os.listxattr(p) if a.startswith("user.")))
            out[rel] = (st.st_mode, st.st_uid, st.st_gid,
                        st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                        st.st_mtime_ns if times else 0,
                        st.st_atime_ns if times and atimes and stat.S_IFMT(st.st_mode) not in (stat.S_IFDIR, stat.S_IFLNK) else 0,
                        st.st_rdev, link, xattrs, group, st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0)
    for rel, row in out.items():         # contents last: reading moves no time already taken
        p = os.path.join(root, rel)
        if stat.S_ISREG(os.lstat(p).st_mode):
            out[rel] = (*row, _read_noatime(p))
    return out


def _read_noatime(path: str) -> bytes:
    """Contents without moving the atime (relatime would: the tree's ctimes are newer)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def assert_same(src: Path, dst: Path, *, atimes: bool = True) -> None:
    """``atimes=False`` once a mount's files were read (the volume moves atime on READ)."""
    a, b = snapshot(src, atimes=atimes), snapshot(dst, atimes=atimes)
    assert sorted(a) == sorted(b), f"only in source: {sorted(set(a) - set(b))}; only in target: {sorted(set(b) - set(a))}"
    for rel in a:
        assert a[rel] == b[rel], f"{rel}: {a[rel][:11]} != {b[rel][:11]}"
