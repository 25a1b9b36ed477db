"""The directory where mount workers leave their metric values for galleond to add up.

``<data-dir>/run/metrics``: prometheus-client's multi-process mode keeps one file per
process and kind (``counter_<pid>.db``, ``histogram_<pid>.db``, ``gauge_livesum_<pid>.db``
...). Workers inherit ``PROMETHEUS_MULTIPROC_DIR`` from galleond.

* A worker that exits (or is killed) keeps its counter and histogram files: its counts
  stay in the sums, so ``galleonfs_fuse_requests_total`` does not go backwards when the
  supervisor restarts a worker. Its ``live*`` gauges are dropped (``forget``).
* At galleond's start, files of processes that no longer exist are deleted: counters then
  restart from zero, as any exporter's do when it restarts, and the directory does not
  grow without bound. Workers adopted from the previous daemon keep theirs.
* When a volume is deleted, the files its dead workers left go too (``drop_volume``), so
  its series leave ``/metrics`` and a new volume of the same name starts from zero.

A worker's files are allocated in full before it writes any value (``preallocate``):
prometheus-client makes them sparse and mmaps them, and a new series written into a page of
a sparse file on a full disk kills the writer with SIGBUS.

What it must not do: delete a live process's files (they are mmapped by their writer).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

from .. import limits

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")

# Volume id -> pids of its workers that exited while this daemon ran (one volume each).
_dead: dict[str, list[int]] = {}


def directory(data_dir: str) -> str:
    return os.path.join(data_dir, "run", "metrics")


def prepare(data_dir: str) -> str:
    """Create the directory, drop dead processes' files, and point children at it."""
    path = directory(data_dir)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in os.listdir(path):
        match = _PID.search(name)
        if match and not _alive(int(match.group(1))):
            os.unlink(os.path.join(path, name))
    os.environ[ENV] = path          # inherited by every mount worker started from now on
    return path


def forget(pid: int, volume_id: str) -> None:
    """A worker is gone: drop its live gauges (in-flight, failsafe, size, used)."""
    path = os.environ.get(ENV)
    if not path:
        return
    _dead.setdefault(volume_id, []).append(pid)
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    except OSError as exc:          # a concurrent scrape or prune got there first
        log.debug("cleaning metrics of process %d: %s", pid, exc)


def drop_volume(volume_id: str) -> None:
    """The volume is deleted (its workers stopped): remove every file its workers left."""
    path = os.environ.get(ENV)
    pids = {str(pid) for pid in _dead.pop(volume_id, [])}
    if not path or not pids:
        return
    for name in os.listdir(path):
        match = _PID.search(name)
        if match and match.group(1) in pids:
            os.unlink(os.path.join(path, name))


def preallocate(kinds: set[str], pid: int | None = None) -> bool:
    """Create this process's metric files (``<kind>_<pid>.db``) with every byte allocated,
    before prometheus-client opens them (it keeps a file's existing size as its capacity).
    False, with nothing left behind, when the disk has no room: export nothing then."""
    path = os.environ.get(ENV)
    if not path:
        return False
    pid = os.getpid() if pid is None else pid
    made = []
    try:
        for kind in sorted(kinds):
            name = os.path.join(path, f"{kind}_{pid}.db")
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            made.append(name)
            try:
                if os.fstat(fd).st_size < limits.metrics_file_bytes:
                    os.posix_fallocate(fd, 0, limits.metrics_file_bytes)
            finally:
                os.close(fd)
    except OSError as exc:
        log.warning("not exporting this worker's metrics: cannot allocate its files in %s: %s",
                    path, exc.strerror or exc)
        for name in made:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
