"""The kernel side of a mount: finding it in mountinfo, and tuning it.

libfuse 3 (as pyfuse3 drives it) already asks for the largest requests the kernel allows:
``max_write`` 1 MiB and ``max_pages`` 256. What the INIT reply cannot set, and sysfs can
(root only; a non-root mount keeps the kernel defaults and logs that):

* ``read_ahead_kb`` of the mount's backing device: 1024, so sequential reads arrive as
  1 MiB requests instead of the default 128 KiB ones;
* ``max_ratio`` of the same device: the kernel caps a FUSE mount's dirty page cache at 1 %
  of the dirty limit, which throttles writers to the worker's pace after a few MiB; 40 %
  lets a burst land in the page cache first, as on a local disk;
* ``max_background`` / ``congestion_threshold`` of the FUSE connection: more readahead and
  writeback requests in flight while the worker is busy.

The numbers behind each value are in docs/benchmarks.md.

What it must not do: touch the mounted file system itself (a ``stat`` of the mount point
from the worker, before its loop runs, would deadlock).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .tuning import Tuning

log = logging.getLogger(__name__)

FUSECTL_DIR = "/sys/fs/fuse/connections"


@dataclass(frozen=True)
class MountInfo:
    major: int
    minor: int
    mountpoint: str
    fstype: str
    source: str
    options: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def find_mount(mountpoint: str) -> MountInfo | None:
    """The last (topmost) mount at ``mountpoint``, from /proc/self/mountinfo.

    Only the parent is resolved: ``realpath`` of the mount point itself would ``lstat`` it,
    which, from the worker serving it, waits for an answer only the worker can give.
    """
    path = os.path.abspath(mountpoint)
    target = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if _unescape(fields[4]) != target:
                continue
            major, minor = (int(x) for x in fields[2].split(":"))
            found = MountInfo(major, minor, target, fields[sep + 1], _unescape(fields[sep + 2]),
                              fields[5])
    return found


def is_galleonfs_mount(info: MountInfo | None) -> bool:
    return info is not None and info.fstype == "fuse.galleonfs"


def _write_settings(directory: str, settings: dict[str, str]) -> list[str]:
    done = []
    for name, value in settings.items():
        path = os.path.join(directory, name)
        try:
            with open(path, "w") as f:
                f.write(value)
            done.append(f"{name}={value}")
        except OSError as exc:
            log.info("could not set %s to %s (%s); keeping the kernel default", path, value, exc.strerror)
    return done


def tune_mount(mountpoint: str, tuning: Tuning) -> list[str]:
    """Apply the sysfs settings above to the mount at ``mountpoint``; return what was set."""
    info = find_mount(mountpoint)
    if info is None:
        log.warning("mount at %s not found in mountinfo; kernel settings left alone", mountpoint)
        return []
    bdi = {name: str(value) for name, value in (("read_ahead_kb", tuning.read_ahead_kb),
                                                 ("max_ratio", tuning.max_ratio)) if value}
    done = _write_settings(f"/sys/class/bdi/{info.major}:{info.minor}", bdi)
    connection = os.path.join(FUSECTL_DIR, str(info.minor))
    if os.path.isdir(connection) and tuning.max_background:
        done += _write_settings(connection, {
            "max_background": str(tuning.max_background),
            "congestion_threshold": str(tuning.max_background * 3 // 4)})
    if done:
        log.info("kernel settings for %s: %s", mountpoint, ", ".join(done))
    return done
