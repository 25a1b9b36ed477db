"""The mount's fence (``vfs/fence.py``): its rules without a kernel, then a real mount worker
told its terms over the control socket (volops ``PrimaryTerm``), as the node tells it. The
real etcd and daemons are in ``test_primary.py``."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from volops.conftest import Offline, Online

from galleonfs.engine.fsck import fsck
from galleonfs.errors import FailedPrecondition, GalleonError, InvalidArgument
from galleonfs.vfs.fence import Fence
from galleonfs.volops import messages as m


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


@pytest.mark.allow_warnings
def test_a_mount_worker_takes_its_terms_over_the_control_socket(tmp_path: Path, fuse_ok: None) -> None:
    online = Online(tmp_path / "online")
    try:
        deadline = time.monotonic() + 60
        assert online.run(m.PrimaryTerm(1, deadline)) == m.Fencing(1, deadline, "")
        online.write({"a": b"under epoch 1"})
        for bad in (float("nan"), float("inf"), -1.0):
            assert online.outcome(m.PrimaryTerm(1, bad))[0] == InvalidArgument.__name__
        online.write({"b": b"still serving"})      # a refused term changed nothing
        fenced = online.run(m.PrimaryTerm(1, 0))
        assert fenced.epoch == 1 and "lost the primary lease of epoch 1" in fenced.fenced
        with pytest.raises(OSError) as caught:
            online.write({"c": b"refused"})
        assert caught.value.errno == errno.EIO
        assert (online.mountpoint / "a").read_bytes() == b"under epoch 1"     # reads go on
        assert online.outcome(m.PrimaryTerm(2, time.monotonic() + 60))[0] == FailedPrecondition.__name__
    finally:
        online.close()
    assert fsck(str(online.volume_dir)).clean
    offline = Offline(tmp_path / "offline")
    assert offline.outcome(m.PrimaryTerm(1, time.monotonic() + 60)) == (
        FailedPrecondition.__name__,
        "a primary term is served by a volume's mount worker, and this volume is not mounted")
