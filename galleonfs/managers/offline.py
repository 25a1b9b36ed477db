"""Offline volume operations, each run in a short-lived helper process (DESIGN §7).

The daemon never maps a volume's LMDB (or, at start, the catalog) in its own process: a
damaged page there is a SIGBUS, which would take the API down for every volume. Each
operation on an unmounted volume is a named function of this module, run in a child::

    python -m galleonfs.managers.offline      (request on stdin, answer on stdout)

    -> {"op": "stats", "volume_dir": "...", "args": {}, "keys": {...}, "parent": PID}
    <- {"progress": [done, total]}            zero or more (a rekey reports its progress)
    <- {"ok": true, "reply": {...}}            or
    <- {"ok": false, "error": "...", "status": "NOT_FOUND", "class": "NotFound"}

then exit 0. A ``GalleonError`` crosses back with its class, as on the mount worker's control
socket (``fuse/control.py``), and the operations answer what the worker's handlers of the same
name answer, so a caller sees one interface: the worker online, this helper offline (issue 10
makes that a typed "volume operations" interface; ``OPS`` is its offline half). Anything else
(a signal such as SIGBUS or SIGSEGV, an LMDB error of a damaged page, an exit without an
answer, a helper that outlives its timeout and is killed) is ``HelperFailed``: the caller marks that volume FAILED, and the
process that asked stays up. The key source travels on stdin, never in argv (which every
local user can read in /proc).

Cost, measured on the 2-core test machine: ~0.17 s per operation (interpreter start 0.01 s,
imports of the engine ~0.09 s, then the open and the journal replay of the volume, which the
daemon paid in-process before), against milliseconds for the work itself. Offline operations
are operator commands (stats, snapshot, expand of an unmounted volume), not a hot path; a
mounted volume's operations go to its worker and never pay it.

What it must not do: run an operation in the daemon's process, or send a helper's stderr
(which may hold what a key command printed) anywhere but the daemon's log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import limits
from ..crypto.keys import KeySpec
from ..errors import GalleonError, HelperFailed, InvalidArgument, error_from_status

log = logging.getLogger("galleonfs.managers.offline")   # also when run as __main__

Progress = Callable[[int, int], None]
Reply = dict[str, Any]


# --- the operations (run in the helper) ------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One named operation. ``engine`` ops get the volume opened for them; the others get
    the request (they open what they need: the catalog, or a volume's super record)."""

    fn: Callable[..., Reply]
    engine: bool = True
    read_only: bool = False     # opened read-only, a volume marked for check included
    bulk: bool = False          # touches every block: the long timeout


