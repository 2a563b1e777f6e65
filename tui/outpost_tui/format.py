"""Formatting of API values for the screen (plain functions, tested directly)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def fmt(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v)) or "-"
    return str(v)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=UTC)
    except ValueError:
        return None


def when(text: str | None) -> str:
    t = parse_time(text)
    return t.strftime("%Y-%m-%d %H:%M") if t else "-"


def ago(text: str | None, now: datetime | None = None) -> str:
    t = parse_time(text)
    if t is None:
        return "never"
    secs = int(((now or datetime.now(UTC)) - t).total_seconds())
    future = secs < 0
    secs = abs(secs)
    if secs < 60:
        span = f"{secs}s"
    elif secs < 3600:
        span = f"{secs // 60}m"
    elif secs < 86400:
        span = f"{secs // 3600}h"
    else:
        span = f"{secs // 86400}d"
    return f"in {span}" if future else f"{span} ago"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
