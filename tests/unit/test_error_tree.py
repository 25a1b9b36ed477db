"""The error tree written out: every class is a ``class`` statement with a message template,
and the translations the edges rely on (errno, gRPC status, exit code) stay what they were."""

from __future__ import annotations

import ast
import errno
import inspect
import string

import pytest

from galleonfs import errors

# The backup repository's errors are written out in a module of their own (issue 13). Imported
# here, so that the tree this file sees is the same whether or not another test imported
# galleonfs.backup first (tests/backup does, and then it ran before this file).
from galleonfs.backup import errors as backup_errors

ERROR_MODULES = (errors, backup_errors)


def _classes() -> dict[str, type[errors.GalleonError]]:
    found = {"GalleonError": errors.GalleonError}
    pending = [errors.GalleonError]
    while pending:
        for sub in pending.pop().__subclasses__():
            found[sub.__name__] = sub
            pending.append(sub)
    return found


# (class, its base, errno, gRPC status, exit code): stable API. A change here is a change
# users see (the kernel's errno, an orchestrator's status, a script's exit code).
TRANSLATIONS = [
    ("GalleonError", "Exception", errno.EIO, "INTERNAL", 1),
    ("InvalidArgument", "GalleonError", errno.EINVAL, "INVALID_ARGUMENT", 2),
    ("NotFound", "GalleonError", errno.ENOENT, "NOT_FOUND", 3),
    ("AlreadyExists", "GalleonError", errno.EEXIST, "ALREADY_EXISTS", 4),
    ("Busy", "GalleonError", errno.EBUSY, "FAILED_PRECONDITION", 5),
    ("FailedPrecondition", "GalleonError", errno.EINVAL, "FAILED_PRECONDITION", 1),
    ("Unimplemented", "GalleonError", errno.EOPNOTSUPP, "UNIMPLEMENTED", 1),
    ("NoSpace", "GalleonError", errno.ENOSPC, "RESOURCE_EXHAUSTED", 6),
    ("ReadOnly", "GalleonError", errno.EROFS, "FAILED_PRECONDITION", 1),
    ("PermissionDenied", "GalleonError", errno.EACCES, "PERMISSION_DENIED", 8),
    ("NotPermitted", "PermissionDenied", errno.EPERM, "PERMISSION_DENIED", 8),
    ("Unauthenticated", "GalleonError", errno.EACCES, "UNAUTHENTICATED", 8),
    ("QuotaExceeded", "GalleonError", errno.EDQUOT, "RESOURCE_EXHAUSTED", 6),
    ("Unavailable", "GalleonError", errno.EIO, "UNAVAILABLE", 9),
    ("AuditUnavailable", "Unavailable", errno.EIO, "UNAVAILABLE", 9),
    ("Corrupt", "GalleonError", errno.EIO, "DATA_LOSS", 7),
    ("FormatError", "Corrupt", errno.EIO, "FAILED_PRECONDITION", 7),
    ("HelperFailed", "Corrupt", errno.EIO, "DATA_LOSS", 7),
    ("CatalogDamaged", "Corrupt", errno.EIO, "DATA_LOSS", 7),
    ("IOFailure", "GalleonError", errno.EIO, "INTERNAL", 1),
    ("KeyUnavailable", "GalleonError", errno.EACCES, "FAILED_PRECONDITION", 8),
    ("WrongKey", "KeyUnavailable", errno.EACCES, "FAILED_PRECONDITION", 8),
    ("NeedsCheck", "GalleonError", errno.EIO, "FAILED_PRECONDITION", 7),
    ("PosixError", "GalleonError", errno.EIO, "FAILED_PRECONDITION", 1),
    ("NotADirectory", "PosixError", errno.ENOTDIR, "FAILED_PRECONDITION", 1),
    ("IsADirectory", "PosixError", errno.EISDIR, "FAILED_PRECONDITION", 1),
    ("NotEmpty", "PosixError", errno.ENOTEMPTY, "FAILED_PRECONDITION", 1),
    ("NameTooLong", "PosixError", errno.ENAMETOOLONG, "INVALID_ARGUMENT", 1),
    ("TooManyLinks", "PosixError", errno.EMLINK, "FAILED_PRECONDITION", 1),
    ("NoAttribute", "PosixError", errno.ENODATA, "NOT_FOUND", 1),
    ("OutOfRange", "PosixError", errno.ERANGE, "OUT_OF_RANGE", 1),
    ("TooBig", "PosixError", errno.E2BIG, "INVALID_ARGUMENT", 1),
    ("FileTooBig", "PosixError", errno.EFBIG, "OUT_OF_RANGE", 1),
    ("BadHandle", "PosixError", errno.EBADF, "INVALID_ARGUMENT", 1),
    ("NotSupported", "PosixError", errno.EOPNOTSUPP, "UNIMPLEMENTED", 1),
    ("CrossDevice", "PosixError", errno.EXDEV, "FAILED_PRECONDITION", 1),
    # galleonfs/backup/errors.py
    ("TargetUnreachable", "Unavailable", errno.EIO, "UNAVAILABLE", 9),
    ("TargetMissing", "NotFound", errno.ENOENT, "NOT_FOUND", 3),
    ("TargetDenied", "PermissionDenied", errno.EACCES, "PERMISSION_DENIED", 8),
    ("TargetFull", "NoSpace", errno.ENOSPC, "RESOURCE_EXHAUSTED", 6),
    ("TargetFailed", "IOFailure", errno.EIO, "INTERNAL", 1),
    ("ObjectMissing", "Corrupt", errno.EIO, "DATA_LOSS", 7),
    ("ObjectCorrupt", "Corrupt", errno.EIO, "DATA_LOSS", 7),
    ("ObjectTruncated", "ObjectCorrupt", errno.EIO, "DATA_LOSS", 7),
    ("NotARepository", "NotFound", errno.ENOENT, "NOT_FOUND", 3),
    ("RepositoryExists", "AlreadyExists", errno.EEXIST, "ALREADY_EXISTS", 4),
    ("RepositoryKeyRejected", "WrongKey", errno.EACCES, "FAILED_PRECONDITION", 8),
    ("UnsupportedRepository", "FormatError", errno.EIO, "FAILED_PRECONDITION", 7),
    ("BackupNotFound", "NotFound", errno.ENOENT, "NOT_FOUND", 3),
    ("RepositoryLocked", "Busy", errno.EBUSY, "FAILED_PRECONDITION", 5),
    ("LockLost", "Busy", errno.EBUSY, "FAILED_PRECONDITION", 5),
    ("GCRefused", "FailedPrecondition", errno.EINVAL, "FAILED_PRECONDITION", 1),
    ("BlobMissing", "Corrupt", errno.EIO, "DATA_LOSS", 7),
]


