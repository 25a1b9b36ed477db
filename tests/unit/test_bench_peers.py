"""The peer benchmark's pure helpers: the generated tarball and the "times as good" ratio.

The tarball must be the same bytes on every run and machine (runs and targets are compared
by it) and have the size issue 11 names; the ratio must read the same way for rates and times.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from benchmarks.peer_workloads import make_tarball
from benchmarks.peers import speed_ratio


def test_tarball_is_deterministic_and_sized(tmp_path: Path) -> None:
    first = make_tarball(tmp_path / "a.tar", 200, 600_000)
    second = make_tarball(tmp_path / "b.tar", 200, 600_000)
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
        assert len(files) == 200
        assert sum(m.size for m in files) == 600_000
        assert len({m.size for m in files}) > 150           # mixed sizes, not one size repeated
        assert all(m.name == "src" or m.name.startswith("src/") for m in tar.getmembers())
    assert make_tarball(tmp_path / "c.tar", 200, 600_000, seed=12) != first


def test_speed_ratio_reads_alike_for_rates_and_times() -> None:
    assert speed_ratio(200.0, 100.0, higher=True) == 2.0     # twice the MB/s
    assert speed_ratio(0.5, 1.0, higher=False) == 2.0        # half the seconds
    assert speed_ratio(None, 1.0, higher=True) is None
    assert speed_ratio(1.0, 0.0, higher=True) is None
