"""Admin API for backups: settings, runs with progress, listing, keyless verification, pruning.

Restores are deliberately absent: they need the server stopped and the
recovery key, which never comes near the running appliance (`outpost backup
restore` runs offline against the data directory).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, delete, get, post, put
from litestar.params import FromQuery

from ..errors import InvalidInput
from .app_types import Ctx, FromPath, JsonObject


def _str(data: dict[str, Any], name: str, default: str | None = None) -> str:
    v = data.get(name, default)
    if not isinstance(v, str):
        raise InvalidInput(f"{name!r} must be a string")
    return v


class BackupController(Controller):
    path = "/v1/backup"

    @get()
    async def status(self, ctx: Ctx) -> dict[str, Any]:
        return ctx.backups.status()

    @get("/list")
    async def list_backups(self, ctx: Ctx, target: FromQuery[str] = "local") -> list[dict[str, Any]]:
        return ctx.backups.list(target)

    @post("/run")
    async def run(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        return ctx.backups.start(
            ctx.actor,
            label=_str(data, "label", ""),
            target=_str(data, "target", "local"),
            scheduled=bool(data.get("scheduled", False)),
        )

    @get("/jobs/{job_id:str}")
    async def job(self, ctx: Ctx, job_id: FromPath[str]) -> dict[str, Any]:
        return ctx.backups.job(job_id)

    @post("/verify/{name:str}")
    async def verify(self, ctx: Ctx, name: FromPath[str], target: FromQuery[str] = "local") -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        return await asyncio.to_thread(ctx.backups.verify, name, target)

    @post("/prune")
    async def prune(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        dry = bool(data.get("dry_run", False))
        return {"dry_run": dry, "pruned": await ctx.backups.prune(ctx.actor, dry)}

    @post("/recipients")
    async def add_recipient(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        return ctx.backups.add_recipient(ctx.actor, _str(data, "public"), _str(data, "label", ""))

    @delete("/recipients/{key_id:str}", status_code=200)
    async def remove_recipient(self, ctx: Ctx, key_id: FromPath[str]) -> dict[str, Any]:
        return ctx.backups.remove_recipient(ctx.actor, key_id)

    @put("/passphrase")
    async def set_passphrase(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        import asyncio  # noqa: PLC0415

        kdf = {k: int(data[k]) for k in ("opslimit", "memlimit") if k in data}  # tests use cheap parameters
        return await asyncio.to_thread(ctx.backups.set_passphrase, ctx.actor, _str(data, "passphrase"), **kdf)

    @delete("/passphrase", status_code=200)
    async def clear_passphrase(self, ctx: Ctx) -> dict[str, Any]:
        return ctx.backups.clear_passphrase(ctx.actor)

    @put("/schedule")
    async def schedule(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        return ctx.backups.set_schedule(ctx.actor, data)

    @post("/exported")
    async def exported(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """The CLI copied a backup to removable media: record it (who, what, where, verified)."""
        details = {
            "name": _str(data, "name"),
            "to": _str(data, "to"),
            "sha256": _str(data, "sha256"),
            "verified": bool(data.get("verified")),
        }
        ctx.audit("backup.exported", **details)
        return {"recorded": True, **details}

    @get("/restore")
    async def restore_pending(self, ctx: Ctx) -> dict[str, Any]:
        return {"pending": ctx.backups.pending_restore()}

    @post("/restore")
    async def restore(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """Prepare a restore of a local backup (checked in full), then optionally restart to apply it."""
        import asyncio  # noqa: PLC0415

        key, phrase = data.get("recovery_key"), data.get("passphrase")
        if key is not None and not isinstance(key, str) or phrase is not None and not isinstance(phrase, str):
            raise InvalidInput("'recovery_key' (the key file's text) and 'passphrase' must be strings")
        name = _str(data, "name")
        doc = await asyncio.to_thread(ctx.backups.prepare_restore, ctx.actor, name, key, phrase)
        ctx.audit("backup.restore.prepared", backup=name, backup_id=doc["report"]["backup_id"])
        restart = bool(data.get("restart", False))
        if restart and ctx.request_restart is not None:
            ctx.audit("server.restart", reason=f"complete the restore of {name}")
            ctx.request_restart()
        return {**doc, "restarting": restart and ctx.request_restart is not None}

    @delete("/restore", status_code=200)
    async def restore_cancel(self, ctx: Ctx) -> dict[str, Any]:
        cancelled = ctx.backups.cancel_restore()
        if cancelled:
            ctx.audit("backup.restore.cancelled")
        return {"cancelled": cancelled}
