"""The GalleonFS error tree.

Every expected failure is a ``GalleonError`` subclass. Each class carries the three
translations the edges need, so that each edge translates at exactly one place:

* ``errno``: what the FUSE adapter answers (``pyfuse3.FUSEError(errno)``);
* ``grpc_status``: the name of the ``grpc.StatusCode`` the RPC layer answers (a name, so
  this module needs no ``grpc`` import);
* ``exit_code``: what the command-line tools exit with. These numbers are stable API.

A class's docstring is its message template (the borg habit); ``str()`` of an error is one
sentence a person can act on. Bugs are not ``GalleonError``: they are assertions and crash
the process (DESIGN §5).
"""

from __future__ import annotations

import errno as _errno
from typing import Any, ClassVar


class ExitCode:
    """Stable exit codes of ``galleonfs`` and ``galleonctl``."""

    OK = 0
    ERROR = 1            # anything not listed below
    USAGE = 2            # bad arguments (argparse uses 2 as well)
    NOT_FOUND = 3
    EXISTS = 4
    BUSY = 5
    NO_SPACE = 6
    CORRUPT = 7          # fsck found problems, or a block failed verification
    PERMISSION = 8
    UNAVAILABLE = 9      # daemon or worker not reachable, timed out


class GalleonError(Exception):
    """{detail}"""

    errno: ClassVar[int] = _errno.EIO
    grpc_status: ClassVar[str] = "INTERNAL"
    exit_code: ClassVar[int] = ExitCode.ERROR

    def __init__(self, detail: str = "", **fields: Any) -> None:
        self.fields = dict(fields, detail=detail)
        template = (type(self).__doc__ or "{detail}").strip()
        try:
            message = template.format(**self.fields)
        except (KeyError, IndexError):
            message = detail or template
        super().__init__(message)


class InvalidArgument(GalleonError):
    """{detail}"""

    errno = _errno.EINVAL
    grpc_status = "INVALID_ARGUMENT"
    exit_code = ExitCode.USAGE


class NotFound(GalleonError):
    """{detail}"""

    errno = _errno.ENOENT
    grpc_status = "NOT_FOUND"
    exit_code = ExitCode.NOT_FOUND


class AlreadyExists(GalleonError):
    """{detail}"""

    errno = _errno.EEXIST
    grpc_status = "ALREADY_EXISTS"
    exit_code = ExitCode.EXISTS


class Busy(GalleonError):
    """{detail}"""

    errno = _errno.EBUSY
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.BUSY


class FailedPrecondition(GalleonError):
    """{detail}"""

    errno = _errno.EINVAL
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.ERROR


class Unimplemented(GalleonError):
    """{detail}"""

    errno = _errno.EOPNOTSUPP
    grpc_status = "UNIMPLEMENTED"
    exit_code = ExitCode.ERROR


class NoSpace(GalleonError):
    """{detail}"""

    errno = _errno.ENOSPC
    grpc_status = "RESOURCE_EXHAUSTED"
    exit_code = ExitCode.NO_SPACE


class ReadOnly(GalleonError):
    """{detail}"""

    errno = _errno.EROFS
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.ERROR


class PermissionDenied(GalleonError):
    """{detail}"""

    errno = _errno.EACCES
    grpc_status = "PERMISSION_DENIED"
    exit_code = ExitCode.PERMISSION


class NotPermitted(PermissionDenied):
    """{detail}"""

    errno = _errno.EPERM


class Unauthenticated(GalleonError):
    """{detail}"""

    # The caller could not be identified (no credentials, or a bad, expired or revoked
    # token); PermissionDenied is for a known caller who may not do this.
    errno = _errno.EACCES
    grpc_status = "UNAUTHENTICATED"
    exit_code = ExitCode.PERMISSION


class QuotaExceeded(GalleonError):
    """{detail}"""

    # A tenant's quota (total bytes, volume count), not the disk: the node still has room.
    errno = _errno.EDQUOT
    grpc_status = "RESOURCE_EXHAUSTED"
    exit_code = ExitCode.NO_SPACE


class Unavailable(GalleonError):
    """{detail}"""

    errno = _errno.EIO
    grpc_status = "UNAVAILABLE"
    exit_code = ExitCode.UNAVAILABLE


class Corrupt(GalleonError):
    """{detail}"""

    errno = _errno.EIO
    grpc_status = "DATA_LOSS"
    exit_code = ExitCode.CORRUPT


