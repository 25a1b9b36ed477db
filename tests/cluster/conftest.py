"""Fixtures of the cluster tier: a real etcd on loopback (``etcd``), one per test module.

etcd missing is a failure, not a skip (CI must not go green without it). Each test gets a
key prefix of its own (``prefix``) so tests sharing the module's etcd never see each
other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from galleonfs.testing.etcd import RunningEtcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEtcd]:
    running = RunningEtcd(tmp_path_factory.mktemp("etcd"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def prefix() -> str:
    return f"/galleonfs-test-{uuid.uuid4().hex[:8]}/"
