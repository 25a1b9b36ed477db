"""Backup targets: where a repository's objects live. One small protocol, two implementations.

``Target`` is five calls on whole named objects: ``put`` (atomic: a reader sees the old
object, the new one, or none, never a part), ``get`` (optionally a byte range; a negative
start reads the last bytes), ``list`` (names and sizes under a prefix), ``delete``
(idempotent) and ``head`` (the size, or None). Names are ``/``-separated components of
``[A-Za-z0-9._-]`` chosen by the repository, never by a user (``object_names`` checks them).

* ``DirectoryTarget``: a local or NFS directory. A put writes a temporary file beside the
  object, fsyncs it, renames it over the name and fsyncs the directory (the rename is the
  commit; after power loss an object is whole or absent). Temporaries start with ``.tmp-``
  and are invisible to ``list``; ``sweep_incomplete`` removes old ones.
* ``S3Target`` (``galleonfs.backup.s3``): a bucket and prefix through boto3.

Every failure is one of the errors in ``galleonfs.backup.errors`` whose sentence names the
target by ``url``, which never holds a secret.

What it must not do: interpret the objects, retry forever, or put credentials in ``url``,
``describe()`` or a message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from ..errors import InvalidArgument
from ..storage import fsync_dir
from . import limits
from .errors import ObjectMissing, TargetDenied, TargetFailed, TargetFull, TargetMissing
from .object_names import check_name, check_prefix

TMP_PREFIX = ".tmp-"


class Target(Protocol):
    """What the repository needs from a place that stores objects."""

    @property
    def url(self) -> str:
        """Where the target is, for messages and the catalog; never holds a secret."""
        ...

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name`` atomically, replacing any object of that name."""
        ...

    def get(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """The object's bytes from ``start`` (``length`` of them, or to the end); a negative
        ``start`` means the last ``-start`` bytes. Fewer bytes than asked means the object is
        shorter; a missing object raises ``ObjectMissing``."""
        ...

    def head(self, name: str) -> int | None:
        """The object's size, or None when it does not exist."""
        ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Every object whose name starts with ``prefix`` (a ``/``-terminated folder or
        ""), with its size, in no particular order."""
        ...

    def delete(self, name: str) -> None:
        """Remove ``name``; removing a missing object is not an error."""
        ...

    def sweep_incomplete(self, older_than_s: float) -> int:
        """Remove what interrupted puts left behind (temporary files, multipart uploads)
        older than ``older_than_s``; return how many."""
        ...

    def describe(self) -> dict[str, str]:
        """What recreates this target, without secrets (for the node's catalog)."""
        ...


class DirectoryTarget:
    """A repository in a local or NFS directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.root = Path(path).absolute()
        self._made: set[Path] = set()
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error(exc, "") from None
        if not self.root.is_dir():
            raise TargetMissing(target=self.url, reason="no such directory")

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def describe(self) -> dict[str, str]:
        return {"kind": "directory", "url": self.url}

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def _error(self, exc: OSError, name: str) -> Exception:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return TargetFull(target=self.url, reason=f"{reason} while writing {name or 'the target'}")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return TargetDenied(target=self.url, reason=f"{reason} on {name or 'the directory'}")
        if exc.errno == errno.ENOENT and not self.root.is_dir():
            return TargetMissing(target=self.url, reason="the directory disappeared")
        return TargetFailed(target=self.url, name=name or "the directory", reason=reason)

    def _mkdirs(self, directory: Path) -> None:
        if directory in self._made or directory == self.root:
            return
        missing = []
        d = directory
        while d != self.root and not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir(exist_ok=True)
            fsync_dir(d.parent)
        self._made.add(directory)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        tmp = path.with_name(f"{TMP_PREFIX}{os.urandom(6).hex()}-{path.name}")
        try:
            self._mkdirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error(exc, name) from None

    def get(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                if start < 0:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size + start))
                else:
                    f.seek(start)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            if not self.root.is_dir():
                raise TargetMissing(target=self.url, reason="the directory disappeared") from None
            raise ObjectMissing(name=name, target=self.url, context="") from None
        except OSError as exc:
            raise self._error(exc, name) from None

    def head(self, name: str) -> int | None:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, name) from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        check_prefix(prefix)
        base = self.root.joinpath(*prefix.rstrip("/").split("/")) if prefix else self.root
        if not self.root.is_dir():
            raise TargetMissing(target=self.url, reason="the directory disappeared")

        def walk_error(exc: OSError) -> None:
            if isinstance(exc, FileNotFoundError) and Path(exc.filename or "") == base:
                return                                  # an empty folder was never made
            raise self._error(exc, prefix) from None

        for dirpath, dirnames, filenames in os.walk(base, onerror=walk_error):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for fname in filenames:
                if fname.startswith(TMP_PREFIX):
                    continue
                name = fname if rel == "." else f"{rel}/{fname}"
                try:
                    size = os.stat(os.path.join(dirpath, fname)).st_size
                except FileNotFoundError:
                    continue                            # deleted while we listed
                except OSError as exc:
                    raise self._error(exc, name) from None
                yield name, size

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, name) from None
        try:
            fsync_dir(path.parent)
        except OSError as exc:
            raise self._error(exc, name) from None

    def sweep_incomplete(self, older_than_s: float = limits.incomplete_age_s) -> int:
        removed, now = 0, time.time()
        for dirpath, _dirs, filenames in os.walk(self.root):
            for fname in filenames:
                if not fname.startswith(TMP_PREFIX):
                    continue
                path = os.path.join(dirpath, fname)
                try:
                    if now - os.stat(path).st_mtime > older_than_s:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._error(exc, fname) from None
        return removed


def open_target(url: str, *, endpoint: str | None = None, region: str | None = None,
                credentials_env: str | None = None, profile: str | None = None,
                create: bool = False) -> Target:
    """A target from its address: ``file:///srv/backups``, ``/srv/backups`` or
    ``s3://bucket/prefix`` (with ``endpoint``, ``region`` and where credentials come from:
    ``credentials_env`` names a variable prefix, ``AWS`` reads ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``; ``profile`` a profile of the shared AWS files; neither
    means boto3's default chain). ``create`` makes a missing directory (never a bucket)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(f"backup target {url}: a file URL names a local path (file:///path)")
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if not path.startswith("/"):
            raise InvalidArgument(f"backup target {url}: give an absolute path")
        return DirectoryTarget(path, create=create)
    if parsed.scheme == "s3":
        from .s3 import S3Target

        return S3Target(parsed.netloc, parsed.path.strip("/"), endpoint=endpoint, region=region,
                        credentials_env=credentials_env, profile=profile)
    raise InvalidArgument(f"backup target {url}: use file:///path or s3://bucket/prefix")
