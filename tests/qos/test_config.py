"""The node's QoS budget settings: read like every other galleond setting, refused when bad."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def galleond(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", *args], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_the_budget_comes_from_the_file_and_the_environment() -> None:
    done = galleond("--config", str(REPO / "deploy" / "galleond.toml"), "--print-config",
                    env={"GALLEONFS_QOS_NODE_IOPS": "2500"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "qos_node_iops = 2500.0  # from environment" in lines
    assert f"qos_node_throughput_mbps = 0.0  # from file {REPO / 'deploy' / 'galleond.toml'}" in lines


@pytest.mark.parametrize(("value", "message"), [
    ("-3", "galleond: error: bad value for GALLEONFS_QOS_NODE_IOPS: '-3' must be a number of at least 0"),
    ("lots", "galleond: error: bad value for GALLEONFS_QOS_NODE_IOPS: 'lots' is not a number"),
])
def test_a_bad_budget_is_one_sentence_and_exit_2(value: str, message: str) -> None:
    done = galleond("--print-config", "--config", "/dev/null", env={"GALLEONFS_QOS_NODE_IOPS": value})
    assert (done.returncode, done.stderr, done.stdout) == (2, message + "\n", "")
