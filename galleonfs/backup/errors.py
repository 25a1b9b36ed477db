"""The backup repository's errors: one sentence each, built on the package's error tree.

Each class subclasses a ``galleonfs.errors`` class, so the edges (gRPC status, CLI exit
code) translate it without knowing it exists. The docstring is the message template, filled
from keyword fields (the borg habit); every message names the target and, when one object is
at fault, the object, so that an operator can go and look at it.

What it must not do: carry secrets. A target is named by its ``url`` (never credentials), a
key by its kind.
"""

from __future__ import annotations

from ..errors import (
    AlreadyExists,
    Busy,
    Corrupt,
    FailedPrecondition,
    FormatError,
    IOFailure,
    NoSpace,
    NotFound,
    PermissionDenied,
    Unavailable,
    WrongKey,
)


class TargetUnreachable(Unavailable):
    """backup target {target} is unreachable ({reason}); check its address and the network"""


class TargetMissing(NotFound):
    """backup target {target} does not exist ({reason}); create the bucket or directory first"""


class TargetDenied(PermissionDenied):
    """backup target {target} refused access ({reason}); check the credentials and their permissions"""


class TargetFull(NoSpace):
    """backup target {target} is full ({reason}); free space there or use another target"""


class TargetFailed(IOFailure):
    """backup target {target} failed on {name}: {reason}"""


class ObjectMissing(Corrupt):
    """backup object {name} is missing from {target}{context}"""


class ObjectCorrupt(Corrupt):
    """backup object {name} in {target} is damaged: {reason}"""


class ObjectTruncated(ObjectCorrupt):
    """backup object {name} in {target} is truncated: {reason}"""


class NotARepository(NotFound):
    """{target} holds no backup repository (no config object); initialise one there first"""


class RepositoryExists(AlreadyExists):
    """{target} already holds a backup repository; open it instead of initialising it again"""


class RepositoryKeyRejected(WrongKey):
    """the {kind} does not open the backup repository at {target}; use the one it was created with"""


class UnsupportedRepository(FormatError):
    """backup object {name} in {target} has format {version}, which this GalleonFS cannot read"""


class BackupNotFound(NotFound):
    """backup {backup} does not exist in {target}"""


class RepositoryLocked(Busy):
    """backup repository {target} is locked by {holder}; try again later, or break the lock if that process is gone"""


class LockLost(Busy):
    """the lock on backup repository {target} was lost ({reason}); nothing was committed, run it again"""


class GCRefused(FailedPrecondition):
    """garbage collection of {target} stopped before deleting anything: {reason}"""


class BlobMissing(Corrupt):
    """blob {blob} is not stored in {target}{context}"""
