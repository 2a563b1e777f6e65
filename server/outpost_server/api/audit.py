"""Admin API: read and verify the audit chain."""

from __future__ import annotations

import datetime as dt
import time
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
        "time": _iso(e.time),
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
            result = {"ok": False, "first_bad_seq": exc.seq, "error": str(exc)}
        else:
            result = {
                "ok": True,
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "head": report.head.hex(),
            }
        ctx.audit_verified.clear()
        ctx.audit_verified.update(result, at=_iso(time.time()), last_seq=ctx.audit_chain.last_seq)
        return result


def audit_brief(ctx: Ctx) -> dict[str, Any] | None:
    """For /v1/status: the chain's size and the last explicit verification (never re-run here)."""
    chain = ctx.audit_chain
    if chain is None:
        return None
    cp = chain.last_checkpoint
    v = ctx.audit_verified
    return {
        "entries": chain.last_seq,
        "last_checkpoint_seq": cp.seq if cp is not None else None,
        "verified": None
        if not v
        else {k: v.get(k) for k in ("ok", "at", "last_seq", "first_bad_seq", "error")},
    }


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
