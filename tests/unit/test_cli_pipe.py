"""A reader that leaves early (`galleonctl volume list | head -1`) ends the CLI quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# A command as galleonctl runs one (cli.common.run), printing a table of lines.
PROGRAM = """
import argparse
from galleonfs.cli.common import run
def table(args):
    for i in range(100):
        print(f"volume-{i} 1GiB mounted")
    return 0
parser = argparse.ArgumentParser(prog="galleonctl")
parser.set_defaults(func=table)
raise SystemExit(run([], parser, "galleonctl"))
"""


def test_a_closed_stdout_pipe_ends_quietly_with_the_sigpipe_status() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)                  # the reader has already gone
    try:
        proc = subprocess.run([sys.executable, "-c", PROGRAM], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 128 + signal.SIGPIPE
