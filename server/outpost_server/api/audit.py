"""Admin API: read and verify the audit chain."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import base64

from litestar import Controller, get, post

from ..audit import AuditCorrupt
from ..errors import InvalidInput
from litestar.params import FromQuery

from .app_types import Ctx, JsonObject

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

    @post("/export")
    async def export(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """A signed audit-export bundle; the caller writes it to a medium and reads it back."""
        out = build_audit_export(ctx, data)
        return {
            "name": out.name,
            "data": base64.b64encode(out.data).decode(),
            "sha256": out.sha256,
            "audit_key": out.public_key.hex(),
            "appliance": ctx.bundles.appliance_id,
            "bundle_seq": out.seq,
        }

    @post("/export/written")
    async def export_written(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """The exporting tool reports where it wrote the bundle and whether it read back intact."""
        sha, where, ok = data.get("sha256"), data.get("path"), data.get("verified")
        if not isinstance(sha, str) or not isinstance(where, str) or not isinstance(ok, bool):
            raise InvalidInput("'sha256', 'path' and 'verified' are required")
        ctx.audit(
            "audit.export.written",
            sha256=sha[:64],
            path=where[:255],
            device=str(data.get("device") or "")[:128],
            verified=ok,
        )
        return {"recorded": True}


def build_audit_export(ctx: Ctx, data: dict[str, Any]) -> Any:
    """The signed audit-export bundle for {from, to}; shared with console export requests."""
    from_seq, to_seq = data.get("from"), data.get("to")
    if isinstance(from_seq, bool) or not isinstance(from_seq, int):
        raise InvalidInput("'from' (the first entry to export) must be an integer")
    if to_seq is not None and (isinstance(to_seq, bool) or not isinstance(to_seq, int)):
        raise InvalidInput("'to' must be an integer or null (the newest entry)")
    if ctx.bundles is None:
        raise InvalidInput("exports are not available on this server")
    return ctx.bundles.export_audit(ctx.audit_chain, from_seq, to_seq, ctx.actor)


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
