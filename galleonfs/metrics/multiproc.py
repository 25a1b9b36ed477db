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

What it must not do: delete a live process's files (they are mmapped by their writer).
"""

from __future__ import annotations

import logging
import os
import re

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
