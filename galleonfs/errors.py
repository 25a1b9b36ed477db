"""The GalleonFS error tree.

Every expected failure is a ``GalleonError`` subclass. Each class carries the three
translations the edges need, so that each edge translates at exactly one place:

* ``errno``: what the FUSE adapter answers (``pyfuse3.FUSEError(errno)``);
* ``grpc_status``: the name of the ``grpc.StatusCode`` the RPC layer answers (a name, so
  this module needs no ``grpc`` import);
* ``exit_code``: what the command-line tools exit with. These numbers are stable API.

A class's docstring is its message template (the borg habit), with named fields that a raise
site fills (``NotFound(what="volume", name="'data'")``); a raise site whose case the template
does not fit gives the whole sentence (``NotFound("...")``). ``str()`` of an error is one
sentence a person can act on. Bugs are not ``GalleonError``: they are assertions and crash
the process (DESIGN §5).
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar


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

    def __init__(self, detail: str = "", **fields: object) -> None:
        """``Cls(what=..., name=...)`` fills the class's template; ``Cls("sentence")`` gives
        the whole sentence instead, for a case the template does not fit.

        A field the template names but the raise site did not give is a bug at that site
        (``KeyError``), found by the test that reaches it, never a garbled message.
        """
        self.fields: dict[str, object] = dict(fields, detail=detail)
        message = _template(type(self)).format(**self.fields) if fields else detail
        super().__init__(message)


def _template(cls: type[GalleonError]) -> str:
    return (cls.__doc__ or "{detail}").strip()


# Each class's docstring is its message template, with named fields; a comment says when the
# class is the right one. Fields hold text as it should read (a name already quoted where a
# quote helps: ``names.quote``), so this module needs nothing but the standard library.


class InvalidArgument(GalleonError):
    """invalid {what} {value}: {expected}"""

    # Bad input from a user or a caller: the sentence says what is wrong and what to do.
    errno = _errno.EINVAL
    grpc_status = "INVALID_ARGUMENT"
    exit_code = ExitCode.USAGE


class NotFound(GalleonError):
    """{what} {name} does not exist"""

    errno = _errno.ENOENT
    grpc_status = "NOT_FOUND"
    exit_code = ExitCode.NOT_FOUND


class AlreadyExists(GalleonError):
    """{what} {name} already exists"""

    errno = _errno.EEXIST
    grpc_status = "ALREADY_EXISTS"
    exit_code = ExitCode.EXISTS


class Busy(GalleonError):
    """{what} is busy ({reason}); {remedy}"""

    # In use right now (mounted, open files, held by a clone): the same call can work later.
    errno = _errno.EBUSY
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.BUSY


class FailedPrecondition(GalleonError):
    """{subject} {state}; {remedy}"""

    # The object is in a state the call does not apply to (not a clone, not encrypted, ...).
    errno = _errno.EINVAL
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.ERROR


class Unimplemented(GalleonError):
    """{feature} is not implemented in this version of GalleonFS; {remedy}"""

    errno = _errno.EOPNOTSUPP
    grpc_status = "UNIMPLEMENTED"
    exit_code = ExitCode.ERROR


class NoSpace(GalleonError):
    """{where} is full: no space for {what}; {remedy}"""

    # The volume or the host disk under it: a write that needs space, never a crash.
    errno = _errno.ENOSPC
    grpc_status = "RESOURCE_EXHAUSTED"
    exit_code = ExitCode.NO_SPACE


class ReadOnly(GalleonError):
    """{what} is read-only: {reason}"""

    # A snapshot, a read-only mount, or a volume in failsafe after a failed verification.
    errno = _errno.EROFS
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.ERROR


class PermissionDenied(GalleonError):
    """{who} may not {action}: {reason}"""

    # A known caller who may not do this (Unauthenticated: the caller is not known).
    errno = _errno.EACCES
    grpc_status = "PERMISSION_DENIED"
    exit_code = ExitCode.PERMISSION


class NotPermitted(PermissionDenied):
    """{action} is not permitted: {reason}"""

    # EPERM: forbidden whoever asks (a hard link to a directory), not a missing right.
    errno = _errno.EPERM


class Unauthenticated(GalleonError):
    """galleond cannot tell who is calling ({reason}); {remedy}"""

    # The caller could not be identified (no credentials, or a bad, expired or revoked
    # token); PermissionDenied is for a known caller who may not do this.
    errno = _errno.EACCES
    grpc_status = "UNAUTHENTICATED"
    exit_code = ExitCode.PERMISSION


class QuotaExceeded(GalleonError):
    """tenant {tenant} would exceed its quota of {quota}; {remedy}"""

    # A tenant's quota (total bytes, volume count), not the disk: the node still has room.
    errno = _errno.EDQUOT
    grpc_status = "RESOURCE_EXHAUSTED"
    exit_code = ExitCode.NO_SPACE


class Unavailable(GalleonError):
    """{what} does not answer: {reason}"""

    # A process we talk to (galleond, a mount worker) is not reachable or timed out.
    errno = _errno.EIO
    grpc_status = "UNAVAILABLE"
    exit_code = ExitCode.UNAVAILABLE


class Corrupt(GalleonError):
    """{where}: {problem}"""

    # Stored bytes failed a check (checksum, authentication tag, structure): never served.
    errno = _errno.EIO
    grpc_status = "DATA_LOSS"
    exit_code = ExitCode.CORRUPT


class IOFailure(GalleonError):
    """cannot {action} {path}: {reason}"""

    # The host refused an operation for another reason than space (EIO from the disk).
    errno = _errno.EIO
    grpc_status = "INTERNAL"
    exit_code = ExitCode.ERROR


class KeyUnavailable(GalleonError):
    """the {source} cannot give the volume's key: {reason}"""

    # The key source is missing, unreadable or failing (WrongKey: it answers, wrongly).
    errno = _errno.EACCES
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.PERMISSION


