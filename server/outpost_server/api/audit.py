"""Admin API: read and verify the audit chain."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, get, post

from ..audit import AuditCorrupt
from ..errors import InvalidInput
from litestar.params import FromQuery

from .app_types import Ctx

MAX_AUDIT_PAGE = 1000  # entries per request; the console pages through more


def entry_view(e: Any) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": dt.datetime.fromtimestamp(e.time, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "actor": e.actor,
        "action": e.action,
        "details": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in dict(e.details).items()},
        "hash": e.hash.hex(),
    }


class AuditController(Controller):
    path = "/v1/audit"

    @get()
    async def entries(self, ctx: Ctx, start: FromQuery[int] = 0, limit: FromQuery[int] = 100) -> dict[str, Any]:
        chain = ctx.audit_chain
        if limit < 1 or limit > MAX_AUDIT_PAGE:
            raise InvalidInput(f"limit must be 1..{MAX_AUDIT_PAGE}")
        last = chain.last_seq
        first = start if start > 0 else max(1, last - limit + 1)
        to = min(last, first + limit - 1)
        rows = chain.entries(first, to) if last and first <= to else []
        return {"last_seq": last, "entries": [entry_view(e) for e in rows]}

    @post("/verify")
    async def verify(self, ctx: Ctx) -> dict[str, Any]:
        try:
            report = ctx.audit_chain.verify()
        except AuditCorrupt as exc:
            return {"ok": False, "first_bad_seq": exc.seq, "error": str(exc)}
        return {
            "ok": True,
            "entries": report.entries,
            "checkpoints": report.checkpoints,
            "head": report.head.hex(),
        }
