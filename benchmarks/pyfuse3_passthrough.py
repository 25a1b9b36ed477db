"""Launcher for pyfuse3's own ``examples/passthroughfs.py``: the Python floor among the peers.

    python -m benchmarks.pyfuse3_passthrough --example PATH/passthroughfs.py SOURCE MOUNTPOINT

The example comes from the pyfuse3 sdist of the installed version (``benchmarks/peers.py``
downloads it into a cache outside the repository); its code is not copied here. It is
loaded as it is and changed at run time only where issue 11 asks for a fair peer:

* the kernel's writeback cache on (the example has the switch, off by default);
* 1 s attribute and entry timeouts (the example replies 0 s, a GETATTR before every use);
* a real fsync: the example has no ``fsync`` handler, so pyfuse3 answers ENOSYS and the
  kernel then treats every later fsync as done without asking. A peer whose fsync never
  reaches the disk would win append + fsync for free;
* with the writeback cache, the kernel reads pages of files opened write-only and applies
  O_APPEND itself, so files are opened read-write and without O_APPEND, as libfuse's own
  ``passthrough_ll`` example does in the same mode. Without it, the first write that does
  not cover a whole cold page makes the kernel READ the page through the write-only fd:
  EBADF, which the example does not catch, and the server dies (tried: ECONNABORTED).

Everything else (one trio task per request, synchronous ``os`` calls, lseek + read/write)
stays the example's. It must not grow into a file system of its own: a faster passthrough
would no longer be pyfuse3's floor.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pyfuse3
import trio

TIMEOUT_S = 1.0          # the libfuse default for attribute and entry timeouts


def load_example(path: Path) -> ModuleType:
    """Import the sdist's example from ``path`` under its own name."""
    spec = importlib.util.spec_from_file_location("passthroughfs", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}: not a Python module; re-download the pyfuse3 sdist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def patched_operations(example: ModuleType) -> type:
    """The example's ``Operations`` with the four changes the module docstring lists."""
    base: Any = example.Operations

    class BenchOperations(base):  # type: ignore[misc]
        def _getattr(self, path: str | None = None, fd: int | None = None) -> pyfuse3.EntryAttributes:
            entry: pyfuse3.EntryAttributes = super()._getattr(path=path, fd=fd)
            entry.entry_timeout = TIMEOUT_S
            entry.attr_timeout = TIMEOUT_S
            return entry

        async def open(self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
            info: pyfuse3.FileInfo = await super().open(inode, writeback_flags(flags), ctx)
            return info

        async def create(self, parent_inode: pyfuse3.InodeT, name: bytes, mode: int, flags: int,
                         ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
            created: tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes] = await super().create(
                parent_inode, name, mode, writeback_flags(flags), ctx)
            return created

        async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
            try:
                if datasync:
                    os.fdatasync(fh)
                else:
                    os.fsync(fh)
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    return BenchOperations


def writeback_flags(flags: int) -> int:
    """Open flags as libfuse's passthrough_ll sets them under the writeback cache."""
    if flags & os.O_ACCMODE == os.O_WRONLY:
        flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    return flags & ~os.O_APPEND


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", required=True, type=Path, help="the sdist's examples/passthroughfs.py")
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    args = parser.parse_args(argv)
    example = load_example(args.example)
    operations = patched_operations(example)(args.source, enable_writeback_cache=True)
    options = set(pyfuse3.default_options)
    options.add("fsname=passthroughfs")
    pyfuse3.init(operations, args.mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    except BaseException:
        pyfuse3.close(unmount=False)
        raise
    pyfuse3.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
