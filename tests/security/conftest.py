"""The security tier: each test does what an attacker (or an unlucky operator) does, against
real parts: a real galleond, real FUSE mounts, and real unprivileged local users that the test
creates and removes. Each asserts the refusal *and* that nothing changed on the host.

Fixtures: ``local_user`` and ``other_user`` (fresh unprivileged accounts, removed afterwards);
the daemon fixtures (``daemon``, ``shared_daemon``, ``client``) are tests/conftest.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .local_users import LocalUser, create_user, remove_user


@pytest.fixture
def local_user() -> Iterator[LocalUser]:
    """A fresh unprivileged user (``gfs-<random>``), deleted with its home after the test."""
    user = create_user(f"gfs-{uuid.uuid4().hex[:10]}")
    try:
        yield user
    finally:
        remove_user(user)


@pytest.fixture
def other_user() -> Iterator[LocalUser]:
    """A second unprivileged user, for tests that need two (tenant A and tenant B)."""
    user = create_user(f"gfs-{uuid.uuid4().hex[:10]}")
    try:
        yield user
    finally:
        remove_user(user)
