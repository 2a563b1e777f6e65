"""Admin API: read and verify the audit chain."""

from __future__ import annotations

import datetime as dt
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

    @post("/export")
    async def export(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """A signed audit-export bundle; the caller writes it to a medium and reads it back."""
        from_seq, to_seq = data.get("from"), data.get("to")
        if isinstance(from_seq, bool) or not isinstance(from_seq, int):
            raise InvalidInput("'from' (the first entry to export) must be an integer")
        if to_seq is not None and (isinstance(to_seq, bool) or not isinstance(to_seq, int)):
            raise InvalidInput("'to' must be an integer or null (the newest entry)")
        if ctx.bundles is None:
            raise InvalidInput("exports are not available on this server")
        out = ctx.bundles.export_audit(ctx.audit_chain, from_seq, to_seq, ctx.actor)
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
