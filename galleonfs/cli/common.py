"""What every command-line tool shares: running a parsed command with the error contract.

Kept free of heavy imports: ``galleonctl`` starts faster when it does not load the engine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import ExitCode, GalleonError


def run(argv: list[str] | None, parser: argparse.ArgumentParser, prog: str) -> int:
    """Run a CLI: user errors become one line on stderr and a stable exit code."""
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except GalleonError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except PermissionError as exc:
        print(f"{prog}: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return ExitCode.PERMISSION
    except FileNotFoundError as exc:
        print(f"{prog}: error: no such file or directory: {exc.filename or exc}", file=sys.stderr)
        return ExitCode.NOT_FOUND
