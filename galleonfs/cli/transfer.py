"""Folder import/export (issue 15): make a target directory tree a copy of a source tree.

``sync(src, dst, options)`` is the whole engine: the commands (``galleonctl volume
import/export``, ``galleonfs import/export``) mount the volume (or a snapshot of it) and call
it with the mount point on one side and the user's directory on the other. Copying through
the mount keeps every byte on the volume's one writer (its worker) and its QoS; nothing here
knows the engine.

What it keeps: contents (holes stay holes: data is found with SEEK_DATA/SEEK_HOLE), modes,
owners (as root), mtime and atime, xattrs, symlinks (copied, never followed), hard links
(one inode group on the source is one on the target), FIFOs and device nodes (as root).
A file is unchanged when its size and mtime match (``checksum``: when its content hash
matches); only changed files are copied, each into a temporary name renamed over the old
one, so a killed run leaves whole files and a re-run copies only what is missing.

What it must not do: follow a symlink, or create anything outside the target. Every target
directory is opened component by component with ``O_NOFOLLOW`` and kept as an fd; every
change is made relative to such an fd with a name read from a source directory (never
``..``, never a ``/``). Source directories are opened the same way. One file's error is
reported with its path and the run goes on; the caller exits non-zero at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import resource
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import names

# 8 threads: each file costs several FUSE round trips (~0.6 ms each, design.md "per-request
# floor"), so a copy into a mount is latency-bound and requests in flight help. Measured on
# 3,000 small files, 2 cores shared with other sessions (load 4-5), --jobs 1/4/8/16: 5.2,
# 3.2, 3.0, 2.7 s in one round and 2.8, 3.7, 4.3, 5.3 s in the next: the load decides more
# than the count does, so 8 (not more) until a quiet machine says otherwise.
JOBS_DEFAULT = 8
JOBS_MAX = 64
COPY_CHUNK_BYTES = 1 << 20          # the FUSE max_write: one WRITE request per chunk
ZERO_PIECE_BYTES = 64 << 10          # the default block size: a hole smaller than that is no hole
_ZERO_PIECE = bytes(ZERO_PIECE_BYTES)
TMP_PREFIX = ".galleon-tmp."        # partial files; a re-run removes them first
EXCLUDE_FILE_BYTES_MAX = 1 << 20
PROGRESS_INTERVAL_S = 0.5

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Options:
    excludes: list[str] = field(default_factory=list)
    dry_run: bool = False
    delete: bool = False
    checksum: bool = False
    jobs: int = JOBS_DEFAULT
    owners: bool = field(default_factory=lambda: os.geteuid() == 0)


@dataclass
class Report:
    copied: int = 0                  # regular files whose content was written
    copied_bytes: int = 0
    unchanged: int = 0               # entries left alone (their data and attributes matched)
    created: int = 0                 # directories, symlinks, links, special files made
    updated: int = 0                 # attributes only (mode, owner)
    deleted: int = 0
    errors: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)   # dry run: what would change

    def summary(self) -> str:
        parts = [f"{self.copied} files copied ({self.copied_bytes} bytes)", f"{self.unchanged} unchanged",
                 f"{self.created} created", f"{self.updated} updated", f"{self.deleted} deleted"]
        if self.errors:
            parts.append(f"{len(self.errors)} errors")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class _Entry:
    rel: str                         # relative path, '/'-separated, no '.' or '..'
    st: os.stat_result


def exclude_patterns(patterns: Iterable[str], files: Iterable[str]) -> list[str]:
    """``--exclude`` values plus the lines of each ``--exclude-from`` file (gitignore syntax)."""
    import pathspec  # here, not at the top: every galleonctl command imports this module

    from ..errors import InvalidArgument

    out = list(patterns)
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read(EXCLUDE_FILE_BYTES_MAX + 1)
        except OSError as exc:
            raise InvalidArgument(f"cannot read the exclude file {path}: {exc.strerror}; give a readable file") from None
        if len(data) > EXCLUDE_FILE_BYTES_MAX:
            raise InvalidArgument(f"the exclude file {path} is larger than 1 MiB; give a shorter list of patterns")
        try:
            out.extend(data.decode().splitlines())
        except UnicodeDecodeError:
            raise InvalidArgument(f"the exclude file {path} is not UTF-8 text; give one pattern per line") from None
    for p in out:
        if "\0" in p:
            raise InvalidArgument(f"an exclude pattern contains a NUL byte ({p!r}); remove it")
        try:
            pathspec.GitIgnoreSpec.from_lines([p])
        except ValueError:
            raise InvalidArgument(what="exclude pattern", value=repr(p),
                                  expected="use gitignore syntax (e.g. '*.tmp', '/build/', '!keep.log')") from None
    return out


class _Tree:
    """Directory fds of one tree, opened component by component without following links."""

    def __init__(self, root: str, *, create: bool) -> None:
        if create:
            os.makedirs(root, exist_ok=True)
        # The root is the one path the user named: it may be a symlink (as for rsync).
        self.fds: dict[str, int] = {"": os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)}
        self.lock = threading.RLock()
        self.root = root

    def open(self, rel: str) -> int:
        fd = self.fds.get(rel)
        if fd is None:
            with self.lock:          # copy threads may ask for the same directory at once
                fd = self.fds.get(rel)
                if fd is None:
                    parent, _, name = rel.rpartition("/")
                    fd = os.open(name, _DIR_FLAGS, dir_fd=self.open(parent))
                    self.fds[rel] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


def _raise_fd_limit() -> None:
    """Two fds per directory stay open for the run: take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Sync:
    """One run: scan the source, then directories, files (in parallel), links, deletions,
    and directory times last (writing inside a directory changes its mtime)."""

    def __init__(self, src: str, dst: str, options: Options,
                 progress: Callable[[Report, int, int, int], None] | None = None) -> None:
        import pathspec

        self.options = options
        self.spec = pathspec.GitIgnoreSpec.from_lines(options.excludes)
        self.src = _Tree(src, create=False)
        new_root = not os.path.lexists(dst)
        self.dst: _Tree | None = None if options.dry_run and new_root else _Tree(dst, create=not options.dry_run)
        self.report = Report()
        self.lock = threading.Lock()
        self.progress = progress
        self.dirs: list[_Entry] = []
        self.files: list[_Entry] = []
        self.links: list[tuple[_Entry, str]] = []        # (a hard link, the first path of its group)
        self.others: list[_Entry] = []                   # symlinks, FIFOs, devices
        self.present: dict[str, set[str]] = {}           # source directory -> names kept
        self.total_bytes = 0
        # Target directories this run made: nothing in them needs a lookup first (on a FUSE
        # mount each lookup is a round trip; a fresh import saves one per entry).
        self.fresh: set[str] = {""} if new_root else set()

    # --- helpers ---------------------------------------------------------------------------
    def _error(self, rel: str, exc: OSError) -> None:
        # Names are bytes: one that is not UTF-8 or holds a newline is shown escaped, on one line.
        line = f"{names.one_line(rel or '.')}: {exc.strerror or exc}"
        with self.lock:
            self.report.errors.append(line)
        print(f"error: {line}", file=sys.stderr)

    def _note(self, what: str, rel: str) -> None:
        with self.lock:
            self.report.lines.append(f"{what} {names.one_line(rel)}")

    def _dst_dir(self, rel: str) -> int | None:
        """The target directory's fd, or None when it does not exist (dry run)."""
        if self.dst is None:
            return None
        try:
            return self.dst.open(rel)
        except FileNotFoundError:
            if self.options.dry_run:
                return None
            raise

    def _dst_lstat(self, rel: str) -> os.stat_result | None:
        parent, name = _split(rel)
        if parent in self.fresh:
            return None
        dfd = self._dst_dir(parent)
        if dfd is None:
            return None
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    # --- scan ------------------------------------------------------------------------------
    def scan(self) -> None:
        groups: dict[tuple[int, int], str] = {}
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                fd = self.src.open(rel_dir)
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self._error(rel_dir, exc)
                continue
            kept = self.present.setdefault(rel_dir, set())
            for e in entries:
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if e.name.startswith(TMP_PREFIX):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError as exc:
                    self._error(rel, exc)
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if self.spec.match_file(rel + "/" if is_dir else rel):
                    continue
                kept.add(e.name)
                entry = _Entry(rel, st)
                if is_dir:
                    self.dirs.append(entry)
                    stack.append(rel)
                elif stat.S_ISREG(st.st_mode):
                    first = groups.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else rel
                    if first == rel:
                        self.files.append(entry)
                        self.total_bytes += st.st_size
                    else:
                        self.links.append((entry, first))
                elif not stat.S_ISSOCK(st.st_mode):
                    self.others.append(entry)
        self.dirs.sort(key=lambda d: d.rel)          # parents before children

    # --- directories -----------------------------------------------------------------------
    def make_dirs(self) -> None:
        for d in self.dirs:
            try:
                cur = self._dst_lstat(d.rel)
                if cur is not None and stat.S_ISDIR(cur.st_mode):
                    self._attrs(d, cur)
                    continue
                parent, name = _split(d.rel)
                if self.options.dry_run:
                    self._note("mkdir", d.rel + "/")
                    continue
                pfd = self._dst_dir(parent)
                assert pfd is not None
                if cur is not None:
                    self._remove(pfd, name, cur)
                os.mkdir(name, 0o700, dir_fd=pfd)
                self.fresh.add(d.rel)
                self._set_meta(d, pfd, name, xattrs=True)
                self.report.created += 1
            except OSError as exc:
                self._error(d.rel, exc)

    def dir_times(self) -> None:
        if self.options.dry_run or self.dst is None:
            return
        for d in reversed(self.dirs):
            parent, name = _split(d.rel)
            try:
                pfd = self.dst.open(parent)
                os.utime(name, ns=(d.st.st_atime_ns, d.st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                self._error(d.rel, exc)

    # --- attributes ------------------------------------------------------------------------
    def _attrs(self, e: _Entry, cur: os.stat_result) -> None:
        """Fix mode and owner of an entry whose content is unchanged."""
        want_owner = self.options.owners and (cur.st_uid, cur.st_gid) != (e.st.st_uid, e.st.st_gid)
        want_mode = not stat.S_ISLNK(e.st.st_mode) and stat.S_IMODE(cur.st_mode) != stat.S_IMODE(e.st.st_mode)
        if not (want_owner or want_mode):
            with self.lock:
                self.report.unchanged += 1
            return
        if self.options.dry_run:
            self._note("attrs", e.rel)
            return
        parent, name = _split(e.rel)
        pfd = self._dst_dir(parent)
        assert pfd is not None
        if want_owner:
            os.chown(name, e.st.st_uid, e.st.st_gid, dir_fd=pfd, follow_symlinks=False)
        if want_mode or want_owner:   # chown clears set-user-id: set the mode after it
            _chmod_nofollow(pfd, name, stat.S_IMODE(e.st.st_mode))
        if not stat.S_ISDIR(e.st.st_mode):
            os.utime(name, ns=(e.st.st_atime_ns, e.st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)
        with self.lock:
            self.report.updated += 1

    def _set_meta(self, e: _Entry, pfd: int, name: str, *, xattrs: bool, created_with_mode: bool = False) -> None:
        """Owner, then mode (chown clears set-user-id), xattrs, and times (not a directory's:
        its contents change it; ``dir_times`` sets them last). Each is a FUSE request on a
        mount, so what already holds is skipped: the owner when it is ours, the mode when
        the file was created with it (umask 0 during the run) and has no set-id bits."""
        st = e.st
        is_link = stat.S_ISLNK(st.st_mode)
        if self.options.owners and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(name, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
        if not is_link and not (created_with_mode and not st.st_mode & 0o7000):
            _chmod_nofollow(pfd, name, stat.S_IMODE(st.st_mode))
        if xattrs and not is_link:
            self._copy_xattrs(e, pfd, name)
        if not stat.S_ISDIR(st.st_mode):
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _copy_xattrs(self, e: _Entry, pfd: int, name: str) -> None:
        src_path = self._src_path(e.rel)
        dst_path = f"/proc/self/fd/{pfd}/{name}"
        for attr in os.listxattr(src_path, follow_symlinks=False):
            if attr.startswith("system.") and not self.options.owners:
                continue
            value = os.getxattr(src_path, attr, follow_symlinks=False)
            os.setxattr(dst_path, attr, value, follow_symlinks=False)

    def _src_path(self, rel: str) -> str:
        """A path to a source entry through its directory's fd (no component re-resolved)."""
        parent, name = _split(rel)
        return f"/proc/self/fd/{self.src.open(parent)}/{name}"

    # --- removal ---------------------------------------------------------------------------
    def _remove(self, pfd: int, name: str, st: os.stat_result) -> None:
        """Remove one target entry; a directory with everything under it, through fds."""
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=pfd)
            return
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        try:
            with os.scandir(fd) as it:
                children = [(c.name, c.stat(follow_symlinks=False)) for c in it]
            for child, cst in children:
                self._remove(fd, child, cst)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=pfd)

    def delete_extra(self) -> None:
        """``--delete``: what the source lacks goes, except what the excludes protect."""
        if self.dst is None:
            return
        for rel_dir, kept in self.present.items():
            if rel_dir in self.fresh:
                continue
            try:
                pfd = self._dst_dir(rel_dir)
                if pfd is None:
                    continue
                with os.scandir(pfd) as it:
                    extra = sorted((c.name, c.stat(follow_symlinks=False)) for c in it if c.name not in kept)
            except OSError as exc:
                self._error(rel_dir, exc)
                continue
            for name, st in extra:
                rel = f"{rel_dir}/{name}" if rel_dir else name
                is_dir = stat.S_ISDIR(st.st_mode)
                if self.spec.match_file(rel + "/" if is_dir else rel) and not name.startswith(TMP_PREFIX):
                    continue
                try:
                    if self.options.dry_run:
                        self._note("delete", rel + ("/" if is_dir else ""))
                    else:
                        self._remove(pfd, name, st)
                        self.report.deleted += 1
                except OSError as exc:
                    self._error(rel, exc)

    # --- regular files ---------------------------------------------------------------------
    def _same_content(self, e: _Entry, cur: os.stat_result) -> bool:
        if not stat.S_ISREG(cur.st_mode) or cur.st_size != e.st.st_size:
            return False
        if not self.options.checksum:
            return cur.st_mtime_ns == e.st.st_mtime_ns
        parent, name = _split(e.rel)
        pfd = self._dst_dir(parent)
        assert pfd is not None
        return _digest(self.src.open(parent), name) == _digest(pfd, name)

    def copy_file(self, e: _Entry) -> None:
        try:
            cur = self._dst_lstat(e.rel)
            if cur is not None and self._same_content(e, cur):
                self._attrs(e, cur)
                if cur.st_mtime_ns != e.st.st_mtime_ns and not self.options.dry_run:
                    parent, name = _split(e.rel)
                    pfd = self._dst_dir(parent)
                    os.utime(name, ns=(e.st.st_atime_ns, e.st.st_mtime_ns), dir_fd=pfd)
                return
            if self.options.dry_run:
                self._note("copy", e.rel)
                return
            parent, name = _split(e.rel)
            pfd = self._dst_dir(parent)
            assert pfd is not None
            tmp = TMP_PREFIX + name
            try:
                written = self._write_copy(e, pfd, tmp)
                self._set_meta(e, pfd, tmp, xattrs=True, created_with_mode=True)
                if cur is not None and stat.S_ISDIR(cur.st_mode):
                    self._remove(pfd, name, cur)
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except OSError:
                # A failed file leaves nothing behind (a full volume gets its space back); a
                # killed run leaves the temporary name, which the next run removes.
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=pfd)
                raise
            with self.lock:
                self.report.copied += 1
                self.report.copied_bytes += written
        except OSError as exc:
            self._error(e.rel, exc)

    def _write_copy(self, e: _Entry, pfd: int, tmp: str) -> int:
        """Copy the data segments only (SEEK_DATA/SEEK_HOLE), so holes stay holes."""
        parent, name = _split(e.rel)
        sfd = _open_source(name, self.src.open(parent))
        try:
            if not stat.S_ISREG(os.fstat(sfd).st_mode):
                raise OSError(errno.EINVAL, "changed into something that is not a regular file during the copy")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            mode = stat.S_IMODE(e.st.st_mode) & 0o777
            try:
                dfd = os.open(tmp, flags, mode, dir_fd=pfd)
            except FileExistsError:          # a killed run's partial file: start it again
                os.unlink(tmp, dir_fd=pfd)
                dfd = os.open(tmp, flags, mode, dir_fd=pfd)
            try:
                written = high = 0
                for start, end in _data_ranges(sfd, e.st.st_size):
                    pos = start
                    while pos < end:
                        chunk = os.pread(sfd, min(COPY_CHUNK_BYTES, end - pos), pos)
                        if not chunk:
                            break
                        n, last = _write_nonzero(dfd, chunk, pos)
                        written += n
                        high = max(high, last)
                        pos += len(chunk)
                if high != e.st.st_size:      # a hole at the end, or the source shrank
                    os.ftruncate(dfd, e.st.st_size)
                return written
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    # --- links and special files -----------------------------------------------------------
    def make_other(self, e: _Entry) -> None:
        try:
            cur = self._dst_lstat(e.rel)
            mode = e.st.st_mode
            target = os.readlink(self._src_path(e.rel)) if stat.S_ISLNK(mode) else None
            if cur is not None and stat.S_IFMT(cur.st_mode) == stat.S_IFMT(mode):
                parent, name = _split(e.rel)
                pfd = self._dst_dir(parent)
                same = (os.readlink(name, dir_fd=pfd) == target if target is not None
                        else cur.st_rdev == e.st.st_rdev)
                if same:
                    self._attrs(e, cur)
                    return
            if self.options.dry_run:
                self._note("create", e.rel)
                return
            parent, name = _split(e.rel)
            pfd = self._dst_dir(parent)
            assert pfd is not None
            tmp = TMP_PREFIX + name
            if parent not in self.fresh:
                _unlink_quiet(pfd, tmp)
            if target is not None:
                os.symlink(target, tmp, dir_fd=pfd)
            else:
                os.mknod(tmp, stat.S_IMODE(mode) | stat.S_IFMT(mode), e.st.st_rdev, dir_fd=pfd)
            self._set_meta(e, pfd, tmp, xattrs=False)
            if cur is not None and stat.S_ISDIR(cur.st_mode):
                self._remove(pfd, name, cur)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            self.report.created += 1
        except OSError as exc:
            self._error(e.rel, exc)

    def make_link(self, e: _Entry, first: str) -> None:
        try:
            cur = self._dst_lstat(e.rel)
            have = self._dst_lstat(first)
            if cur is not None and have is not None and (cur.st_dev, cur.st_ino) == (have.st_dev, have.st_ino):
                with self.lock:
                    self.report.unchanged += 1
                return
            if self.options.dry_run:
                self._note("link", f"{e.rel} => {first}")
                return
            parent, name = _split(e.rel)
            pfd = self._dst_dir(parent)
            fparent, fname = _split(first)
            ffd = self._dst_dir(fparent)
            assert pfd is not None and ffd is not None
            tmp = TMP_PREFIX + name
            if parent not in self.fresh:
                _unlink_quiet(pfd, tmp)
            os.link(fname, tmp, src_dir_fd=ffd, dst_dir_fd=pfd, follow_symlinks=False)
            if cur is not None and stat.S_ISDIR(cur.st_mode):
                self._remove(pfd, name, cur)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            self.report.created += 1
        except OSError as exc:
            self._error(e.rel, exc)

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> Report:
        _raise_fd_limit()
        umask = os.umask(0)              # files are created with their final mode
        try:
            self.scan()
            root = _Entry("", os.fstat(self.src.fds[""]))
            self.make_dirs()
            self._copy_files()
            for e in self.others:
                self.make_other(e)
            for e, first in self.links:
                self.make_link(e, first)
            if self.options.delete:
                self.delete_extra()
            self.dir_times()
            if not self.options.dry_run and self.dst is not None:
                try:
                    os.utime(self.dst.fds[""], ns=(root.st.st_atime_ns, root.st.st_mtime_ns))
                except OSError as exc:
                    self._error("", exc)
        finally:
            os.umask(umask)
            self.src.close()
            if self.dst is not None:
                self.dst.close()
        return self.report

    def _copy_files(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        done = 0
        with ThreadPoolExecutor(max_workers=max(1, min(self.options.jobs, JOBS_MAX))) as pool:
            last = time.monotonic()
            for _ in pool.map(self.copy_file, self.files):
                done += 1
                now = time.monotonic()
                if self.progress is not None and now - last >= PROGRESS_INTERVAL_S:
                    last = now
                    self.progress(self.report, done, len(self.files), self.total_bytes)
        if self.progress is not None:
            self.progress(self.report, done, len(self.files), self.total_bytes)


def _chmod_nofollow(dir_fd: int, name: str, mode: int) -> None:
    """chmod that never follows a symlink: fchmodat(2) has no working AT_SYMLINK_NOFOLLOW, so
    an entry swapped for a symlink between our create and our chmod (someone else writing
    in the target) would otherwise move the mode of whatever it points to. The entry is
    pinned with O_PATH|O_NOFOLLOW and changed through its /proc/self/fd link."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "became a symlink during the copy; left alone")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def _unlink_quiet(pfd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=pfd)


def _write_nonzero(fd: int, chunk: bytes, pos: int) -> tuple[int, int]:
    """Write ``chunk`` at ``pos`` into a new file, leaving out its all-zero 64 KiB pieces so
    they stay holes. Needed because a FUSE mount (pyfuse3 has no lseek handler) reports no
    holes to SEEK_HOLE: exporting from a volume would otherwise fill every hole with zeros.
    Returns the bytes written and the offset just past the last one written (0: none)."""
    written = high = 0
    view = memoryview(chunk)
    start = 0
    while start < len(chunk):
        # Skip zero pieces, then write the run of non-zero pieces in one call.
        while start < len(chunk) and view[start:start + ZERO_PIECE_BYTES] == _ZERO_PIECE[:len(view[start:start + ZERO_PIECE_BYTES])]:
            start += ZERO_PIECE_BYTES
        end = start
        while end < len(chunk) and view[end:end + ZERO_PIECE_BYTES] != _ZERO_PIECE[:len(view[end:end + ZERO_PIECE_BYTES])]:
            end += ZERO_PIECE_BYTES
        end = min(end, len(chunk))
        if end > start:
            written += os.pwrite(fd, view[start:end], pos + start)
            high = pos + end
        start = end
    return written, high


def _data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The file's data as ``(start, end)`` ranges; one range when holes cannot be seen."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:      # no data after pos: a hole to the end
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, end))
            pos = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [(0, size)]
    return ranges


def _open_source(name: str, dir_fd: int) -> int:
    """Open a source file for reading without moving its atime (O_NOATIME: the owner's or
    root's right; anyone else reads it the ordinary way), so the copy keeps the source's
    atime and a re-run sees it unchanged."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        return os.open(name, flags, dir_fd=dir_fd)


def _digest(dir_fd: int, name: str) -> bytes:
    h = hashlib.blake2b()
    fd = _open_source(name, dir_fd)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(COPY_CHUNK_BYTES):
            h.update(chunk)
    return h.digest()


class Progress:
    """files, bytes, rate and ETA on stderr, rewritten in place; silent off a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()

    def __call__(self, report: Report, done: int, total: int, total_bytes: int) -> None:
        if not self.tty:
            return
        elapsed = max(time.monotonic() - self.start, 1e-3)
        rate = report.copied_bytes / elapsed
        left = max(total_bytes - report.copied_bytes, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        print(f"\r{self.label}: {done}/{total} files, {report.copied_bytes / 1e6:.1f} MB, "
              f"{rate / 1e6:.1f} MB/s, ETA {eta}   ", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def sync(src: str, dst: str, options: Options, label: str = "copying") -> Report:
    """Make ``dst`` a copy of ``src`` (see the module docstring), with progress on a terminal."""
    progress = Progress(label)
    report = Sync(src, dst, options, progress).run()
    progress.end()
    return report


# --- what the commands share -----------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="gitignore-style pattern of paths to leave out (and to keep on --delete); repeatable")
    p.add_argument("--exclude-from", action="append", default=[], metavar="FILE",
                   help="a file of such patterns, one a line; repeatable")
    p.add_argument("--dry-run", "-n", action="store_true", help="print what would change and change nothing")
    p.add_argument("--delete", action="store_true", help="remove from the target what the source lacks")
    p.add_argument("--checksum", "-c", action="store_true",
                   help="compare contents by hash whenever sizes match, instead of mtime (slower; catches "
                        "edits that kept size and mtime)")
    p.add_argument("--jobs", "-j", type=int, default=JOBS_DEFAULT, metavar="N",
                   help=f"files copied in parallel (default {JOBS_DEFAULT}, at most {JOBS_MAX})")


def options_from(args: argparse.Namespace) -> Options:
    from ..errors import InvalidArgument

    if not 1 <= args.jobs <= JOBS_MAX:
        raise InvalidArgument(what="--jobs", value=str(args.jobs), expected=f"give 1 to {JOBS_MAX}")
    return Options(excludes=exclude_patterns(args.exclude, args.exclude_from), dry_run=args.dry_run,
                   delete=args.delete, checksum=args.checksum, jobs=args.jobs)


def check_dir(path: str, what: str) -> str:
    """An existing directory given by the user, as an absolute path."""
    from ..errors import NotFound

    path = os.path.abspath(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise NotFound(f"the {what} {path} does not exist or is not a directory; give a directory")
    return path


def check_target(path: str, what: str) -> str:
    """A target directory: absent (it is created) or a directory, as an absolute path."""
    from ..errors import InvalidArgument

    path = os.path.abspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InvalidArgument(f"the {what} {path} exists and is not a directory; give a directory or a new path")
    return path


def finish(report: Report, what: str, *, dry_run: bool) -> int:
    """Print the dry run's list or the summary; errors make the exit code 1 (each was printed)."""
    from ..errors import ExitCode

    for line in report.lines:
        print(line)
    if dry_run:
        print(f"{what}: dry run, nothing changed; {len(report.lines)} changes listed, {report.unchanged} unchanged")
    else:
        print(f"{what}: {report.summary()}")
    if report.errors:
        print(f"{what}: {len(report.errors)} entries could not be copied (listed above)", file=sys.stderr)
        return ExitCode.ERROR
    return ExitCode.OK
