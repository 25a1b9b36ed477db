"""Model-based POSIX test: the same random operations on a host directory and on a mount.

The model is the kernel's own ext4 (the test's tmp dir). A hypothesis state machine applies
every operation to both sides and requires the same outcome: the same return value, or the
same errno. After every step it compares the whole tree: names, file types, permission
bits, link counts, sizes, contents, symlink targets, extended attributes, and which names
are hard links of one another. A ``remount`` rule closes every descriptor, unmounts,
mounts again and compares again, so what the worker stored (not only what the kernel's
caches hold) is checked, and every mtime must survive the remount unchanged.

One volume and one mount serve the whole run (mkfs and mount cost about a second); each
example works in a fresh directory ``exN`` on both sides, so examples do not interfere.
At the end the volume is unmounted (exit code 0), the worker log must hold no warnings,
and fsck must find it clean.

Budget: ``GALLEONFS_HYPOTHESIS_PROFILE=ci`` (the default) stays inside CI's three minutes
on a 2-core VM; ``thorough`` runs five times as many, longer examples. A failure is shrunk
to a short sequence of steps (hypothesis gives up shrinking after five minutes); the
``Draw n (path)`` lines of its report say which paths each step used.

Accepted differences between the two sides, each kept out of the comparison on purpose:

* directory ``st_size`` and every ``st_blocks``: ext4 reports its own allocation units;
* timestamps are not compared between the sides (clocks differ), except where they are
  exact: atime and mtime right after ``utime``, every mtime across a remount (same side),
  and whether a write or ftruncate moved the mtime (when the host's surely moved).
  Not whether ``truncate(2)`` to the same size does: ext4 moves the mtime, tmpfs does not,
  and FUSE's kernel side (writeback cache) keeps its own mtime and sends none, like tmpfs;
* ``SEEK_DATA``/``SEEK_HOLE``: GalleonFS has no ``lseek`` handler, so the kernel treats a
  FUSE file as one data extent; the rule only uses SEEK_SET/CUR/END;
* xattr values stay small (at most 255 bytes, three names): ext4 keeps all of a file's
  xattrs in one 4 KiB block and answers ENOSPC beyond it, where GalleonFS allows 64 KiB.

Its findings so far, each shrunk to a small test, are in test_model_regressions.py.

What it must not do: serve FUSE in this process, or touch galleonfs/ internals; it only
uses syscalls and ``MountedVolume``.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import random
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from galleonfs.engine.fsck import fsck
from galleonfs.testing.mount import MountedVolume

T = TypeVar("T")

# --- settings --------------------------------------------------------------------------------
# ci: 100 examples x 50 steps (about 5,000 compared operations and 130 remounts) took
# 85-110 s on a 2-core VM shared with other test runs; CI's budget is 3 minutes.
# thorough: 500 x 60, about 6 minutes. No deadline: a remount step takes ~0.3 s.
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILES = {
    "ci": settings(max_examples=100, stateful_step_count=50, **_COMMON),
    "thorough": settings(max_examples=500, stateful_step_count=60, **_COMMON),
}
PROFILE_NAME = os.environ.get("GALLEONFS_HYPOTHESIS_PROFILE", "ci")
# A passing ci run takes about a minute; a failing one adds hypothesis's shrinking, which
# it bounds at five minutes, so the timeout leaves room for the report instead of cutting
# it off.
TIMEOUT_S = {"ci": 900, "thorough": 6 * 3600}

VOLUME_SIZE = 2 << 30
BLOCK_SIZE = 64 * 1024          # the volume's block size, and the unit of sampled reads
WHOLE_FILE_MAX = 4 << 20        # bigger (sparse) files are compared block by block
FDS_MAX = 5                     # descriptors kept open across steps
REMOUNTS_PER_EXAMPLE_MAX = 2
WARNING_WORDS = (" WARNING ", " ERROR ", " CRITICAL ")

# --- names and values --------------------------------------------------------------------
# Three names and depth 3 make collisions (EEXIST, ENOTEMPTY, ENOTDIR ...) frequent.
NAMES = ("a", "b", "c")
# A symlink lives at depth 1 to 3 under ``w``; no target climbs more than one level, so
# every link resolves inside the example's directory (``exN``), on both sides alike.
TARGETS = ("a", "b", "a/b", "b/c/a", "../a", ".", "c/", "")
OFFSETS_EDGE = (0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 131071, 131072, 1 << 20,
                (5 << 20) + 3, (1 << 32) - 2, (1 << 32) + 4097, (1 << 40) - 7)
LENGTHS_EDGE = (0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 131073)
XATTR_NAMES = ("user.a", "user.b", "user.c", "user.", "user." + "x" * 250, "user." + "y" * 251)
TIMES_NS = (0, 1, 999_999_999, 10**18 + 123, 1_700_000_000_123_456_789, -10**9, -1,
            2**31 * 10**9, 2**33 * 10**9 + 5)
OPEN_FLAGS = {"O_CREAT": os.O_CREAT, "O_EXCL": os.O_EXCL, "O_TRUNC": os.O_TRUNC,
              "O_APPEND": os.O_APPEND, "O_DIRECTORY": os.O_DIRECTORY,
              "O_NOFOLLOW": os.O_NOFOLLOW}
ACCESS = {"O_RDONLY": os.O_RDONLY, "O_WRONLY": os.O_WRONLY, "O_RDWR": os.O_RDWR}
RENAME_FLAGS = {"": 0, "RENAME_NOREPLACE": 1, "RENAME_EXCHANGE": 2}
MODES = (0o644, 0o600, 0o755, 0o000, 0o4755, 0o2775, 0o1777, 0o7777)

# Mostly plain paths; sometimes a trailing "/" or "/." (ENOTDIR, EINVAL, EEXIST).
SUFFIXES = ("",) * 6 + ("/", "/.")
random_paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
offsets = st.one_of(st.sampled_from(OFFSETS_EDGE), st.integers(0, 300_000))
lengths = st.one_of(st.sampled_from(LENGTHS_EDGE), st.integers(0, 200_000))
fd_slots = st.integers(0, FDS_MAX - 1)


@dataclass(frozen=True)
class Data:
    """Bytes to write, described briefly so that a failing step prints readably."""

    kind: str            # "random", "zeros", or "sparse" (zeros ending in one non-zero byte)
    length: int
    seed: int

    def bytes(self) -> bytes:
        if self.kind == "zeros":
            return bytes(self.length)
        if self.kind == "sparse":
            return bytes(self.length - 1) + bytes([self.seed | 1]) if self.length else b""
        return random.Random(self.seed).randbytes(self.length)


datas = st.builds(Data, st.sampled_from(("random", "zeros", "sparse")), lengths,
                  st.integers(0, 255))
xattr_values = st.builds(lambda n, seed: random.Random(seed).randbytes(n),
                         st.sampled_from((0, 1, 10, 255)), st.integers(0, 255))


# --- syscalls Python lacks -------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int
AT_FDCWD = -100


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old), None, str(new))


# --- outcomes --------------------------------------------------------------------------------
def attempt(fn: Callable[[], T]) -> tuple[str, T | str]:
    """``("ok", value)`` or ``("err", "ENOENT")``: the thing both sides must agree on."""
    try:
        return "ok", fn()
    except OSError as exc:
        return "err", errno.errorcode.get(exc.errno or 0, str(exc.errno))


def stat_view(st_: os.stat_result) -> tuple[str, int, int, int | None]:
    """What of a stat result must match: type, permission bits, links, size (not of dirs)."""
    kind = stat.S_IFMT(st_.st_mode)
    size = None if stat.S_ISDIR(st_.st_mode) else st_.st_size
    return _KINDS.get(kind, oct(kind)), stat.S_IMODE(st_.st_mode), st_.st_nlink, size


_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}


# --- trees -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    nlink: int
    size: int | None
    target: str | None
    xattrs: tuple[tuple[str, bytes], ...]
    content: tuple[tuple[int, str], ...] | None     # (offset, digest) per compared region


@dataclass
class Tree:
    entries: dict[str, Entry]
    links: list[tuple[str, ...]]                    # names that are one inode (hard links)
    mtimes: dict[str, int]


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    stack = [""]
    while stack:
        rel = stack.pop()
        for name in sorted(os.listdir(root / rel)):
            child = f"{rel}/{name}" if rel else name
            st_ = os.lstat(root / child)
            yield child, st_
            if stat.S_ISDIR(st_.st_mode):
                stack.append(child)


def read_exact(fd: int, offset: int, length: int) -> bytes:
    parts = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 20), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(parts)


def read_regions(path: Path, regions: list[tuple[int, int]], *, evict: bool) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if evict:
            # Drop the clean pages the kernel holds, so reads reach the worker (dirty
            # pages stay until written back; the remount rule covers those).
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return [read_exact(fd, off, n) for off, n in regions]
    finally:
        os.close(fd)


def host_data_blocks(path: Path) -> set[int]:
    """Blocks holding data in a sparse host file, from SEEK_DATA/SEEK_HOLE (ext4 has them)."""
    blocks: set[int] = set()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        pos = 0
        while True:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return blocks
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            blocks.update(range(start // BLOCK_SIZE, (end - 1) // BLOCK_SIZE + 1))
            pos = end
    finally:
        os.close(fd)


def snapshot(root: Path, regions: Callable[[str, int], list[tuple[int, int]]], *,
             evict: bool, xattrs: bool) -> Tree:
    entries: dict[str, Entry] = {}
    inodes: dict[int, list[str]] = {}
    mtimes: dict[str, int] = {}
    for rel, st_ in walk(root):
        path = root / rel
        kind, mode, nlink, size = stat_view(st_)
        target = os.readlink(path) if kind == "link" else None
        names = sorted(os.listxattr(path, follow_symlinks=False)) if xattrs else []
        values = tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
        content = None
        if kind == "file":
            assert size is not None
            spans = regions(rel, size)
            datas_ = read_regions(path, spans, evict=evict)
            content = tuple((off, hashlib.blake2b(d, digest_size=12).hexdigest())
                            for (off, _), d in zip(spans, datas_, strict=True))
        if kind in ("file", "link"):
            inodes.setdefault(st_.st_ino, []).append(rel)
        mtimes[rel] = st_.st_mtime_ns
        entries[rel] = Entry(kind, mode, nlink, size, target, values, content)
    links = sorted(tuple(sorted(v)) for v in inodes.values() if len(v) > 1)
    return Tree(entries, links, mtimes)


def tree_diff(host: Tree, mnt: Tree) -> list[str]:
    out = []
    for rel in sorted(host.entries.keys() | mnt.entries.keys()):
        h, m = host.entries.get(rel), mnt.entries.get(rel)
        if h != m:
            out.append(f"  {rel}:\n    host:      {h}\n    galleonfs: {m}")
    if host.links != mnt.links:
        out.append(f"  hard links: host {host.links}, galleonfs {mnt.links}")
    return out


def first_difference(host: Path, mnt: Path, spans: list[tuple[int, int]]) -> str:
    """Where two files' bytes first differ within ``spans``, for the failure message."""
    for (offset, _), a, b in zip(spans, read_regions(host, spans, evict=False),
                                 read_regions(mnt, spans, evict=False), strict=True):
        if a != b:
            i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            return (f"contents differ first at byte {offset + i}: host "
                    f"{a[i:i + 8].hex() or 'EOF'}, galleonfs {b[i:i + 8].hex() or 'EOF'}")
    return "contents differ (but not when read again: a cache or timing effect)"


