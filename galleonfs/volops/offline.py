"""``OfflineOps``: volume operations on an unmounted volume, each in a short-lived helper.

The daemon never maps a volume's LMDB (or, at start, the catalog) in its own process: a
damaged page there is a SIGBUS, which would take the API down for every volume (DESIGN
§7). So every operation on an unmounted volume runs in a child, ``helper.py``::

    python -m galleonfs.volops.helper
    -> {"volume_dir": "...", "keys": {...}, "parent": PID}    the setting (the key source
                                                              travels here, never in argv)
    -> {"op": "stats", "args": {}}                           the request (``codec.py``)
    <- {"progress": [done, total]}                           zero or more (a rekey, a flatten)
    <- {"ok": true, "reply": {...}}   or   {"ok": false, "error": ..., "class": ...}

then exit 0. A ``GalleonError`` crosses back with its class, as on the control socket.
Anything else (a signal such as SIGBUS or SIGSEGV, an exit without an answer, a helper that
outlives its timeout and is killed) is ``HelperFailed``: the caller marks that volume FAILED
(``on_failure``), and the process that asked stays up.

Cost, measured on the 2-core test machine: ~0.17 s per operation (interpreter start 0.01 s,
imports of the engine ~0.09 s, then the open and the journal replay), against milliseconds
for the work itself. Offline operations are operator commands, not a hot path; a mounted
volume's operations go to its worker and never pay it.

What it must not do: run an operation in the calling process, or send a helper's stderr
(which may hold what a key command printed) anywhere but the caller's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any, cast

import trio

from .. import limits
from ..crypto.keys import KeySpec
from ..errors import FormatError, GalleonError, HelperFailed
from . import codec
from .codec import Setting
from .messages import Request, VolumeRequest
from .protocol import Progress, R

log = logging.getLogger(__name__)


class OfflineOps:
    """``VolumeOps`` of the unmounted volume in ``volume_dir``.

    ``on_failure`` turns a helper that died (or found the metadata unreadable) into the
    error to raise, after marking the volume FAILED; it runs on the trio thread.
    """

    def __init__(self, volume_dir: str, keys: KeySpec, *, what: str = "",
                 on_failure: Callable[[GalleonError], GalleonError] | None = None) -> None:
        self.volume_dir = volume_dir
        self.keys = keys
        self.what = what or volume_dir
        self._on_failure = on_failure

    async def run(self, request: VolumeRequest[R], progress: Progress | None = None) -> R:
        """``progress`` is called on the thread that waits for the helper."""
        setting = Setting(self.volume_dir, self.keys, os.getpid())
        try:
            return await trio.to_thread.run_sync(
                lambda: run(request, setting, progress, what=self.what))
        except (HelperFailed, FormatError) as exc:
            # FormatError: the helper opened the volume and found its metadata unreadable
            # (damaged pages, an unknown format): as failed as a helper that died of it.
            if self._on_failure is None:
                raise
            raise self._on_failure(exc) from None


def describe_death(code: int) -> str:
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code} without an answer"


def run(request: Request[R], setting: Setting | None = None, progress: Progress | None = None, *,
        timeout_s: float | None = None, what: str = "") -> R:
    """Run ``request`` in a new helper and return its reply (blocking: call it on a thread).

    Raises the helper's ``GalleonError`` as it was raised there, or ``HelperFailed`` (with a
    clause such as "the helper died of SIGBUS") when the helper gave no answer. ``what``
    names the subject in the log (a volume id, "the catalog").
    """
    setting = setting or Setting(parent=os.getpid())
    timeout_s = timeout_for(request) if timeout_s is None else timeout_s
    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="galleonfs-helper-") as err:
        proc = subprocess.Popen([sys.executable, "-m", "galleonfs.volops.helper"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, close_fds=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(codec.encode(setting) + b"\n" + codec.encode_request(request))
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
    subject = what or setting.volume_dir or request.op
    failure = ""
    if timed_out:
        failure = f"the helper did not finish {request.op} in {timeout_s:.0f} s and was killed"
    elif final is None or code != 0:
        failure = f"the helper {describe_death(code)} during {request.op}"
    _relay(stderr, subject, failure)
    if failure or final is None:
        raise HelperFailed(failure)
    try:
        reply = cast(R, codec.decode_answer(final, request.reply_type))
    except codec.BadMessage as exc:
        raise HelperFailed(f"the helper's answer to {request.op} is not one ({exc})") from None
    log.debug("offline %s of %s took %.3f s", request.op, subject, time.monotonic() - started)
    return reply


def _read_answer(proc: subprocess.Popen[bytes], progress: Progress | None,
                 deadline: float) -> tuple[bytes | None, bool]:
    """Read lines until the final one, EOF or the deadline: (final line, timed out)."""
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
                step = codec.decode(line, codec.ProgressLine).progress
            except codec.BadMessage:
                return None, False
            if step is None:
                return line, False
            if progress is not None:
                progress(*step)


def _tail(err: IO[bytes]) -> str:
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - limits.offline_stderr_bytes_max))
    return err.read().decode(errors="replace")


_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def _relay(stderr: str, subject: str, failure: str) -> None:
    """The helper's log lines, into the caller's log at their own level ("LEVEL name: msg");
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


def timeout_for(request: Request[Any]) -> float:
    return limits.offline_bulk_op_timeout_s if request.bulk else limits.offline_op_timeout_s