def _stats(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..vfs.vfs import Vfs

    fs = Vfs(engine).statfs()
    return {"pid": 0, "size": engine.size, "used_bytes": engine.used_bytes,
            "inodes_used": engine.sb.inode_count, "inodes_total": fs.files,
            "failsafe": engine.needs_check() or "", "counters": dict(engine.counters),
            "mounted": False}


def _resize(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    size = args["size"]
    engine.resize(size)
    return {"size": size}


def _snapshot_create(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import snapshots

    return {"snapshot": snapshots.info(engine, snapshots.create(engine, str(args["name"])))}


def _snapshot_delete(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import snapshots

    return {"freed_bytes": snapshots.delete(engine, str(args["name"]))}


def _snapshot_list(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import snapshots

    return {"snapshots": [snapshots.info(engine, s) for s in snapshots.snapshots(engine)]}


def _snapshot_diff(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import snapshots

    new = args.get("new")
    changes = snapshots.diff(engine, str(args["old"]), None if new is None else str(new))
    return {"changes": [asdict(c) for c in changes]}


def _snapshot_release(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import clones

    clones.release(engine, str(args["name"]), str(args["clone_id"]))
    return {}


def _snapshot_restore(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import snapshots

    return {"changed": snapshots.restore(engine, str(args["name"]))}


def _clone(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import clones

    size = int(args["size"])
    return {"volume_id": clones.create(engine, str(args["snapshot"]), str(args["target_dir"]),
                                       clone_id=str(args["clone_id"]), name=str(args["name"]),
                                       size=size or None)}


def _flatten(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import clones

    origin, copied = clones.flatten(engine, progress)
    return {"origin_volume": origin.volume_id, "origin_snapshot": origin.snapshot,
            "copied_bytes": copied}


def _rekey(engine: Any, args: dict[str, Any], progress: Progress) -> Reply:
    from ..engine import rekey

    return {"epoch": rekey.run(engine, progress)}


def _describe(request: Request, progress: Progress) -> Reply:
    """A volume's own super record: what ``galleond recover-catalog`` rebuilds a catalog
    entry from. Opened read-only; an encrypted volume whose key is not at hand still
    answers from the unsealed super fields (sizes and names are not sealed)."""
    from ..crypto import volume_key
    from ..engine import clones
    from ..engine.engine import Engine
    from ..errors import KeyUnavailable
    from ..meta import schema
    from ..meta.schema import Db
    from ..meta.store import MetaStore

    encrypted = volume_key.is_encrypted(request.volume_dir)
    keys = request.keys.manager(create=False) if request.keys.configured and encrypted else None
    try:
        engine = Engine.open(request.volume_dir, read_only=True, ignore_needs_check=True, keys=keys)
    except KeyUnavailable:
        engine = None
    if engine is not None:
        try:
            origin = clones.origin_of(engine)
            return {"volume_id": engine.volume_id, "name": engine.name, "size": engine.size,
                    "block_size": engine.block_size, "encrypted": encrypted,
                    "created_ns": engine.sb.created_ns,
                    "origin_volume_dir": origin.volume_dir if origin else "",
                    "origin_snapshot": origin.snapshot if origin else ""}
        finally:
            engine.close(checkpoint=False)
    meta = MetaStore(request.volume_dir)
    try:
        def text(key: bytes) -> str:
            return bytes(meta.get(Db.SUPER, key) or b"").decode(errors="replace")

        def number(key: bytes) -> int:
            raw = meta.get(Db.SUPER, key)
            return schema.decode_super_int(raw) if raw is not None else 0

        origin_raw = meta.get(Db.SUPER, clones.ORIGIN_FIELD)
        sealed_origin = json.loads(origin_raw) if origin_raw else {}
        return {"volume_id": text(b"volume_id"), "name": text(b"name"), "size": number(b"size"),
                "block_size": number(b"block_size"), "encrypted": encrypted,
                "created_ns": number(b"created_ns"),
                "origin_volume_dir": str(sealed_origin.get("volume_dir", "")),
                "origin_snapshot": str(sealed_origin.get("snapshot", "")),
                "note": "the volume's key was not at hand: sizes from its last checkpoint"}
    finally:
        meta.close(commit=False)


def _catalog_check(request: Request, progress: Progress) -> Reply:
    from ..meta.catalog import check

    return check(str((request.args or {})["path"]))


def _catalog_dump(request: Request, progress: Progress) -> Reply:
    from ..meta.catalog import dump

    return dump(str((request.args or {})["path"]))


OPS: dict[str, Op] = {
    "stats": Op(_stats, read_only=True),
    "resize": Op(_resize),
    "snapshot_create": Op(_snapshot_create),
    "snapshot_delete": Op(_snapshot_delete),
    "snapshot_list": Op(_snapshot_list, read_only=True),
    "snapshot_diff": Op(_snapshot_diff, read_only=True),
    "snapshot_release": Op(_snapshot_release),
    "snapshot_restore": Op(_snapshot_restore, bulk=True),
    "clone": Op(_clone, bulk=True),
    "flatten": Op(_flatten, bulk=True),
    "rekey": Op(_rekey, bulk=True),
    "describe": Op(_describe, engine=False, read_only=True),
    "catalog_check": Op(_catalog_check, engine=False, read_only=True),
    "catalog_dump": Op(_catalog_dump, engine=False, read_only=True),
}


@dataclass(frozen=True)
class Request:
    op: str
    volume_dir: str = ""
    args: dict[str, Any] | None = None
    keys: KeySpec = field(default_factory=KeySpec)

    def to_json(self) -> bytes:
        return json.dumps({"op": self.op, "volume_dir": self.volume_dir, "args": self.args or {},
                           "keys": asdict(self.keys), "parent": os.getpid()}).encode() + b"\n"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        keys = data.get("keys") or {}
        if not isinstance(data.get("op"), str) or not isinstance(keys, dict):
            raise InvalidArgument("a helper request needs an op and a key spec")
        return cls(op=data["op"], volume_dir=str(data.get("volume_dir", "")),
                   args=dict(data.get("args") or {}),
                   keys=KeySpec(**{k: str(v) for k, v in keys.items() if k in KeySpec.__dataclass_fields__}))


def execute(request: Request, progress: Progress) -> Reply:
    """Run one operation here (in the helper). Engine ops open the volume for the occasion
    under its lock, as the daemon did before, and close it (with a checkpoint if it wrote)."""
    op = OPS.get(request.op)
    if op is None:
        raise InvalidArgument(f"unknown offline operation {request.op!r}")
    args = request.args or {}
    if not op.engine:
        return op.fn(request, progress)
    from ..crypto import volume_key
    from ..engine.engine import Engine

    keys = None
    if volume_key.is_encrypted(request.volume_dir):
        if not request.keys.configured:
            raise InvalidArgument(  # mirrors VolumeManager.key_manager's sentence
                "this volume is encrypted and this node has no key source; set key_file (or "
                "key_passphrase_env, or key_command) in galleond's configuration")
        keys = request.keys.manager(create=False)
    engine = Engine.open(request.volume_dir, keys=keys, read_only=op.read_only,
                         ignore_needs_check=op.read_only)
    try:
        return op.fn(engine, args, progress)
    finally:
        engine.close(checkpoint=not op.read_only)


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG: a helper never outlives the daemon that waits for it (it would hold
    the volume's lock with nobody to read its answer). An op cut short is crash-safe."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:
        os._exit(1)              # the parent died before the line above took effect


def main() -> int:
    logging.basicConfig(level=os.environ.get("GALLEONFS_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    out = sys.stdout.buffer

    def emit(message: dict[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    line = sys.stdin.buffer.readline(limits.control_request_bytes_max + 1)
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        _die_with_parent(int(data.get("parent") or 0))
        request = Request.from_json(data)
        reply = execute(request, lambda done, total: emit({"progress": [done, total]}))
        emit({"ok": True, "reply": reply})
    except GalleonError as exc:
        emit({"ok": False, "error": str(exc), "status": exc.grpc_status, "class": type(exc).__name__})
    except (ValueError, TypeError) as exc:
        emit({"ok": False, "error": f"bad helper request: {exc}", "status": "INVALID_ARGUMENT",
              "class": "InvalidArgument"})
    except Exception as exc:
        # LMDB reports a damaged page it can see (MDB_CORRUPTED, MDB_PAGE_NOTFOUND) with its
        # own exceptions, from anywhere in the engine: the same verdict as a SIGBUS.
        if type(exc).__module__ != "lmdb":
            raise
        log.error("the metadata store is damaged", exc_info=True)
        emit({"ok": False, "error": f"the helper found the metadata store damaged ({exc})",
              "status": "DATA_LOSS", "class": HelperFailed.__name__})
    return 0


# --- the caller's side --------------------------------------------------------------------------------
def describe_death(code: int) -> str:
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code} without an answer"


def timeout_for(op: str) -> float:
    found = OPS.get(op)
    return limits.offline_bulk_op_timeout_s if found is not None and found.bulk else limits.offline_op_timeout_s


def run(request: Request, progress: Progress | None = None, *, timeout_s: float | None = None,
        what: str = "") -> Reply:
    """Run ``request`` in a new helper and return its reply (blocking: call it on a thread).

    Raises the helper's ``GalleonError`` as it was raised there, or ``HelperFailed`` (with a
    clause such as "the helper died of SIGBUS") when the helper gave no answer. ``what``
    names the subject in the daemon's log (a volume id, "the catalog").
    """
    timeout_s = timeout_for(request.op) if timeout_s is None else timeout_s
    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="galleonfs-helper-") as err:
        proc = subprocess.Popen([sys.executable, "-m", "galleonfs.managers.offline"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                close_fds=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(request.to_json())
                proc.stdin.close()
            final, timed_out = _read_answer(proc, progress, started + timeout_s)
            if not timed_out:
                # The answer comes after the volume is closed; what is left is the
                # interpreter's exit, which a bound keeps from hanging the caller.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(1.0, started + timeout_s - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            stderr = _tail(err)
    subject = what or request.volume_dir or request.op
    failure = ""
    if timed_out:
        failure = f"the helper did not finish {request.op} in {timeout_s:.0f} s and was killed"
    elif final is None or code != 0:
        failure = f"the helper {describe_death(code)} during {request.op}"
    _relay(stderr, subject, failure)
    if failure or final is None:
        raise HelperFailed(failure)
    if not final.get("ok"):
        raise error_from_status(str(final.get("status", "INTERNAL")), str(final.get("error", "unknown error")),
                                str(final.get("class") or "") or None)
    reply = final.get("reply")
    assert isinstance(reply, dict), "a helper answered ok without a reply"
    log.debug("offline %s of %s took %.3f s", request.op, subject, time.monotonic() - started)
    return reply


def _read_answer(proc: subprocess.Popen[bytes], progress: Progress | None,
                 deadline: float) -> tuple[dict[str, Any] | None, bool]:
    """Read answer lines until the final one, EOF or the deadline: (final, timed out)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    received = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None, False
        received += len(chunk)
        if received > limits.offline_reply_bytes_max:
            raise HelperFailed(f"the helper's answer is larger than {limits.offline_reply_bytes_max} bytes")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                return None, False
            if not isinstance(message, dict):
                return None, False
            if "progress" in message:
                done, total = message["progress"]
                if progress is not None:
                    progress(int(done), int(total))
                continue
            return message, False


def _tail(err: Any) -> str:
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - limits.offline_stderr_bytes_max))
    return str(err.read().decode(errors="replace"))


_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def _relay(stderr: str, subject: str, failure: str) -> None:
    """The helper's log lines, into the daemon's log at their own level ("LEVEL name: msg");
    a helper that failed is one ERROR with its (bounded) last output."""
    if failure:
        tail = f"; its last output:\n{stderr.rstrip()}" if stderr.strip() else " (no output)"
        log.error("offline helper for %s: %s%s", subject, failure, tail)
        return
    for line in stderr.splitlines():
        level, _, message = line.partition(" ")
        if level in _LEVELS:
            log.log(_LEVELS[level], "%s (offline helper for %s)", message, subject)
        elif line.strip():
            log.info("%s (offline helper for %s)", line, subject)


if __name__ == "__main__":
    sys.exit(main())