class WrongKey(KeyUnavailable):
    """the volume's key does not unwrap with {source}: {reason}"""


class FormatError(Corrupt):
    """{what} has format {found}; this version of GalleonFS reads format {expected}"""

    # Not damage but a format this version does not read (or a file that is not ours).
    grpc_status = "FAILED_PRECONDITION"


class HelperFailed(Corrupt):
    """the helper process for {subject} {failure}"""

    # A short-lived helper process that opened a volume (or the catalog) died of a signal,
    # hung, or exited without an answer. Damaged metadata maps as SIGBUS, so what it was
    # working on is suspect; the process that asked stays up.


class CatalogDamaged(Corrupt):
    """the node catalog {path} is {problem}; galleond will not start on it (run `galleond recover-catalog`)"""

    # The node catalog is damaged, empty or missing while volumes exist: galleond refuses to
    # start on it (`galleond recover-catalog` is the way out).


class AuditUnavailable(Unavailable):
    """cannot {action} the audit log {path}: {reason}"""

    # The audit record of a call could not be written: the call is refused before it runs.


class NeedsCheck(GalleonError):
    """volume {volume} needs a check ({reason}); run `galleonfs fsck --repair {volume}` first"""

    errno = _errno.EIO
    grpc_status = "FAILED_PRECONDITION"
    exit_code = ExitCode.CORRUPT


# --- POSIX errors raised by the VFS. Their message matters less than their errno: the kernel
# shows users strerror(errno). They still say what went wrong for logs and tests. Each is
# written out (not made by a factory) so that grep finds it.


class PosixError(GalleonError):
    """{detail}"""

    grpc_status = "FAILED_PRECONDITION"


class NotADirectory(PosixError):
    """{name} is not a directory"""

    errno = _errno.ENOTDIR


class IsADirectory(PosixError):
    """{name} is a directory"""

    errno = _errno.EISDIR


class NotEmpty(PosixError):
    """directory {name} is not empty"""

    errno = _errno.ENOTEMPTY


class NameTooLong(PosixError):
    """{what} is {length} bytes; at most {limit} are allowed"""

    errno = _errno.ENAMETOOLONG
    grpc_status = "INVALID_ARGUMENT"


class TooManyLinks(PosixError):
    """{what} has too many {kind}"""

    errno = _errno.EMLINK


class NoAttribute(PosixError):
    """no attribute {name}"""

    errno = _errno.ENODATA
    grpc_status = "NOT_FOUND"


class OutOfRange(PosixError):
    """{what} is out of range: {reason}"""

    errno = _errno.ERANGE
    grpc_status = "OUT_OF_RANGE"


class TooBig(PosixError):
    """{what} is larger than {limit}"""

    errno = _errno.E2BIG
    grpc_status = "INVALID_ARGUMENT"


class FileTooBig(PosixError):
    """file size limit exceeded: {what} would end at byte {end}"""

    errno = _errno.EFBIG
    grpc_status = "OUT_OF_RANGE"


class BadHandle(PosixError):
    """{what} is not open"""

    errno = _errno.EBADF
    grpc_status = "INVALID_ARGUMENT"


class NotSupported(PosixError):
    """{what} is not supported"""

    errno = _errno.EOPNOTSUPP
    grpc_status = "UNIMPLEMENTED"


class CrossDevice(PosixError):
    """cannot {action} across volumes"""

    errno = _errno.EXDEV


def _all_subclasses(cls: type[GalleonError]) -> list[type[GalleonError]]:
    out: list[type[GalleonError]] = []
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
