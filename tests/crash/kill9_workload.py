"""The workload the kill -9 tests run on a mount, in a child process (not a test module).

    python kill9_workload.py MOUNTPOINT LOG SEED PREFIX OPS_MAX

It creates, writes (in pieces, with overwrites, holes and truncations), fsyncs, renames,
rewrites in place and unlinks files whose names start with PREFIX, and records in LOG
(outside the mount; appended, then fsynced, one JSON object a line) what it is about to
do and what the kernel has confirmed, so the expectation after a crash is unambiguous:

* ``creating P`` before the file is created, ``closed P sha size`` after ``close()``
  returned, ``fsynced P sha size`` after ``fsync()`` returned (the file's content so far;
  it may grow after that, never shrink or change below ``size``);
* ``modifying P`` before rewriting an existing file in place, then ``closed`` again;
* ``renaming S D`` before ``rename()``, ``renamed S D`` after it returned; D is a fresh name;
* ``unlinking P`` before ``unlink()``, ``unlinked P`` after it returned.

Every name is created once. When the mount dies under it (the worker was killed), the
next call fails (ENOTCONN, EIO ...): the workload logs ``error`` and exits 0. Every call
goes through a descriptor of the mount's root opened at the start, so once the dead mount
is cleared, nothing lands in the empty directory underneath by mistake.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sys

BLOCK = 64 * 1024
DIRS = ("", "d0", "d1")


class Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, op: str, **fields: object) -> None:
        os.write(self.fd, json.dumps({"op": op, **fields}).encode() + b"\n")
        os.fsync(self.fd)


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def write_new(root: int, path: str, rng: random.Random, log: Log) -> bytes:
    """Create ``path`` and fill it in pieces; maybe fsync half-way; close; return the content."""
    log("creating", path=path)
    content = bytearray()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=root)
    try:
        for _ in range(rng.randrange(1, 5)):
            piece = rng.randbytes(rng.choice([1, 100, 4096, BLOCK - 1, BLOCK + 3,
                                              rng.randrange(1, 3 * BLOCK)]))
            if content and rng.random() < 0.3:
                offset = rng.randrange(0, len(content))          # overwrite inside
            elif rng.random() < 0.15:
                offset = len(content) + rng.randrange(1, 2 * BLOCK)   # leave a hole
            else:
                offset = len(content)
            os.pwrite(fd, piece, offset)
            end = offset + len(piece)
            content.extend(bytes(max(0, end - len(content))))
            content[offset:end] = piece
        if rng.random() < 0.3:
            os.fsync(fd)
            log("fsynced", path=path, sha=sha(content), size=len(content))
            piece = rng.randbytes(rng.randrange(1, BLOCK))       # append only after an fsync
            os.pwrite(fd, piece, len(content))
            content.extend(piece)
    finally:
        os.close(fd)
    log("closed", path=path, sha=sha(content), size=len(content))
    return bytes(content)


def modify(root: int, path: str, content: bytes, rng: random.Random, log: Log) -> bytes:
    """Rewrite part of an existing file in place, or truncate it; return the new content."""
    log("modifying", path=path)
    new = bytearray(content)
    fd = os.open(path, os.O_WRONLY, dir_fd=root)
    try:
        if rng.random() < 0.3:
            size = rng.randrange(0, len(new) + BLOCK)
            os.ftruncate(fd, size)
            new = new[:size] + bytes(max(0, size - len(new)))
        else:
            piece = rng.randbytes(rng.randrange(1, 2 * BLOCK))
            offset = rng.randrange(0, len(new) + 1)
            os.pwrite(fd, piece, offset)
            new.extend(bytes(max(0, offset + len(piece) - len(new))))
            new[offset:offset + len(piece)] = piece
    finally:
        os.close(fd)
    log("closed", path=path, sha=sha(new), size=len(new))
    return bytes(new)


def run(root: int, log: Log, rng: random.Random, prefix: str, ops_max: int) -> None:
    for d in DIRS[1:]:
        with contextlib.suppress(FileExistsError):       # a later round on the same volume
            os.mkdir(d, dir_fd=root)
    live: dict[str, bytes] = {}          # closed files of this run and their content
    for counter in range(1, ops_max + 1):
        roll = rng.random()
        if not live or roll < 0.55:
            path = os.path.join(rng.choice(DIRS), f"{prefix}-{counter}")
            live[path] = write_new(root, path, rng, log)
        elif roll < 0.70:
            src = rng.choice(sorted(live))
            dst = os.path.join(rng.choice(DIRS), f"{prefix}-{counter}-r")
            log("renaming", src=src, dst=dst)
            os.rename(src, dst, src_dir_fd=root, dst_dir_fd=root)
            log("renamed", src=src, dst=dst)
            live[dst] = live.pop(src)
        elif roll < 0.82:
            path = rng.choice(sorted(live))
            log("unlinking", path=path)
            os.unlink(path, dir_fd=root)
            log("unlinked", path=path)
            del live[path]
        else:
            path = rng.choice(sorted(live))
            live[path] = modify(root, path, live[path], rng, log)


def main() -> int:
    mountpoint, log_path, seed, prefix, ops_max = sys.argv[1:6]
    log = Log(log_path)
    try:
        root = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        run(root, log, random.Random(int(seed)), prefix, int(ops_max))
    except OSError as exc:
        log("error", errno=exc.errno, message=str(exc))
        return 0
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
