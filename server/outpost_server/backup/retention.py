"""Which backups to keep: grandfather-father-son, as a pure function of the list and `now`.

A backup is kept if it is the newest of its UTC day among the newest
`daily` days that have a backup, the newest of its ISO week among the newest
`weekly` weeks, or the newest of its month among the newest `monthly` months.
The newest backup overall is always kept, and so is anything newer than `now`
(a clock that jumped back must not delete the latest backups).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Retention:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 1000:
                raise ValueError(f"retention {name} must be a whole number from 0 to 1000")
        if self.daily + self.weekly + self.monthly == 0:
            raise ValueError("retention keeps nothing: set at least one of daily, weekly, monthly")


def _day(t: int) -> tuple[int, ...]:
    g = time.gmtime(t)
    return (g.tm_year, g.tm_yday)


def _week(t: int) -> tuple[int, ...]:
    import datetime as dt  # noqa: PLC0415

    iso = dt.datetime.fromtimestamp(t, dt.UTC).isocalendar()
    return (iso.year, iso.week)


def _month(t: int) -> tuple[int, ...]:
    g = time.gmtime(t)
    return (g.tm_year, g.tm_mon)


def _newest_per_bucket(
    created: Sequence[tuple[str, int]], bucket: Callable[[int], tuple[int, ...]], count: int
) -> set[str]:
    keep: set[str] = set()
    seen: set[tuple[int, ...]] = set()
    for name, t in sorted(created, key=lambda x: (x[1], x[0]), reverse=True):
        b = bucket(t)
        if b in seen:
            continue
        if len(seen) >= count:
            break
        seen.add(b)
        keep.add(name)
    return keep


def to_prune(backups: Sequence[tuple[str, int]], policy: Retention, now: int) -> list[str]:
    """Names to delete from (name, created) pairs, oldest first."""
    if not backups:
        return []
    past = [(n, t) for n, t in backups if t <= now]
    keep = {n for n, t in backups if t > now}
    keep.add(max(backups, key=lambda x: (x[1], x[0]))[0])
    keep |= _newest_per_bucket(past, _day, policy.daily)
    keep |= _newest_per_bucket(past, _week, policy.weekly)
    keep |= _newest_per_bucket(past, _month, policy.monthly)
    return [n for n, _ in sorted(backups, key=lambda x: (x[1], x[0])) if n not in keep]
