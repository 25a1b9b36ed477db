"""Fixtures of the backup repository tests: a real directory target and a real S3 server.

The S3 server is moto's (``moto_server``, from the ``moto[server]`` test extra) started as a
subprocess on a free loopback port, once per session; every test gets a bucket of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.backup import DirectoryTarget, Repository, Target
from galleonfs.backup.testing import MotoServer, start_moto

from .util import CREDENTIALS_ENV, REPO_KEY, new_bucket, s3_target


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{CREDENTIALS_ENV}_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv(f"{CREDENTIALS_ENV}_SECRET_ACCESS_KEY", "testing")
    # No stray AWS settings of the machine may leak into what the tests check.
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["dir", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "dir":
        return DirectoryTarget(tmp_path / "repo", create=True)
    server: MotoServer = request.getfixturevalue("moto")
    return s3_target(server, new_bucket(server))


@pytest.fixture
def dir_target(tmp_path: Path) -> DirectoryTarget:
    return DirectoryTarget(tmp_path / "repo", create=True)


@pytest.fixture
def repo(target: Target) -> Iterator[Repository]:
    with Repository.init(target, REPO_KEY) as r:
        yield r


@pytest.fixture
def dir_repo(dir_target: DirectoryTarget) -> Iterator[Repository]:
    with Repository.init(dir_target, REPO_KEY) as r:
        yield r


