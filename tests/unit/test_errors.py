"""The error tree: each error carries errno, gRPC status name and exit code; messages read."""

from __future__ import annotations

import errno

import pytest

from galleonfs import errors


@pytest.mark.parametrize(("cls", "err", "code"), [
    (errors.NotFound, errno.ENOENT, errors.ExitCode.NOT_FOUND),
    (errors.AlreadyExists, errno.EEXIST, errors.ExitCode.EXISTS),
    (errors.NoSpace, errno.ENOSPC, errors.ExitCode.NO_SPACE),
    (errors.Busy, errno.EBUSY, errors.ExitCode.BUSY),
    (errors.Corrupt, errno.EIO, errors.ExitCode.CORRUPT),
    (errors.InvalidArgument, errno.EINVAL, errors.ExitCode.USAGE),
    (errors.NotEmpty, errno.ENOTEMPTY, errors.ExitCode.ERROR),
    (errors.NameTooLong, errno.ENAMETOOLONG, errors.ExitCode.ERROR),
    (errors.ReadOnly, errno.EROFS, errors.ExitCode.ERROR),
])
def test_translations(cls: type[errors.GalleonError], err: int, code: int) -> None:
    exc = cls("what went wrong")
    assert (exc.errno, exc.exit_code, str(exc)) == (err, code, "what went wrong")


def test_template_message() -> None:
    exc = errors.NeedsCheck(volume="/srv/v", reason="a block failed its checksum")
    assert str(exc) == ("volume /srv/v needs a check (a block failed its checksum); "
                        "run `galleonfs fsck --repair /srv/v` first")
