"""Retention: which backups of one volume a policy keeps (restic's ``forget`` semantics).

Backups are taken newest first. ``keep_last`` keeps the n newest. Each bucket rule
(hourly, daily, weekly, monthly, yearly) with a count n walks the same list and keeps a
backup when its bucket (its hour, day, ISO week, month or year, in UTC) differs from the
bucket of the last backup *that rule* kept, until it has kept n: so "daily 7" keeps the
newest backup of each of the last 7 days that have backups. A backup is kept when any rule
keeps it; the reasons are reported. A count of -1 means "every bucket". A policy that keeps
nothing is refused (it would delete every backup).

``plan`` is pure: no I/O, no clock. ``forget`` applies the plans to a repository: it lists
the backups, plans per volume, and deletes the manifests no plan keeps (their blobs go at
the next GC).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ..errors import InvalidArgument
from .manifests import BackupInfo


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def rules(self) -> list[tuple[str, int]]:
        return [("last", self.keep_last), ("hourly", self.keep_hourly), ("daily", self.keep_daily),
                ("weekly", self.keep_weekly), ("monthly", self.keep_monthly),
                ("yearly", self.keep_yearly)]

    def check(self) -> None:
        for name, n in self.rules():
            if n < -1:
                raise InvalidArgument(f"keep-{name} must be -1 (all), 0 or more, not {n}")
        if all(n == 0 for _name, n in self.rules()):
            raise InvalidArgument("a retention policy must keep something (give at least one keep-* count)")


@dataclass
class Plan:
    keep: list[str] = field(default_factory=list)          # newest first
    remove: list[str] = field(default_factory=list)        # newest first
    reasons: dict[str, list[str]] = field(default_factory=dict)


def _bucket(rule: str) -> Callable[[datetime, int], tuple[int, ...]]:
    if rule == "last":
        return lambda t, i: (i,)                           # every backup its own bucket
    if rule == "hourly":
        return lambda t, i: (t.year, t.month, t.day, t.hour)
    if rule == "daily":
        return lambda t, i: (t.year, t.month, t.day)
    if rule == "weekly":
        return lambda t, i: tuple(t.isocalendar()[:2])
    if rule == "monthly":
        return lambda t, i: (t.year, t.month)
    assert rule == "yearly"
    return lambda t, i: (t.year,)


def plan(backups: Sequence[tuple[str, datetime]], policy: Policy) -> Plan:
    """What ``policy`` keeps of one volume's ``(backup id, time)`` pairs."""
    policy.check()
    ordered = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    rules = [(name, n, _bucket(name)) for name, n in policy.rules() if n != 0]
    left = {name: n for name, n, _ in rules}
    last: dict[str, tuple[int, ...] | None] = {name: None for name, _, _ in rules}
    out = Plan()
    for i, (backup_id, time) in enumerate(ordered):
        t = time.astimezone(UTC)
        reasons = []
        for name, _n, bucket in rules:
            if left[name] == 0:
                continue
            value = bucket(t, i)
            if value != last[name]:
                last[name] = value
                if left[name] > 0:
                    left[name] -= 1
                reasons.append(name)
        if reasons:
            out.keep.append(backup_id)
            out.reasons[backup_id] = reasons
        else:
            out.remove.append(backup_id)
    return out


class Backups(Protocol):
    """What ``forget`` needs of a repository (``repository.Repository`` is one): declared
    here so that retention depends on no I/O module."""

    def list_backups(self, volume_id: str | None = None) -> list[BackupInfo]: ...

    def delete_backups(self, backup_ids: Iterable[str]) -> list[str]: ...


def forget(repo: Backups, policy: Policy, *, volume_id: str | None = None,
           dry_run: bool = False) -> dict[str, Plan]:
    """Apply a retention policy to every volume's backups (or one volume's): returns the
    plan per volume id and, unless ``dry_run``, deletes what the plans do not keep."""
    by_volume: dict[str, list[BackupInfo]] = defaultdict(list)
    for info in repo.list_backups(volume_id):
        by_volume[info.volume_id].append(info)
    plans = {vol: plan([(i.backup_id, i.time) for i in infos], policy)
             for vol, infos in by_volume.items()}
    doomed = [b for p in plans.values() for b in p.remove]
    if doomed and not dry_run:
        repo.delete_backups(doomed)
    return plans