# --- the mount, shared by every example ------------------------------------------------------
@dataclass
class Sides:
    host_root: Path
    volume: MountedVolume
    xattrs: bool                # the host supports user xattrs: compare them
    examples: int = 0
    remounts: int = 0
    steps: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def note(self, what: str, outcome: tuple[str, object]) -> None:
        self.steps += 1
        self.outcomes[what.split("(", 1)[0], "ok" if outcome[0] == "ok" else str(outcome[1])] += 1

    def ensure_mounted(self) -> None:
        """Mount again if an earlier example ended with the volume down (a failed remount,
        a crashed worker), so that hypothesis can replay and shrink that example."""
        volume = self.volume
        if volume.proc is not None and volume.proc.poll() is not None:
            volume.wait_exit()
        if volume.proc is None:
            volume.mount()

    def summary(self) -> str:
        """Which outcomes the run reached: a rule that never succeeds tests little."""
        ops: dict[str, list[str]] = {}
        for (op, result), n in sorted(self.outcomes.items()):
            ops.setdefault(op, []).append(f"{result} {n}")
        return "\n".join(f"  {op}: {', '.join(parts)}" for op, parts in ops.items())


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.fail("FUSE tests cannot run: /dev/fuse or fusermount3 is missing")
    base = tmp_path_factory.mktemp("posix-model")
    host_root = base / "host"
    host_root.mkdir()
    xattrs = host_has_user_xattrs(host_root)
    volume = MountedVolume.create(base / "galleon", size=VOLUME_SIZE, block_size=BLOCK_SIZE)
    try:
        yield Sides(host_root, volume, xattrs)
    finally:
        if volume.proc is not None:
            code = volume.unmount()
            assert code == 0, f"worker exited with {code}:\n{volume.log()}"
    loud = [line for line in volume.log().splitlines() if any(w in line for w in WARNING_WORDS)]
    assert not loud, "the mount worker logged warnings:\n" + "\n".join(loud)
    report = fsck(str(volume.volume_dir))
    assert report.clean, report.render()


