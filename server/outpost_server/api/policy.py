"""Admin API for the policy (with history) and for subnet-route approval."""

from __future__ import annotations

import difflib
from typing import Any

from litestar import Controller, get, post

from ..errors import InvalidInput
from ..state.model import NodeId, PolicyRecord
from .app_types import Ctx, FromPath, JsonObject, iso


def record_view(r: PolicyRecord, current: int | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "author": r.author,
        "comment": r.comment,
        "created": iso(r.created),
        "current": r.id == current,
    }


def _text(data: dict[str, Any]) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise InvalidInput("'text' (the policy file's contents) is required")
    return text


class PolicyController(Controller):
    path = "/v1/policy"

    @get()
    async def current(self, ctx: Ctx) -> dict[str, Any]:
        rec = ctx.store.current_policy()
        if rec is None:
            return {"id": None, "text": None, "note": "no policy set: every node may reach every node"}
        return {**record_view(rec, rec.id), "text": rec.text}

    @post("/check")
    async def check(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        ctx.control.policy.check(_text(data))
        return {"ok": True, "message": "policy is valid and its tests pass"}

    @post()
    async def set_policy(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        text = _text(data)
        verdict = ctx.control.policy.check(text)
        before = ctx.store.current_policy()
        rec = ctx.store.save_policy(text, ctx.actor, str(data.get("comment") or ""))
        ctx.control.policy.apply(verdict)
        ctx.audit("policy.set", version=rec.id, previous=before.id if before else None)
        return record_view(rec, rec.id)

    @get("/history")
    async def history(self, ctx: Ctx) -> list[dict[str, Any]]:
        cur = ctx.store.current_policy()
        return [record_view(r, cur.id if cur else None) for r in ctx.store.policy_history()]

    @get("/{version:int}")
    async def version(self, ctx: Ctx, version: FromPath[int]) -> dict[str, Any]:
        rec = ctx.store.policy(version)
        cur = ctx.store.current_policy()
        return {**record_view(rec, cur.id if cur else None), "text": rec.text}

    @get("/diff/{a:int}/{b:int}")
    async def diff(self, ctx: Ctx, a: FromPath[int], b: FromPath[int]) -> dict[str, Any]:
        ra, rb = ctx.store.policy(a), ctx.store.policy(b)
        lines = difflib.unified_diff(
            ra.text.splitlines(keepends=True),
            rb.text.splitlines(keepends=True),
            fromfile=f"version {a}",
            tofile=f"version {b}",
        )
        return {"diff": "".join(lines)}

    @post("/rollback/{version:int}")
    async def rollback(self, ctx: Ctx, version: FromPath[int]) -> dict[str, Any]:
        old = ctx.store.policy(version)
        verdict = ctx.control.policy.check(old.text)
        rec = ctx.store.save_policy(old.text, ctx.actor, f"rollback to version {version}")
        ctx.control.policy.apply(verdict)
        ctx.audit("policy.rollback", version=rec.id, restored=version)
        return record_view(rec, rec.id)


class RoutesController(Controller):
    path = "/v1/nodes/{node_id:int}/routes"

    @get()
    async def routes(self, ctx: Ctx, node_id: FromPath[int]) -> dict[str, Any]:
        node = ctx.store.node(NodeId(node_id))
        view = ctx.control.policy.view(node.id, fresh=True)
        return {
            "id": node.id,
            "name": node.given_name,
            "advertised": list(node.advertised_routes()),
            "approved": list(node.approved_routes),
            "serving": list(view.self_view.primary_routes) if view else
            sorted(set(node.approved_routes) & set(node.advertised_routes())),
        }

    @post()
    async def approve(self, ctx: Ctx, node_id: FromPath[int], data: JsonObject) -> dict[str, Any]:
        routes = data.get("routes")
        if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
            raise InvalidInput("'routes' must be a list of prefixes")
        node = ctx.store.approve_routes(NodeId(node_id), routes)
        ctx.audit("node.routes.approve", node=node.given_name, routes=list(node.approved_routes))
        return {"id": node.id, "approved": list(node.approved_routes)}
