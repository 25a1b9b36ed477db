"""The Target contract on both targets, and every target failure as one clear sentence:
a missing bucket or directory, refused credentials, an unreachable endpoint, a full disk."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from galleonfs.backup import (
    DirectoryTarget,
    Repository,
    Target,
    limits,
    open_target,
    verify,
)
from galleonfs.backup.errors import (
    NotARepository,
    ObjectMissing,
    RepositoryExists,
    TargetDenied,
    TargetFull,
    TargetMissing,
    TargetUnreachable,
)
from galleonfs.backup.s3 import S3Target
from galleonfs.backup.testing import MotoServer, free_port, start_moto
from galleonfs.errors import GalleonError

from .util import CREDENTIALS_ENV, REPO_KEY, Vol, backup, new_bucket, s3_target


def one_line(error: GalleonError) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text and text.endswith(("first", "network",
                                                                          "permissions", "target"))
    return text


def test_the_contract(target: Target) -> None:
    assert target.head("index/x") is None
    with pytest.raises(ObjectMissing, match="backup object index/x is missing from"):
        target.get("index/x")
    target.put("index/x", b"0123456789")
    target.put("packs/ab/ab01", b"pack")
    assert target.head("index/x") == 10
    assert target.get("index/x", 2, 3) == b"234"
    assert target.get("index/x", 8) == b"89"
    assert target.get("index/x", -4) == b"6789"
    assert target.get("index/x", 7, 100) == b"789"          # short: the object is shorter
    assert target.get("index/x", 20, 5) == b""
    target.put("index/x", b"new")                           # replaced whole
    assert target.get("index/x") == b"new"
    assert sorted(target.list("")) == [("index/x", 3), ("packs/ab/ab01", 4)]
    assert list(target.list("packs/")) == [("packs/ab/ab01", 4)]
    assert list(target.list("locks/")) == []
    target.delete("index/x")
    target.delete("index/x")                                # idempotent
    assert target.head("index/x") is None
    assert "secret" not in str(target.describe()).lower() and "testing" not in str(target.describe())


def test_multipart_for_large_objects(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "s3_multipart_threshold_bytes", 6 << 20)
    monkeypatch.setattr(limits, "s3_part_bytes", 5 << 20)    # S3's smallest part
    target = s3_target(moto, new_bucket(moto))
    parts: list[int] = []
    target.client.meta.events.register(
        "before-parameter-build.s3.UploadPart",
        lambda params, **_kw: parts.append(params["PartNumber"]))
    data = random.Random(1).randbytes(12 << 20)
    target.put("index/big", data)
    assert parts == [1, 2, 3]
    assert target.get("index/big") == data
    assert target.get("index/big", (5 << 20) - 2, 4) == data[(5 << 20) - 2:(5 << 20) + 2]


def test_not_a_repository_and_init_twice(target: Target) -> None:
    with pytest.raises(NotARepository, match="holds no backup repository"):
        Repository.open(target, REPO_KEY)
    Repository.init(target, REPO_KEY).close()
    with pytest.raises(RepositoryExists, match="already holds a backup repository"):
        Repository.init(target, REPO_KEY)


def test_missing_bucket(moto: MotoServer) -> None:
    target = S3Target("no-such-bucket", "repo", endpoint=moto.endpoint, region="us-east-1",
                      credentials_env=CREDENTIALS_ENV)
    with pytest.raises(TargetMissing) as err:
        Repository.open(target, REPO_KEY)
    assert one_line(err.value) == (f"backup target s3://no-such-bucket/repo at {moto.endpoint} does not exist "
                                   "(bucket no-such-bucket does not exist); create the bucket or directory first")
    assert err.value.exit_code == 3


@pytest.fixture(scope="module")
def moto_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A second server that checks credentials (none are valid: no IAM user exists)."""
    server = start_moto(tmp_path_factory.mktemp("moto-auth") / "moto.log",
                        env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield server
    server.stop()


def test_wrong_credentials(moto_with_auth: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{CREDENTIALS_ENV}_SECRET_ACCESS_KEY", "hunter2-not-the-secret")
    target = S3Target("bucket", "repo", endpoint=moto_with_auth.endpoint, region="us-east-1",
                      credentials_env=CREDENTIALS_ENV)
    with pytest.raises(TargetDenied) as err:
        Repository.open(target, REPO_KEY)
    text = one_line(err.value)
    assert text.startswith(f"backup target s3://bucket/repo at {moto_with_auth.endpoint} refused access (")
    assert "hunter2" not in text and err.value.exit_code == 8


def test_missing_credentials_variable(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"{CREDENTIALS_ENV}_SECRET_ACCESS_KEY")
    with pytest.raises(TargetDenied, match=f"environment variable {CREDENTIALS_ENV}_SECRET_ACCESS_KEY is not set"):
        S3Target("bucket", endpoint=moto.endpoint, credentials_env=CREDENTIALS_ENV)


def test_unreachable_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"                 # nothing listens there
    target = open_target("s3://bucket/repo", endpoint=endpoint, region="us-east-1",
                         credentials_env=CREDENTIALS_ENV)
    started = time.monotonic()
    with pytest.raises(TargetUnreachable) as err:
        Repository.open(target, REPO_KEY)
    assert time.monotonic() - started < 30                       # bounded retries
    text = one_line(err.value)
    assert text.startswith(f"backup target s3://bucket/repo at {endpoint} is unreachable (Could not connect")
    assert err.value.exit_code == 9


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TargetMissing) as err:
        open_target(f"file://{tmp_path}/nowhere")
    assert one_line(err.value) == (f"backup target file://{tmp_path}/nowhere does not exist (no such "
                                   "directory); create the bucket or directory first")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a target that fills up for real."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_target_fails_clearly_and_leaves_no_backup(small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "pack_target_bytes", 256 * 1024)
    target = DirectoryTarget(small_disk / "repo", create=True)
    repo = Repository.init(target, REPO_KEY)
    small = Vol(vol_id="small")
    small.set(b"a", b"", [b"tiny" * 100])
    kept = backup(repo, small)
    vol = Vol()
    rng = random.Random(9)
    for i in range(64):
        vol.set(b"k%02d" % i, b"", [rng.randbytes(64 * 1024)])   # 4 MiB, random
    with pytest.raises(TargetFull) as err:
        backup(repo, vol)
    text = one_line(err.value)
    assert text.startswith(f"backup target {target.url} is full (No space left on device while writing packs/")
    assert err.value.exit_code == 6
    again = Repository.open(target, REPO_KEY)
    assert [b.backup_id for b in again.list_backups()] == [kept.backup_id]   # nothing half-made
    assert not [p for p in (small_disk / "repo").rglob(".tmp-*")]          # no temporaries left
    assert verify(again, deep=True).ok
    repo.close()
    again.close()


def test_open_target_urls(tmp_path: Path) -> None:
    assert isinstance(open_target(str(tmp_path)), DirectoryTarget)
    assert isinstance(open_target(f"file://{tmp_path}"), DirectoryTarget)
    s3: Any = open_target("s3://bucket/a/b", endpoint="http://127.0.0.1:1", credentials_env=CREDENTIALS_ENV)
    assert (s3.bucket, s3.prefix, s3.url) == ("bucket", "a/b", "s3://bucket/a/b")
    assert s3.describe() == {"kind": "s3", "url": "s3://bucket/a/b", "endpoint": "http://127.0.0.1:1",
                             "credentials_env": CREDENTIALS_ENV}
    from galleonfs.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="use file:///path or s3://bucket/prefix"):
        open_target("ftp://host/x")
    with pytest.raises(InvalidArgument, match="give an absolute path"):
        open_target("relative/path")
    assert os.environ.get("AWS_ACCESS_KEY_ID") is None