def test_the_translations_are_the_stable_ones_and_cover_every_class() -> None:
    classes = _classes()
    assert sorted(classes) == sorted(row[0] for row in TRANSLATIONS)
    for name, base, err, status, code in TRANSLATIONS:
        cls = classes[name]
        assert (cls.__bases__[0].__name__, cls.errno, cls.grpc_status, cls.exit_code) == \
            (base, err, status, code), name


def test_every_class_is_written_out_in_errors_py() -> None:
    """grep finds each class: none is made at run time (``type(...)``). They are in
    ``galleonfs/errors.py``, and the backup repository's in ``galleonfs/backup/errors.py``."""
    written = {node.name for module in ERROR_MODULES
               for node in ast.parse(inspect.getsource(module)).body
               if isinstance(node, ast.ClassDef)} - {"ExitCode"}
    assert written == set(_classes())


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


@pytest.mark.parametrize("name", sorted(_classes()))
def test_each_template_has_named_fields_and_fills_in(name: str) -> None:
    cls = _classes()[name]
    template = (cls.__doc__ or "").strip()
    assert template and "\n" not in template, f"{name}: the docstring is the one-line template"
    fields = _fields(template)
    assert fields and all(f.isidentifier() for f in fields), f"{name}: {template!r}"
    values = {f: f"<{f}>" for f in fields}
    message = str(cls(**values))
    for f in fields:
        assert f"<{f}>" in message
    assert "{" not in message and "}" not in message


def test_a_sentence_replaces_the_template_and_a_missing_field_is_a_bug() -> None:
    assert str(errors.NotFound("there is no snapshot 'x'")) == "there is no snapshot 'x'"
    assert str(errors.NotFound(what="volume", name="'data'")) == "volume 'data' does not exist"
    with pytest.raises(KeyError):
        errors.NotFound(what="volume")


@pytest.mark.parametrize("name", sorted(_classes()))
def test_the_class_survives_a_process_boundary(name: str) -> None:
    cls = _classes()[name]
    rebuilt = errors.error_from_status(cls.grpc_status, "what went wrong", name)
    assert type(rebuilt) is cls
    assert (str(rebuilt), rebuilt.exit_code) == ("what went wrong", cls.exit_code)