class IOFailure(GalleonError):
    """{detail}"""

    errno = _errno.EIO
    grpc_status = "INTERNAL"
    exit_code = ExitCode.ERROR


class KeyUnavailable(GalleonError):
    """{detail}"""

    errno = _errno.EACCES
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.PERMISSION


class WrongKey(KeyUnavailable):
    """{detail}"""


class FormatError(Corrupt):
    """{detail}"""

    grpc_status = "FAILED_PRECONDITION"


class HelperFailed(Corrupt):
    """{detail}"""

    # A short-lived helper process that opened a volume (or the catalog) died of a signal,
    # hung, or exited without an answer. Damaged metadata maps as SIGBUS, so what it was
    # working on is suspect; the process that asked stays up.


class CatalogDamaged(Corrupt):
    """{detail}"""

    # The node catalog is damaged, empty or missing while volumes exist: galleond refuses to
    # start on it (`galleond recover-catalog` is the way out).


class AuditUnavailable(Unavailable):
    """{detail}"""

    # The audit record of a call could not be written: the call is refused before it runs.


class NeedsCheck(GalleonError):
    """volume {volume} needs a check ({reason}); run `galleonfs fsck --repair {volume}` first"""

    errno = _errno.EIO
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.CORRUPT


# --- POSIX errors raised by the VFS. Their message matters less than their errno: the kernel
# shows users strerror(errno). They still say what went wrong for logs and tests.


class PosixError(GalleonError):
    """{detail}"""

    grpc_status = "FAILED_PRECONDITION"


def _posix(name: str, err: int, status: str = "FAILED_PRECONDITION") -> type[PosixError]:
    cls = type(name, (PosixError,), {"errno": err, "grpc_status": status, "__doc__": "{detail}"})
    return cls


NoEntry = NotFound
Exists = AlreadyExists
NotADirectory = _posix("NotADirectory", _errno.ENOTDIR)
IsADirectory = _posix("IsADirectory", _errno.EISDIR)
NotEmpty = _posix("NotEmpty", _errno.ENOTEMPTY)
NameTooLong = _posix("NameTooLong", _errno.ENAMETOOLONG, "INVALID_ARGUMENT")
TooManyLinks = _posix("TooManyLinks", _errno.EMLINK)
NoAttribute = _posix("NoAttribute", _errno.ENODATA, "NOT_FOUND")
OutOfRange = _posix("OutOfRange", _errno.ERANGE, "OUT_OF_RANGE")
TooBig = _posix("TooBig", _errno.E2BIG, "INVALID_ARGUMENT")
FileTooBig = _posix("FileTooBig", _errno.EFBIG, "OUT_OF_RANGE")
BadHandle = _posix("BadHandle", _errno.EBADF, "INVALID_ARGUMENT")
NotSupported = _posix("NotSupported", _errno.EOPNOTSUPP, "UNIMPLEMENTED")
CrossDevice = _posix("CrossDevice", _errno.EXDEV)
Loop = _posix("Loop", _errno.ELOOP)


def _all_subclasses(cls: type[GalleonError]) -> list[type[GalleonError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


# The canonical class for each gRPC status, for errors that crossed a process boundary.
_BY_STATUS: dict[str, type[GalleonError]] = {
    "INVALID_ARGUMENT": InvalidArgument, "NOT_FOUND": NotFound, "ALREADY_EXISTS": AlreadyExists,
    "FAILED_PRECONDITION": FailedPrecondition, "RESOURCE_EXHAUSTED": NoSpace,
    "PERMISSION_DENIED": PermissionDenied, "UNAUTHENTICATED": Unauthenticated, "UNAVAILABLE": Unavailable, "DATA_LOSS": Corrupt,
    "UNIMPLEMENTED": Unimplemented, "DEADLINE_EXCEEDED": Unavailable,
    "ABORTED": Busy, "INTERNAL": GalleonError, "UNKNOWN": GalleonError,
}


def error_from_status(status: str, message: str, class_name: str | None = None) -> GalleonError:
    """Rebuild an error that crossed a process boundary (gRPC, control socket).

    The sender names the error's class (``class_name``), so the exit code survives the
    trip (a "busy" and an "invalid state" are both FAILED_PRECONDITION in gRPC); the status
    is the fallback for peers that do not send one.
    """
    classes = {c.__name__: c for c in _all_subclasses(GalleonError)}
    cls = classes.get(class_name or "") or _BY_STATUS.get(status, GalleonError)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.fields = {"detail": message}
    return error
