"""The offline helper's main: one volume operation (or catalog job), then exit.

    python -m galleonfs.volops.helper        (the protocol is in ``offline.py``)

It reads its setting and one request, opens the volume under its lock (read-only for a
request that only reads, a volume marked for check included), runs the request through
``local.EngineOps`` with the unmounted ``Host``, closes the volume (with a checkpoint if it
wrote) and writes the answer. Catalog jobs walk a catalog file instead.

A damaged metadata page kills this process (SIGBUS) or makes LMDB raise its own errors; the
latter are answered as ``HelperFailed`` ("the metadata store is damaged"), the same verdict.
Bytes on stdin that are not a request are answered "bad helper request"; any other
exception is a bug and ends the helper with a traceback in the caller's log.

What it must not do: outlive the process that waits for it (it would hold the volume's lock
with nobody to read its answer), or print anything but protocol lines on stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .. import limits
from ..crypto import volume_key
from ..engine import clones
from ..engine.engine import Engine
from ..errors import GalleonError, HelperFailed, InvalidArgument, KeyUnavailable
from ..meta import catalog, schema
from ..meta.schema import Db
from ..meta.store import MetaStore
from . import codec
from . import messages as m
from .codec import Setting, progress_line
from .local import EngineOps, Host, run_to_completion

log = logging.getLogger("galleonfs.volops.helper")   # also when run as __main__


def execute(setting: Setting, request: m.Request[Any], progress: Callable[[int, int], None]) -> object:
    """Run one request here (in the helper)."""
    if isinstance(request, m.CheckCatalog):
        return codec.convert(catalog.check(request.path), m.CatalogSummary)
    if isinstance(request, m.DumpCatalog):
        return codec.convert(catalog.dump(request.path), m.CatalogRecords)
    assert isinstance(request, m.VolumeRequest), f"no way to run {type(request).__name__}"
    if isinstance(request, m.Describe):
        return _describe(setting)
    keys = None
    if volume_key.is_encrypted(setting.volume_dir):
        if not setting.keys.configured:
            raise InvalidArgument(  # the sentence VolumeManager.key_manager says
                "this volume is encrypted and this node has no key source; set key_file (or "
                "key_passphrase_env, or key_command) in galleond's configuration")
        keys = setting.keys.manager(create=False)
    engine = Engine.open(setting.volume_dir, keys=keys, read_only=request.read_only,
                         ignore_needs_check=request.read_only)
    try:
        return run_to_completion(EngineOps(engine, Host(engine)).run(request, progress))
    finally:
        engine.close(checkpoint=not request.read_only)


def _describe(setting: Setting) -> m.Description:
    """A volume's own super record, opened read-only; an encrypted volume whose key is not
    at hand still answers from the unsealed super fields (sizes and names are not sealed)."""
    encrypted = volume_key.is_encrypted(setting.volume_dir)
    keys = setting.keys.manager(create=False) if setting.keys.configured and encrypted else None
    try:
        engine = Engine.open(setting.volume_dir, read_only=True, ignore_needs_check=True, keys=keys)
    except KeyUnavailable:
        return _describe_sealed(setting.volume_dir, encrypted)
    try:
        return run_to_completion(EngineOps(engine, Host(engine)).run(m.Describe()))
    finally:
        engine.close(checkpoint=False)


def _describe_sealed(volume_dir: str, encrypted: bool) -> m.Description:
    meta = MetaStore(volume_dir)
    try:
        def text(key: bytes) -> str:
            return bytes(meta.get(Db.SUPER, key) or b"").decode(errors="replace")

        def number(key: bytes) -> int:
            raw = meta.get(Db.SUPER, key)
            return schema.decode_super_int(raw) if raw is not None else 0

        origin_raw = meta.get(Db.SUPER, clones.ORIGIN_FIELD)
        origin = codec.decode(bytes(origin_raw), dict[str, Any]) if origin_raw else {}
        return m.Description(
            volume_id=text(b"volume_id"), name=text(b"name"), size=number(b"size"),
            block_size=number(b"block_size"), encrypted=encrypted, created_ns=number(b"created_ns"),
            origin_volume_dir=str(origin.get("volume_dir", "")), origin_snapshot=str(origin.get("snapshot", "")),
            note="the volume's key was not at hand: sizes from its last checkpoint")
    finally:
        meta.close(commit=False)


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG: a helper never outlives the process that waits for it. An
    operation cut short is crash-safe."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:
        os._exit(1)              # the parent died before the line above took effect


def main() -> int:
    logging.basicConfig(level=os.environ.get("GALLEONFS_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    out = sys.stdout.buffer

    def emit(line: bytes) -> None:
        out.write(line)
        out.flush()

    stdin = sys.stdin.buffer
    try:
        setting = codec.decode(stdin.readline(limits.control_request_bytes_max + 1), Setting)
        _die_with_parent(setting.parent)
        request = codec.decode_request(stdin.readline(limits.control_request_bytes_max + 1))
        reply = execute(setting, request, lambda done, total: emit(progress_line(done, total)))
        emit(codec.encode_reply(reply))
    except GalleonError as exc:
        emit(codec.encode_error(exc))
    except codec.BadMessage as exc:
        emit(codec.encode_error(InvalidArgument(f"bad helper request: {exc}")))
    except Exception as exc:
        # LMDB reports a damaged page it can see (MDB_CORRUPTED, MDB_PAGE_NOTFOUND) with its
        # own exceptions, from anywhere in the engine: the same verdict as a SIGBUS.
        if type(exc).__module__ != "lmdb":
            raise
        log.error("the metadata store is damaged", exc_info=True)
        emit(codec.encode_error(HelperFailed(f"the helper found the metadata store damaged ({exc})")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