def host_has_user_xattrs(root: Path) -> bool:
    """ext4 and tmpfs (since Linux 6.6) support user xattrs; some container file systems
    do not. Without them the model has nothing to compare xattrs with, and the xattr rules
    and the xattr part of the tree comparison are left out (the run prints that)."""
    probe = root / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return os.getxattr(probe, "user.probe") == b"1"
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        probe.unlink()


@dataclass
class FdPair:
    host: int
    mnt: int
    what: str                   # how it was opened, for messages

    def close(self) -> None:
        for fd in (self.host, self.mnt):
            os.close(fd)


@dataclass
class Touched:
    """Blocks any write or truncate touched: where a sparse file is compared."""

    blocks: set[int] = field(default_factory=set)

    def add(self, offset: int, length: int) -> None:
        last = (offset + max(length, 1) - 1) // BLOCK_SIZE
        self.blocks.update(range(offset // BLOCK_SIZE, last + 1))


class PosixModel(RuleBasedStateMachine):
    """One example: a fresh ``exN/w`` on both sides, a few names and descriptors in it, and
    up to ``stateful_step_count`` operations, each compared as it happens; the invariant
    compares the whole of ``exN`` after every step."""

    def __init__(self, sides: Sides) -> None:
        super().__init__()
        self.sides = sides
        sides.ensure_mounted()
        sides.examples += 1
        self.name = f"ex{sides.examples}"
        for root in self.bases():
            (root / "w").mkdir(parents=True)
        self.fds: list[FdPair] = []
        self.touched = Touched()
        self.remounts = 0
        self.entries: dict[str, Entry] = {}    # the host's tree under w/, after the last step
        self.existing: list[str] = []
        self.dirs: list[str] = [""]             # directories among them (and w/ itself)

    # --- plumbing ------------------------------------------------------------------------------
    def bases(self) -> tuple[Path, Path]:
        return self.sides.host_root / self.name, self.sides.volume.mountpoint / self.name

    def both(self, what: str, fn: Callable[[Path], T]) -> tuple[tuple[str, T | str], tuple[str, T | str]]:
        """Run ``fn(w)`` on the host, then on the mount; the outcomes must be equal."""
        host_w, mnt_w = (base / "w" for base in self.bases())
        host = attempt(lambda: fn(host_w))
        mnt = attempt(lambda: fn(mnt_w))
        self.sides.note(what, host)
        assert host == mnt, f"{what}: host {host}, galleonfs {mnt}"
        return host, mnt

    def both_fd(self, what: str, slot: int, fn: Callable[[int], T]) -> tuple[str, T | str]:
        pair = self.fds[slot % len(self.fds)]
        unlinked = os.fstat(pair.host).st_nlink == 0
        host = attempt(lambda: fn(pair.host))
        mnt = attempt(lambda: fn(pair.mnt))
        # The summary counts operations on unlinked files apart: they must happen.
        self.sides.note(f"{what.split('(')[0]}[unlinked](" if unlinked else what, host)
        assert host == mnt, f"{what} on fd ({pair.what}): host {host}, galleonfs {mnt}"
        return host

    def close_all(self) -> None:
        while self.fds:
            self.fds.pop().close()

    def regions(self, rel: str, size: int) -> list[tuple[int, int]]:
        if size <= WHOLE_FILE_MAX:
            return [(0, size)]
        host_path = self.bases()[0] / rel
        try:
            data_blocks = host_data_blocks(host_path)
        except OSError:                         # only the mount has it: the diff says so
            data_blocks = set()
        blocks = self.touched.blocks | data_blocks | {0, (size - 1) // BLOCK_SIZE}
        return [(b * BLOCK_SIZE, BLOCK_SIZE) for b in sorted(blocks) if b * BLOCK_SIZE < size]

    def compare_trees(self, *, evict: bool) -> tuple[Tree, Tree]:
        host_base, mnt_base = self.bases()
        xattrs = self.sides.xattrs
        host = snapshot(host_base, self.regions, evict=False, xattrs=xattrs)
        mnt = snapshot(mnt_base, self.regions, evict=evict, xattrs=xattrs)
        diff = tree_diff(host, mnt)
        for rel in sorted(host.entries.keys() & mnt.entries.keys()):
            h, m = host.entries[rel], mnt.entries[rel]
            if h.kind == m.kind == "file" and h.content != m.content:
                spans = self.regions(rel, max(h.size or 0, m.size or 0))
                diff.append(f"  {rel}: {first_difference(host_base / rel, mnt_base / rel, spans)}")
        assert not diff, "trees differ:\n" + "\n".join(diff)
        inside = {rel[2:]: entry for rel, entry in host.entries.items() if rel.startswith("w/")}
        self.entries = inside
        self.existing = sorted(inside)
        self.dirs = ["", *(rel for rel, e in inside.items() if e.kind == "dir")]
        return host, mnt

    def path(self, data: st.DataObject, label: str = "path", *, new: bool = False,
             prefer: str | None = None) -> str:
        """A path under w/: an existing name, a new name in an existing directory (depth at
        most 3), or any name. Random paths alone failed with ENOENT in most steps, so rules
        that create (``new``) get fresh names as often as existing ones, the others mostly
        existing names, and half the time one of the kind they work on (``prefer``: an
        entry kind, or "xattr" for entries that have xattrs). Without that, in 500
        examples getxattr never once found an attribute and readlink mostly hit EINVAL."""
        shallow = [d for d in self.dirs if d.count("/") < 2]
        fresh = st.builds(lambda d, n: f"{d}/{n}" if d else n, st.sampled_from(shallow),
                          st.sampled_from(NAMES))
        existing = [st.sampled_from(self.existing)] if self.existing else []
        options = [*existing, fresh, random_paths] if new else [*existing * 3, fresh, random_paths]
        liked = [rel for rel, e in self.entries.items()
                 if e.kind == prefer or (prefer == "xattr" and e.xattrs)]
        if liked:
            options = [st.sampled_from(liked)] * len(options) + options
        choice = st.one_of(*options)
        return data.draw(st.tuples(choice, st.sampled_from(SUFFIXES)).map("".join), label=label)

    def size(self, data: st.DataObject, current: int | None) -> int:
        """A new size for a file: any offset, or (one time in four) the size it has, which
        is where truncate's rules about times differ (a file system must not stamp a time
        the kernel did not send: test_model_regressions.py)."""
        sizes = offsets if current is None else st.one_of(offsets, offsets, offsets, st.just(current))
        return data.draw(sizes, label="size")

    def xattr_name(self, data: st.DataObject, path: str) -> str:
        """One of the fixed names, or (half the time) one the entry has on the host."""
        entry = self.entries.get(path)
        present = [name for name, _ in entry.xattrs] if entry else []
        names = st.sampled_from(XATTR_NAMES)
        if present:
            names = st.one_of(names, st.sampled_from(present))
        return data.draw(names, label="name")

    # --- a starting tree -----------------------------------------------------------------------
    # Hypothesis enables a random subset of the rules in each example (swarm testing); an
    # example without mkdir or open would otherwise run every step against an empty
    # directory and see nothing but ENOENT.
    @initialize(layout=st.lists(st.tuples(random_paths, st.sampled_from(("dir", "file", "link")),
                                          datas, st.sampled_from(TARGETS)),
                                min_size=2, max_size=8))
    def populate(self, layout: list[tuple[str, str, Data, str]]) -> None:
        host_w = self.bases()[0] / "w"
        for path, kind, data, to in layout:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if not os.path.lexists(host_w / parent):
                    self.both(f"mkdir({parent!r})", lambda w, p=parent: os.mkdir(w / p))
            if kind == "dir":
                self.both(f"mkdir({path!r})", lambda w, p=path: os.mkdir(w / p))
            elif kind == "link":
                self.both(f"symlink({to!r}, {path!r})", lambda w, p=path, t=to: os.symlink(t, w / p))
            else:
                self.both(f"create({path!r}, {data})",
                          lambda w, p=path, d=data: (w / p).write_bytes(d.bytes()))
            if kind != "link" and data.seed % 2 and self.sides.xattrs:
                # Attributes to start with: else get/remove/replace rarely find one.
                name = XATTR_NAMES[data.seed % 3]
                self.both(f"setxattr({path!r}, {name!r})",
                          lambda w, p=path, n=name: os.setxattr(w / p, n, b"v" * (len(n) + 1)))
        self.compare_trees(evict=False)
        # Descriptors to the first files, so descriptor rules have something to work on.
        for rel in [r for r, e in self.entries.items() if e.kind == "file"][:2]:
            self.open_pair(rel, os.O_RDWR, f"open({rel!r}, O_RDWR)")

    # --- files and descriptors -----------------------------------------------------------------
    @rule(data=st.data(), access=st.sampled_from(sorted(ACCESS)),
          flags=st.lists(st.sampled_from(sorted(OPEN_FLAGS)), unique=True, max_size=3),
          mode=st.sampled_from(MODES))
    def open(self, data: st.DataObject, access: str, flags: list[str], mode: int) -> None:
        path = self.path(data, new="O_CREAT" in flags)
        bits = ACCESS[access]
        for name in flags:
            bits |= OPEN_FLAGS[name]
        self.open_pair(path, bits, f"open({path!r}, {'|'.join([access, *flags])}, {mode:o})", mode)

    def open_pair(self, path: str, flags: int, what: str, mode: int = 0o644) -> None:
        fds: list[int] = []

        def do(w: Path) -> bool:
            fds.append(os.open(w / path, flags, mode))
            return True

        try:
            host, _ = self.both(what, do)
        except AssertionError:
            for fd in fds:          # one side opened: a descriptor left open keeps the
                os.close(fd)        # mount busy, and the unmount at the end would fail
            raise
        if host[0] == "ok":
            self.fds.append(FdPair(fds[0], fds[1], what))
            if len(self.fds) > FDS_MAX:
                self.fds.pop(0).close()

    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots)
    def close(self, slot: int) -> None:
        self.fds.pop(slot % len(self.fds)).close()

    # Writes and reads are split into four rules (not one with a flag) so that, among the
    # rules hypothesis picks from uniformly, I/O gets its share against the name rules.
    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots, offset=offsets, data=datas)
    def pwrite(self, slot: int, offset: int, data: Data) -> None:
        buf = data.bytes()
        before = self.fd_mtimes(slot)
        result = self.both_fd(f"pwrite(@{offset}, {data})", slot,
                              lambda fd: os.pwrite(fd, buf, offset))
        self.after_write(slot, result, offset, buf, before)

    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots, data=datas)
    def write(self, slot: int, data: Data) -> None:
        """At the file position (or, with O_APPEND, at the end)."""
        buf = data.bytes()
        before = self.fd_mtimes(slot)
        result = self.both_fd(f"write({data})", slot, lambda fd: os.write(fd, buf))
        self.after_write(slot, result, None, buf, before)

    def after_write(self, slot: int, result: tuple[str, object], offset: int | None,
                    buf: bytes, before: tuple[int, int] | None) -> None:
        self.both_fd("tell()", slot, lambda fd: os.lseek(fd, 0, os.SEEK_CUR))
        if result[0] != "ok":
            return
        # Where the bytes went: at ``offset``, or at the file position, or (O_APPEND, even
        # for pwrite, which then leaves the position alone) at the end.
        pair = self.fds[slot % len(self.fds)]
        ends = (os.lseek(pair.host, 0, os.SEEK_CUR), os.fstat(pair.host).st_size)
        for start in {*(max(0, end - len(buf)) for end in ends), offset or 0}:
            self.touched.add(start, len(buf))
        if buf:
            self.check_mtime_moved(slot, before, "write")

    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots, offset=offsets, length=lengths)
    def pread(self, slot: int, offset: int, length: int) -> None:
        self.both_fd(f"pread(@{offset}, {length})", slot, lambda fd: os.pread(fd, length, offset))

    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots, length=lengths,
          seek=st.none() | st.tuples(st.sampled_from((0, 1, -1, 4096, -65537, 1 << 32)),
                                     st.sampled_from(("SEEK_SET", "SEEK_CUR", "SEEK_END"))))
    def read(self, slot: int, length: int, seek: tuple[int, str] | None) -> None:
        """lseek (maybe), then read at the file position."""
        pair = self.fds[slot % len(self.fds)]
        # A directory's offsets are the file system's own cookies: ext4 answers SEEK_END
        # with LLONG_MAX, tmpfs with EINVAL; there is no common truth to compare with.
        if seek is not None and not stat.S_ISDIR(os.fstat(pair.host).st_mode):
            offset, whence = seek
            how = getattr(os, whence)
            self.both_fd(f"lseek({offset}, {whence})", slot, lambda fd: os.lseek(fd, offset, how))
        self.both_fd(f"read({length})", slot, lambda fd: os.read(fd, length))

    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots, data=st.data())
    def ftruncate(self, slot: int, data: st.DataObject) -> None:
        pair = self.fds[slot % len(self.fds)]
        size = self.size(data, os.fstat(pair.host).st_size)
        before = self.fd_mtimes(slot)
        result = self.both_fd(f"ftruncate({size})", slot, lambda fd: os.ftruncate(fd, size))
        if result[0] == "ok":
            self.touched.add(size, 1)
            self.check_mtime_moved(slot, before, "ftruncate")

    @precondition(lambda self: self.fds)
    @rule(slot=fd_slots, how=st.sampled_from(("fsync", "fdatasync", "fstat")))
    def sync_or_stat(self, slot: int, how: str) -> None:
        if how == "fstat":
            self.both_fd("fstat", slot, lambda fd: stat_view(os.fstat(fd)))
        else:
            self.both_fd(how, slot, getattr(os, how))

    def fd_mtimes(self, slot: int) -> tuple[int, int] | None:
        pair = self.fds[slot % len(self.fds)]
        try:
            return os.fstat(pair.host).st_mtime_ns, os.fstat(pair.mnt).st_mtime_ns
        except OSError:
            return None

    def check_mtime_moved(self, slot: int, before: tuple[int, int] | None, what: str) -> None:
        """Content changed: if the host's mtime was set more than a second ago (by ``utime``;
        ext4's clock is coarse, so only then is a change certain to show), the two mtimes
        must both move, or both stay."""
        after = self.fd_mtimes(slot)
        if before is None or after is None or before[0] > time.time_ns() - 10**9:
            return
        host_moved, mnt_moved = after[0] != before[0], after[1] != before[1]
        assert host_moved == mnt_moved, (
            f"{what}: mtime moved on host: {host_moved}, on galleonfs: {mnt_moved} "
            f"(galleonfs {before[1]} -> {after[1]})")

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        path = self.path(data, prefer="file")
        entry = self.entries.get(path)
        size = self.size(data, entry.size if entry and entry.kind == "file" else None)
        result, _ = self.both(f"truncate({path!r}, {size})", lambda w: os.truncate(w / path, size))
        if result[0] == "ok":
            self.touched.add(size, 1)

    # --- names ---------------------------------------------------------------------------------
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def mkdir(self, data: st.DataObject, mode: int) -> None:
        path = self.path(data, new=True)
        self.both(f"mkdir({path!r}, {mode:o})", lambda w: os.mkdir(w / path, mode))

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        path = self.path(data, prefer="dir")
        self.both(f"rmdir({path!r})", lambda w: os.rmdir(w / path))

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = self.path(data, prefer="file")
        self.both(f"unlink({path!r})", lambda w: os.unlink(w / path))

    @rule(data=st.data(), flags=st.sampled_from(sorted(RENAME_FLAGS)))
    def rename(self, data: st.DataObject, flags: str) -> None:
        src, dst = self.path(data, "src"), self.path(data, "dst", new=True)
        bits = RENAME_FLAGS[flags]
        self.both(f"renameat2({src!r}, {dst!r}, {flags or 0})",
                  lambda w: renameat2(w / src, w / dst, bits))

    @rule(data=st.data(), follow=st.booleans())
    def link(self, data: st.DataObject, follow: bool) -> None:
        src, dst = self.path(data, "src", prefer="file"), self.path(data, "dst", new=True)
        self.both(f"link({src!r}, {dst!r}, follow={follow})",
                  lambda w: os.link(w / src, w / dst, follow_symlinks=follow))

    @rule(to=st.sampled_from(TARGETS), data=st.data())
    def symlink(self, to: str, data: st.DataObject) -> None:
        path = self.path(data, new=True)
        self.both(f"symlink({to!r}, {path!r})", lambda w: os.symlink(to, w / path))

    @rule(data=st.data(), how=st.sampled_from(("lstat", "stat", "readlink", "listdir")))
    def inspect(self, data: st.DataObject, how: str) -> None:
        path = self.path(data, prefer={"readlink": "link", "listdir": "dir"}.get(how))
        calls: dict[str, Callable[[Path], object]] = {
            "lstat": lambda p: stat_view(os.lstat(p)),
            "stat": lambda p: stat_view(os.stat(p)),
            "readlink": os.readlink,
            "listdir": lambda p: sorted(os.listdir(p)),
        }
        self.both(f"{how}({path!r})", lambda w: calls[how](w / path))

    # --- attributes ----------------------------------------------------------------------------
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def chmod(self, data: st.DataObject, mode: int) -> None:
        path = self.path(data)
        self.both(f"chmod({path!r}, {mode:o})", lambda w: os.chmod(w / path, mode))

    @rule(data=st.data(), atime=st.sampled_from(TIMES_NS), mtime=st.sampled_from(TIMES_NS),
          follow=st.booleans())
    def utime(self, data: st.DataObject, atime: int, mtime: int, follow: bool) -> None:
        path = self.path(data)

        def do(w: Path) -> tuple[int, int]:
            os.utime(w / path, ns=(atime, mtime), follow_symlinks=follow)
            st_ = os.stat(w / path, follow_symlinks=follow)
            return st_.st_atime_ns, st_.st_mtime_ns

        host, _ = self.both(f"utime({path!r}, ns=({atime}, {mtime}), follow={follow})", do)
        if host[0] == "ok":
            assert host[1] == (atime, mtime), f"model: ext4 did not keep the times: {host[1]}"

    @precondition(lambda self: self.sides.xattrs)
    @rule(data=st.data(), value=xattr_values,
          flags=st.sampled_from((0, os.XATTR_CREATE, os.XATTR_REPLACE)), follow=st.booleans())
    def setxattr(self, data: st.DataObject, value: bytes, flags: int, follow: bool) -> None:
        path = self.path(data, prefer="xattr")
        name = self.xattr_name(data, path)
        self.both(f"setxattr({path!r}, {name!r}, {len(value)} bytes, flags={flags}, follow={follow})",
                  lambda w: os.setxattr(w / path, name, value, flags, follow_symlinks=follow))

    @precondition(lambda self: self.sides.xattrs)
    @rule(data=st.data(), how=st.sampled_from(("getxattr", "removexattr", "listxattr")),
          follow=st.booleans())
    def xattr(self, data: st.DataObject, how: str, follow: bool) -> None:
        path = self.path(data, prefer="xattr")
        name = self.xattr_name(data, path)
        calls: dict[str, Callable[[Path], object]] = {
            "getxattr": lambda p: os.getxattr(p, name, follow_symlinks=follow),
            "removexattr": lambda p: os.removexattr(p, name, follow_symlinks=follow),
            "listxattr": lambda p: sorted(os.listxattr(p, follow_symlinks=follow)),
        }
        shown = "" if how == "listxattr" else f", {name!r}"
        self.both(f"{how}({path!r}{shown}, follow={follow})", lambda w: calls[how](w / path))

    # --- the volume ----------------------------------------------------------------------------
    # Two per example: a remount costs ~0.3 s, and without a bound hypothesis picked it for
    # one step in nine, which made shrinking a failure take minutes.
    @precondition(lambda self: self.remounts < REMOUNTS_PER_EXAMPLE_MAX)
    @rule()
    def remount(self) -> None:
        """Close every descriptor on both sides, remount, and compare: persistence."""
        self.close_all()
        _, before = self.compare_trees(evict=False)
        volume = self.sides.volume
        code = volume.unmount()
        assert code == 0, f"worker exited with {code}:\n{volume.log()}"
        volume.mount()
        self.sides.remounts += 1
        self.remounts += 1
        _, after = self.compare_trees(evict=False)
        moved = {k: (v, after.mtimes.get(k)) for k, v in before.mtimes.items()
                 if after.mtimes.get(k) != v}
        assert not moved, f"mtimes changed across the remount (before, after): {moved}"

    @invariant()
    def same_tree(self) -> None:
        self.compare_trees(evict=True)

    def teardown(self) -> None:
        self.close_all()
        for base in self.bases():
            if base.exists():
                shutil.rmtree(base)


@pytest.mark.mount
@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S.get(PROFILE_NAME, 300))
def test_posix_model(sides: Sides) -> None:
    if PROFILE_NAME not in PROFILES:
        pytest.fail(f"GALLEONFS_HYPOTHESIS_PROFILE={PROFILE_NAME!r}: known profiles are "
                    f"{', '.join(sorted(PROFILES))}")
    started = time.monotonic()
    run_state_machine_as_test(lambda: PosixModel(sides), settings=PROFILES[PROFILE_NAME])
    print(f"{sides.examples} examples, {sides.steps} compared operations, "
          f"{sides.remounts} remounts in {time.monotonic() - started:.1f} s"
          f"{'' if sides.xattrs else ' (the host has no user xattrs: not compared)'}\n"
          f"{sides.summary()}")
