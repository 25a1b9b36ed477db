"""Retention keeps exactly what restic's ``forget`` would, on synthetic calendars."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import groupby

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galleonfs.backup import Policy, Repository, forget
from galleonfs.backup.retention import plan
from galleonfs.errors import InvalidArgument

from .util import Vol, backup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_hand_checked_calendar() -> None:
    # Backups at 02:00 and 14:00 every day from Wed 2026-01-07 back to Thu 2025-12-25.
    times = [datetime(2026, 1, 7, 14, tzinfo=UTC) - timedelta(hours=12 * i) for i in range(28)]
    backups = [(f"b{i:02d}", t) for i, t in enumerate(times)]    # b00 is the newest
    result = plan(backups, Policy(keep_last=3, keep_daily=4, keep_weekly=2, keep_monthly=2))
    # last 3: b00 b01 b02; daily 4: the 14:00 of Jan 7, 6, 5, 4 (b00 b02 b04 b06);
    # weekly 2: newest of ISO week 2 (b00) and of week 1 (Sun Jan 4, b06);
    # monthly 2: newest of January (b00) and of December (Wed Dec 31 14:00, b14).
    assert result.keep == ["b00", "b01", "b02", "b04", "b06", "b14"]
    assert result.reasons["b06"] == ["daily", "weekly"]
    assert result.reasons["b14"] == ["monthly"]
    assert len(result.remove) == 28 - 6


def test_a_policy_that_keeps_nothing_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="must keep something"):
        plan([("b", T0)], Policy())
    with pytest.raises(InvalidArgument, match="keep-daily must be -1"):
        plan([("b", T0)], Policy(keep_daily=-2))


def oracle(backups: list[tuple[str, datetime]], policy: Policy) -> set[str]:
    """The same rules written the other way round: the newest backup of each of the n newest
    buckets, for each rule (n = -1: of every bucket)."""
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    keep = {b for b, _t in newest_first[:policy.keep_last]} if policy.keep_last >= 0 else {b for b, _ in backups}
    rules: dict[str, tuple[int, Callable[[datetime], tuple[int, ...]]]] = {
        "hourly": (policy.keep_hourly, lambda t: (t.year, t.month, t.day, t.hour)),
        "daily": (policy.keep_daily, lambda t: (t.year, t.month, t.day)),
        "weekly": (policy.keep_weekly, lambda t: tuple(t.isocalendar()[:2])),
        "monthly": (policy.keep_monthly, lambda t: (t.year, t.month)),
        "yearly": (policy.keep_yearly, lambda t: (t.year,)),
    }
    for n, bucket in rules.values():
        groups = [list(g) for _k, g in groupby(newest_first, key=lambda b: bucket(b[1]))]
        chosen = groups if n == -1 else groups[:n]
        keep |= {g[0][0] for g in chosen}
    return keep


counts = st.integers(min_value=-1, max_value=6)


@settings(max_examples=300, deadline=None)
@given(offsets_h=st.lists(st.integers(min_value=0, max_value=24 * 800), max_size=120, unique=True),
       last=st.integers(min_value=0, max_value=5), hourly=counts, daily=counts, weekly=counts,
       monthly=counts, yearly=counts)
def test_random_calendars_match_the_oracle(offsets_h: list[int], last: int, hourly: int, daily: int,
                                           weekly: int, monthly: int, yearly: int) -> None:
    policy = Policy(last, hourly, daily, weekly, monthly, yearly)
    if all(n == 0 for _name, n in policy.rules()):
        return
    backups = [(f"b{h:06d}", T0 + timedelta(hours=h, minutes=h % 60)) for h in offsets_h]
    result = plan(backups, policy)
    assert set(result.keep) == oracle(backups, policy)
    assert set(result.keep) | set(result.remove) == {b for b, _t in backups}
    assert not set(result.keep) & set(result.remove)


def test_forget_on_a_repository_deletes_exactly_the_rest(dir_repo: Repository) -> None:
    """Two volumes, a backup every 8 hours for 60 days; policy applied per volume."""
    made: dict[str, list[tuple[str, datetime]]] = {"vol-a": [], "vol-b": []}
    vols = {name: Vol(name=name, vol_id=name) for name in made}
    for name, vol in vols.items():
        vol.set(b"k", b"v", [name.encode() * 100])
    for i in range(180):
        for name, vol in vols.items():
            when = T0 + timedelta(hours=8 * i, minutes=7 if name == "vol-b" else 0)
            info = backup(dir_repo, vol, time=when)
            made[name].append((info.backup_id, when))
    policy = Policy(keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=3)
    dry = forget(dir_repo, policy, dry_run=True)
    assert len(dir_repo.list_backups()) == 360                  # a dry run deletes nothing
    plans = forget(dir_repo, policy)
    for name, backups in made.items():
        expected = oracle(backups, policy)
        assert set(plans[name].keep) == set(dry[name].keep) == expected
        assert {b.backup_id for b in dir_repo.list_backups(name)} == expected
