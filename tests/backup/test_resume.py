"""kill -9 of a backup mid-upload, then a rerun: nothing looked like a backup in between, and
the rerun sends only what was not stored (every pack PUT once, every blob in one pack)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from galleonfs.backup import DirectoryTarget, Repository, Target, begin_backup, limits, verify
from galleonfs.backup.errors import TargetUnreachable
from galleonfs.backup.s3 import S3Target
from galleonfs.backup.testing import LoopbackProxy, MotoServer

from .util import (
    CREDENTIALS_ENV,
    REPO_KEY,
    Vol,
    backup,
    new_bucket,
    restore,
    s3_target,
    same_content,
)

TESTS = Path(__file__).resolve().parents[1]
BLOCKS = 400                     # 64 KiB each, random: 25 MiB, ~25 packs of 1 MiB


def big_volume() -> Vol:
    import random

    rng = random.Random(7)
    vol = Vol()
    for i in range(BLOCKS):
        vol.set(b"file%04d" % i, b"inode", [rng.randbytes(64 * 1024)])
    return vol


CHILD = r"""
import json, sys, threading, time
from galleonfs.backup import DirectoryTarget, Repository, limits
from galleonfs.backup.s3 import S3Target
from backup.util import REPO_KEY, backup
from backup.test_resume import big_volume
spec = json.loads(sys.argv[1])
lock = threading.Lock()
def say(line):
    with lock:                           # pool threads: one whole line at a time
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
limits.pack_target_bytes = 1 << 20
limits.index_flush_packs = spec["flush"]
if spec["kind"] == "s3":
    target = S3Target(spec["bucket"], "repo", endpoint=spec["endpoint"], region="us-east-1",
                      credentials_env=spec["env"])
    def before(params, context, **kw):
        context["galleon_key"] = params["Key"]
    def after(context, **kw):
        if "/packs/" in context.get("galleon_key", ""):
            say("PUT " + context["galleon_key"])
            time.sleep(0.2)              # a slow link: the kill lands mid-upload
    target.client.meta.events.register("before-parameter-build.s3.PutObject", before)
    target.client.meta.events.register("after-call.s3.PutObject", after)
else:
    target = DirectoryTarget(spec["path"])
    put = target.put
    def slow_put(name, data):
        put(name, data)
        if name.startswith("packs/"):
            say("PUT " + name)
            time.sleep(0.2)
    target.put = slow_put
with Repository.open(target, REPO_KEY, pool_threads=4) as repo:
    backup(repo, big_volume())
