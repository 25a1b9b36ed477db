"""What every command-line tool shares: running a parsed command with the error contract.

Kept free of heavy imports: ``galleonctl`` starts faster when it does not load the engine.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from .. import limits, names
from ..errors import ExitCode, GalleonError, InvalidArgument


class ProgressLine:
    """``label: done/total (N %)`` on stderr, rewritten in place; silent when stderr is not a
    terminal (scripts and tests see only the result). Call it with each ``(done, total)``;
    ``end`` closes the line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.tty and total:
            print(f"\r{self.label}: {done}/{total} ({100 * done // total} %)", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def parse_labels(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` arguments (``--label``, ``--selector``) as a map; the daemon checks them."""
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(what="label", value=repr(pair), expected="use key=value")
        labels[key] = value
    return labels


def run(argv: list[str] | None, parser: argparse.ArgumentParser, prog: str) -> int:
    """Run a CLI: user errors become one line on stderr and a stable exit code."""
    try:
        try:
            args = parser.parse_args(argv)
            func: Callable[[argparse.Namespace], int] = args.func
            return func(args)
        finally:
            sys.stdout.flush()      # here, where a closed pipe is caught, not at exit
    except GalleonError as exc:
        # One line, bounded like the daemon's status messages, whatever the error quotes.
        message = names.bounded(names.one_line(str(exc)), limits.status_message_bytes_max)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except UnicodeEncodeError as exc:
        # An argument that is not UTF-8 (argv's undecodable bytes) cannot go into a request.
        print(f"{prog}: error: an argument is not valid UTF-8 ({names.quote(str(exc.object))}); "
              f"use UTF-8 names and paths", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output left (`galleonctl ... | head -1`): stop quietly, as a
        # command killed by SIGPIPE would, and keep Python's exit-time flush from printing
        # a traceback into the same closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except PermissionError as exc:
        print(f"{prog}: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return ExitCode.PERMISSION
    except FileNotFoundError as exc:
        print(f"{prog}: error: no such file or directory: {exc.filename or exc}", file=sys.stderr)
        return ExitCode.NOT_FOUND
