"""Crash points are registered: a misspelt name fails the test that arms it, and the
registry names exactly the points the code has."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import galleonfs
from galleonfs.engine import crashpoints
from galleonfs.errors import InvalidArgument


def _hit_names() -> set[str]:
    """Every literal name passed to ``crashpoints.hit`` anywhere in the package."""
    names = set()
    for path in Path(galleonfs.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "hit" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "crashpoints"):
                assert len(node.args) == 1 and isinstance(node.args[0], ast.Constant), \
                    f"{path}: crashpoints.hit takes one literal name"
                names.add(node.args[0].value)
    return names


def test_the_registry_names_exactly_the_points_the_code_hits() -> None:
    assert _hit_names() == set(crashpoints.POINTS)


def test_arming_a_misspelt_point_raises_and_arms_nothing() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown crash point 'journal\.after_apend'"):
        crashpoints.arm("journal.after_apend")
    crashpoints.hit("journal.after_append_before_sync")      # nothing armed: no crash


def test_an_armed_point_crashes_at_its_nth_hit_only() -> None:
    crashpoints.arm("segment.after_append", 2)
    try:
        crashpoints.hit("segment.after_append")
        with pytest.raises(crashpoints.SimulatedCrash, match=r"segment\.after_append"):
            crashpoints.hit("segment.after_append")
        crashpoints.hit("segment.after_append")              # disarmed after it fired
    finally:
        crashpoints.disarm_all()


def test_a_hit_count_below_one_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="must be 1 or more"):
        crashpoints.arm("segment.after_append", 0)


def _arm_in_child(spec: str) -> subprocess.CompletedProcess[str]:
    code = ("from galleonfs.engine import crashpoints\n"
            "crashpoints.arm_from_environment()\n"
            "crashpoints.hit('segment.after_append')\n"
            "print('survived')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GALLEONFS_CRASHPOINT": spec})


def test_the_environment_arms_a_registered_point_to_kill_the_process() -> None:
    done = _arm_in_child("segment.after_append:1")
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout


def test_a_misspelt_point_in_the_environment_fails_the_process_with_its_name() -> None:
    done = _arm_in_child("segment.after_apend:1")
    assert done.returncode == 1 and "survived" not in done.stdout
    assert "unknown crash point 'segment.after_apend'" in done.stderr