say("DONE")
"""


def kill_mid_upload(spec: dict[str, Any], after_puts: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    puts: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            assert not line.startswith("DONE"), "the backup finished before it could be killed"
            puts.append(line.split()[1])
            if len(puts) >= after_puts or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    return puts


@pytest.mark.slow
@pytest.mark.parametrize("flush", [1000, 2], ids=["nothing-indexed", "some-indexed"])
@pytest.mark.parametrize("kind", ["s3", "dir"])
def test_kill9_mid_upload_then_resume(kind: str, flush: int, tmp_path: Path,
                                      request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "pack_target_bytes", 1 << 20)
    spec: dict[str, Any] = {"kind": kind, "flush": flush}
    if kind == "s3":
        server: MotoServer = request.getfixturevalue("moto")
        bucket = new_bucket(server)
        spec.update(bucket=bucket, endpoint=server.endpoint, env=CREDENTIALS_ENV)
        target: Target = s3_target(server, bucket)
    else:
        spec["path"] = str(tmp_path / "repo")
        target = DirectoryTarget(tmp_path / "repo", create=True)
    Repository.init(target, REPO_KEY).close()

    killed_puts = kill_mid_upload(spec, after_puts=8)
    assert len(killed_puts) == 8

    repo = Repository.open(target, REPO_KEY, pool_threads=4)
    assert repo.list_backups() == []                      # nothing looks like a backup
    before = repo.list_packs()
    assert len(before) >= 8                               # what the killed run stored is there
    if flush == 2:
        assert len(list(target.list("index/"))) >= 1      # and some of it was indexed

    resumed_puts: list[str] = []
    if isinstance(target, S3Target):
        def remember(params: dict[str, Any], context: dict[str, Any], **_kw: Any) -> None:
            context["galleon_key"] = params["Key"]

        def count(context: dict[str, Any], **_kw: Any) -> None:
            if "/packs/" in context.get("galleon_key", ""):
                resumed_puts.append(context["galleon_key"])

        target.client.meta.events.register("before-parameter-build.s3.PutObject", remember)
        target.client.meta.events.register("after-call.s3.PutObject", count)
    vol = big_volume()
    info = backup(repo, vol)
    after = repo.list_packs()

    # The rerun learnt every stored pack (indexed or not) and sent only the rest.
    stored_before = sum(len(repo.read_pack_entries(p, s)) for p, s in before.items())
    assert stored_before > 0
    assert info.stats["blobs_new"] == BLOCKS - stored_before
    unindexed = info.stats["packs_recovered"]
    assert unindexed >= (1 if flush == 1000 else 0)
    if isinstance(target, S3Target):
        assert len(resumed_puts) == len(set(resumed_puts)) == len(after) - len(before)
    # Every blob of the volume is in exactly one pack: nothing was sent twice.
    copies = Counter(e.blob_id for p, s in after.items() for e in repo.read_pack_entries(p, s))
    data_blobs = {b for _v, refs in vol.records.values() for b in refs}
    assert {b: copies[b] for b in data_blobs} == dict.fromkeys(data_blobs, 1)
    same_content(vol, restore(repo, info.backup_id))
    assert verify(repo, deep=True).ok
    repo.close()


def test_interrupted_put_leaves_no_visible_object(dir_target: DirectoryTarget) -> None:
    """A directory put killed before its rename leaves a temporary that list() never shows
    and GC's sweep removes; the object itself is absent, not partial."""
    path = dir_target.root / "packs" / "ab"
    path.mkdir(parents=True)
    (path / ".tmp-0123456789ab-ab00").write_bytes(b"half a pack")
    old = time.time() - 2 * limits.incomplete_age_s
    os.utime(path / ".tmp-0123456789ab-ab00", (old, old))
    assert list(dir_target.list("packs/")) == []
    assert dir_target.sweep_incomplete(limits.incomplete_age_s) == 1
    assert list(path.iterdir()) == []


def test_network_loss_mid_backup_then_resume(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The link to S3 drops in the middle of a backup: one-line TargetUnreachable (not an
    error of the lock clean-up masking it), no backup; once the link is back, a rerun sends
    only what was not stored."""
    monkeypatch.setattr(limits, "pack_target_bytes", 1 << 20)
    bucket = new_bucket(moto)
    proxy = LoopbackProxy(int(moto.endpoint.rsplit(":", 1)[1]))
    target = S3Target(bucket, "repo", endpoint=proxy.endpoint, region="us-east-1",
                      credentials_env=CREDENTIALS_ENV)
    repo = Repository.init(target, REPO_KEY, pool_threads=4)
    vol = big_volume()
    put = 0
    with pytest.raises(TargetUnreachable) as err, \
            begin_backup(repo, volume_name="db", volume_id="vol-1", generation=1) as w:
        for key in sorted(vol.records):
            value, refs = vol.records[key]
            for bid in refs:
                w.put_blob(bid, vol.blocks[bid])
                put += 1
                if put == BLOCKS // 2:
                    proxy.cut()
            w.put_record(key, value, refs)
        w.commit()
    assert "\n" not in str(err.value) and f"at {proxy.endpoint} is unreachable" in str(err.value)
    proxy.restore()
    again = Repository.open(target, REPO_KEY, pool_threads=4)
    assert again.list_backups() == []
    stored = again.list_packs()
    stored_blobs = sum(len(again.read_pack_entries(p, s)) for p, s in stored.items())
    assert stored_blobs >= 8
    info = backup(again, vol)
    assert info.stats["blobs_new"] == BLOCKS - stored_blobs
    same_content(vol, restore(again, info.backup_id))
    proxy.cut()
    repo.close()
    again.close()
