"""The admin API (Litestar), served on a unix socket with owner-only permissions.

The CLI and the console are its only clients. Handlers are `async` so they run
on the event loop that owns the state store (the single writer); a sync
handler would run in a thread and race it. Read views list the fields they
expose explicitly: a secret is never serialised by accident. Domain errors map
to HTTP statuses in one place (`_domain_error`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from litestar import Controller, Litestar, Request, Response, delete, get, post
from litestar.exceptions import HTTPException, ValidationException

from .. import __version__
from .. import gcstats
from ..errors import DomainError, InvalidInput
from ..state.model import EnrolmentKey, EnrolmentKeyId, Node, NodeId, User, UserId
from ..state.store import utcnow
from .app_types import Ctx, FromPath, JsonObject, iso
from .context import ApiContext
from .audit import AuditController, audit_brief
from .backup import BackupController
from .bundles import BundlesController
from .certs import CertificatesController, certs_brief
from .disk import disk_brief
from .media import MediaController
from .policy import PolicyController, RoutesController
from .site import SiteController, site_brief


_iso = iso


def user_view(u: User) -> dict[str, Any]:
    return {"id": u.id, "name": u.name, "display_name": u.display_name, "created": _iso(u.created)}


def key_view(k: EnrolmentKey, users: dict[UserId, User]) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": k.id,
        "prefix": k.prefix,
        "user": users[k.user_id].name if k.user_id in users else None,
        "reusable": k.reusable,
        "ephemeral": k.ephemeral,
        "tags": list(k.tags),
        "expires": _iso(k.expires),
        "uses": k.uses,
        "state": k.state(now),
        "created": _iso(k.created),
        "description": k.description,
    }


def node_view(ctx: Ctx, n: Node) -> dict[str, Any]:
    users = ctx.store.users()
    now = utcnow()
    return {
        "id": n.id,
        "name": n.given_name,
        "fqdn": ctx.control.renderer.fqdn(n).rstrip("."),
        "hostname": n.hostname,
        "ipv4": str(n.ipv4),
        "ipv6": str(n.ipv6),
        "user": users[n.user_id].name if n.user_id in users else None,
        "tags": list(n.tags),
        "online": ctx.fanout.is_online(n.id),
        "expired": n.is_expired(now),
        "key_expiry": _iso(n.key_expiry),
        "last_seen": _iso(n.last_seen),
        "created": _iso(n.created),
        "ephemeral": n.ephemeral,
        "node_key": n.node_key.text(),
        "machine_key": n.machine_key.text(),
        "client_version": _client_version(n.hostinfo_json),
        "cap_version": n.cap_version,
        "endpoints": list(n.endpoints),
        "home_derp": n.home_derp,
        "advertised_routes": list(n.advertised_routes()),
        "approved_routes": list(n.approved_routes),
    }


def _client_version(hostinfo_json: str) -> str:
    import json

    try:
        v = json.loads(hostinfo_json).get("IPNVersion", "")
    except ValueError:
        return ""
    return v if isinstance(v, str) else ""


def _body_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def _parse_duration(text: str | None) -> timedelta | None:
    """'90s', '30m', '12h', '7d' -> timedelta; None/'' -> None."""
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    num, unit = text[:-1], text[-1:]
    if unit not in units or not num.isdigit() or int(num) <= 0:
        raise InvalidInput(f"invalid duration {text!r}: use e.g. 30m, 12h, 7d")
    return timedelta(seconds=int(num) * units[unit])


def _user_ref(ctx: Ctx, ref: Any) -> UserId | None:
    if ref is None or ref == "":
        return None
    if isinstance(ref, int):
        return ctx.store.user(UserId(ref)).id
    if isinstance(ref, str):
        return ctx.store.user_by_name(ref).id
    raise InvalidInput("user must be a name or an id")


class StatusController(Controller):
    path = "/v1/status"

    @get()
    async def status(self, ctx: Ctx) -> dict[str, Any]:
        nodes = ctx.store.nodes()
        return {
            "version": __version__,
            "server_url": ctx.server_url,
            "nodes_total": len(nodes),
            "nodes_online": sum(1 for n in nodes if ctx.fanout.is_online(n)),
            "pending_registrations": len(ctx.registrar.pending),
            "users": len(ctx.store.users()),
            "relay": ctx.relay_stats(),
            "listener": vars(ctx.listener_counters),
            "backup": ctx.backups.brief() if ctx.backups is not None else None,
            "certs": certs_brief(ctx),
            "audit": audit_brief(ctx),
            "disk": disk_brief(ctx.data_dir),
            "setup_complete": site_brief(ctx),
            "runtime": {"gc": gcstats.stats()},
        }


class UsersController(Controller):
    path = "/v1/users"

    @get()
    async def list_users(self, ctx: Ctx) -> list[dict[str, Any]]:
        return [user_view(u) for u in sorted(ctx.store.users().values(), key=lambda u: u.id)]

    @post()
    async def create_user(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        body = _body_dict(data)
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidInput("'name' is required")
        display = body.get("display_name")
        user = ctx.store.create_user(name, display if isinstance(display, str) else None)
        ctx.audit("user.create", user=user.name)
        return user_view(user)

    @delete("/{name:str}", status_code=200)
    async def delete_user(self, ctx: Ctx, name: FromPath[str]) -> dict[str, Any]:
        user = ctx.store.delete_user(ctx.store.user_by_name(name).id)
        ctx.audit("user.delete", user=user.name)
        return user_view(user)


class KeysController(Controller):
    path = "/v1/enrolment-keys"

    @get()
    async def list_keys(self, ctx: Ctx) -> list[dict[str, Any]]:
        users = ctx.store.users()
        return [key_view(k, users) for k in sorted(ctx.store.enrolment_keys().values(), key=lambda k: k.id)]

    @post()
    async def create_key(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        body = _body_dict(data)
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput("'tags' must be a list of strings")
        ttl = _parse_duration(body.get("expires_in"))
        key, secret = ctx.store.create_enrolment_key(
            user_id=_user_ref(ctx, body.get("user")),
            reusable=bool(body.get("reusable")),
            ephemeral=bool(body.get("ephemeral")),
            tags=tags,
            expires=utcnow() + ttl if ttl else None,
            description=str(body.get("description") or ""),
        )
        ctx.audit("enrolment_key.create", key=key.prefix)
        view = key_view(key, ctx.store.users())
        view["key"] = secret  # shown once; only a hash is stored
        return view

    @delete("/{key_id:int}", status_code=200)
    async def revoke_key(self, ctx: Ctx, key_id: FromPath[int]) -> dict[str, Any]:
        key = ctx.store.revoke_enrolment_key(EnrolmentKeyId(key_id))
        ctx.audit("enrolment_key.revoke", key=key.prefix)
        return key_view(key, ctx.store.users())


class NodesController(Controller):
    path = "/v1/nodes"

    @get()
    async def list_nodes(self, ctx: Ctx) -> list[dict[str, Any]]:
        return [node_view(ctx, n) for _, n in sorted(ctx.store.nodes().items())]

    @get("/{node_id:int}")
    async def get_node(self, ctx: Ctx, node_id: FromPath[int]) -> dict[str, Any]:
        return node_view(ctx, ctx.store.node(NodeId(node_id)))

    @post("/{node_id:int}/tags")
    async def set_tags(self, ctx: Ctx, node_id: FromPath[int], data: JsonObject) -> dict[str, Any]:
        tags = data.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput("'tags' must be a list like [\"tag:server\"] (empty to remove them all)")
        before = ctx.store.node(NodeId(node_id))
        node = ctx.store.set_node_tags(NodeId(node_id), tags)
        ctx.audit("node.tags", node=node.given_name, before=list(before.tags), after=list(node.tags))
        return node_view(ctx, node)

    @delete("/{node_id:int}", status_code=200)
    async def delete_node(self, ctx: Ctx, node_id: FromPath[int]) -> dict[str, Any]:
        node = ctx.store.delete_node(NodeId(node_id))
        ctx.audit("node.delete", node=node.given_name)
        return {"id": node.id, "name": node.given_name, "deleted": True}

    @post("/{node_id:int}/rename")
    async def rename_node(self, ctx: Ctx, node_id: FromPath[int], data: JsonObject) -> dict[str, Any]:
        name = _body_dict(data).get("name")
        if not isinstance(name, str):
            raise InvalidInput("'name' is required")
        old = ctx.store.node(NodeId(node_id)).given_name
        node = ctx.store.rename_node(NodeId(node_id), name)
        ctx.audit("node.rename", node=old, new_name=node.given_name)
        return node_view(ctx, node)

    @post("/{node_id:int}/expire")
    async def expire_node(self, ctx: Ctx, node_id: FromPath[int]) -> dict[str, Any]:
        node = ctx.store.expire_node(NodeId(node_id))
        ctx.audit("node.expire", node=node.given_name)
        return node_view(ctx, node)

    @get("/pending")
    async def pending(self, ctx: Ctx) -> list[dict[str, Any]]:
        return [
            {
                "auth_id": p.auth_id,
                "hostname": p.hostname,
                "machine_key": p.machine_key.text(),
                "node_key": p.node_key.text(),
                "reauth_of": p.old_node_id,
                "requested_tags": list(p.request_tags),
                "created": _iso(p.created),
            }
            for p in ctx.registrar.pending.values()
        ]

    @post("/pending/{auth_id:str}/approve")
    async def approve(self, ctx: Ctx, auth_id: FromPath[str], data: JsonObject) -> dict[str, Any]:
        body = _body_dict(data)
        tags = body.get("tags") or []
        if not isinstance(tags, list):
            raise InvalidInput("'tags' must be a list")
        from ..state.store import parse_tags

        node = ctx.registrar.approve(auth_id, _user_ref(ctx, body.get("user")), parse_tags(tags))
        ctx.audit("node.approve", node=node.given_name, auth_id=auth_id)
        return node_view(ctx, node)

    @post("/pending/{auth_id:str}/reject")
    async def reject(self, ctx: Ctx, auth_id: FromPath[str]) -> dict[str, Any]:
        p = ctx.registrar.reject(auth_id)
        ctx.audit("node.reject", auth_id=auth_id, hostname=p.hostname)
        return {"auth_id": auth_id, "rejected": True}


def _domain_error(_req: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    assert isinstance(exc, DomainError)
    return Response({"error": str(exc)}, status_code=exc.http_status)


def _http_error(_req: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        detail = f"{detail}: {exc.extra}"
    return Response({"error": str(detail)}, status_code=exc.status_code)


ACTOR_HEADER = "x-outpost-actor"
MAX_ACTOR_CHARS = 128


@dataclass
class _Provide:
    """One context per request, carrying who acts.

    The socket is owner-only, so every caller is already the appliance's
    administrator account; the header names the person or tool behind the
    call (cli:<login>, console:<user>) for the audit record.
    """

    ctx: ApiContext

    async def __call__(self, request: Request[Any, Any, Any]) -> ApiContext:
        actor = (request.headers.get(ACTOR_HEADER) or "admin-api")[:MAX_ACTOR_CHARS]
        return replace(self.ctx, actor=actor)


def create_app(ctx: Ctx) -> Litestar:
    return Litestar(
        route_handlers=[
            StatusController,
            UsersController,
            KeysController,
            NodesController,
            PolicyController,
            RoutesController,
            AuditController,
            BackupController,
            BundlesController,
            CertificatesController,
            SiteController,
            MediaController,
        ],
        dependencies={"ctx": _Provide(ctx)},
        exception_handlers={DomainError: _domain_error, HTTPException: _http_error},
        openapi_config=None,
        debug=False,
    )
