"""Shared Litestar markers and formatting for the admin API controllers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from .context import ApiContext

# Explicit markers (Litestar >= 2.23): the context is a named dependency, bodies
# are JSON objects, path parameters are declared as such.
Ctx = NamedDependency[ApiContext]
JsonObject = JSONBody[dict[str, Any]]

__all__ = ["Ctx", "FromPath", "JsonObject", "iso"]


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds") + "Z"
