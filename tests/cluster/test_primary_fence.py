"""The mount's fence (``vfs/fence.py``) without a kernel: what a worker answers past its
primary term. The real mounts, etcd and daemons are in ``test_primary.py``."""

from __future__ import annotations

import errno
import time

import pytest

from galleonfs.errors import FailedPrecondition, GalleonError
from galleonfs.vfs.fence import Fence


def _errno_of(fence: Fence) -> int:
    with pytest.raises(GalleonError) as caught:
        fence.check()
    return caught.value.errno


def test_outside_cluster_mode_nothing_is_ever_fenced() -> None:
    fence = Fence("v1")
    fence.check()                           # no deadline: single node
    assert fence.reason == ""


@pytest.mark.allow_warnings        # the fence logs one ERROR, as it must
def test_a_deadline_in_the_past_fences_with_eio_and_stays_fenced() -> None:
    fence = Fence("v1")
    fence.extend(1, time.monotonic() + 60)
    fence.check()
    fence.extend(1, time.monotonic() - 0.001)  # a late renewal whose deadline already passed
    assert _errno_of(fence) == errno.EIO
    assert "no primary lease renewal" in fence.reason
    # A later term does not revive it: only a remount (a new worker) serves again.
    with pytest.raises(FailedPrecondition, match="unmount it and mount it again"):
        fence.extend(2, time.monotonic() + 60)
    assert _errno_of(fence) == errno.EIO


@pytest.mark.allow_warnings        # the fence logs one ERROR, as it must
def test_deadline_zero_fences_at_once_and_an_older_epoch_is_refused() -> None:
    fence = Fence("v1")
    fence.extend(3, time.monotonic() + 60)
    with pytest.raises(FailedPrecondition, match="older than the mount's epoch 3"):
        fence.extend(2, time.monotonic() + 60)
    fence.check()
    fence.extend(3, 0)
    assert _errno_of(fence) == errno.EIO
    assert fence.epoch == 3


@pytest.mark.allow_warnings        # the fence logs one ERROR, as it must
def test_the_deadline_passing_on_its_own_fences_without_any_message() -> None:
    fence = Fence("v1")
    fence.extend(1, time.monotonic() + 0.05)
    fence.check()
    time.sleep(0.06)
    assert _errno_of(fence) == errno.EIO


def test_epoch_zero_is_not_a_term() -> None:
    with pytest.raises(FailedPrecondition, match="not a term"):
        Fence("v1").extend(0, time.monotonic() + 60)


@pytest.mark.allow_warnings
def test_fenced_says_so_for_the_writes_nobody_asked_for() -> None:
    fence = Fence("v1")
    assert not fence.fenced                 # single node
    fence.extend(1, time.monotonic() + 60)
    assert not fence.fenced
    fence.extend(1, time.monotonic() - 1)
    assert fence.fenced and _errno_of(fence) == errno.EIO
