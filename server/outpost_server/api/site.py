"""Admin API for the site settings (`DATA_DIR/site.json`) and the end of first-boot setup.

    GET  /v1/site           saved and running values, what a restart would change,
                            the names the TLS certificate should carry, setup state
    PUT  /v1/site           {site_name?, server_url?, addresses?}: validated, checked
                            against the CA's name constraints, saved, audited
    POST /v1/site/complete  marks first-boot setup as done (audited)

See `outpost_server/site.py` for what takes effect at once and what at restart.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post, put

from ..errors import DomainError
from ..site import SiteService
from ..state.store import utcnow
from .app_types import Ctx, JsonObject, iso


class SiteUnavailable(DomainError):
    http_status = 503


def _site(ctx: Ctx) -> SiteService:
    if not isinstance(ctx.site, SiteService):
        raise SiteUnavailable("this server has no site settings service")
    return ctx.site


class SiteController(Controller):
    path = "/v1/site"

    @get()
    async def get_site(self, ctx: Ctx) -> dict[str, Any]:
        return _site(ctx).view()

    @put()
    async def put_site(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        view, changes = _site(ctx).update(data, ctx.actor, str(iso(utcnow())))
        ctx.audit(
            "site.update",
            changes=changes,
            restart_required=[r["field"] for r in view["restart_required"]],
        )
        return view

    @post("/complete")
    async def complete(self, ctx: Ctx) -> dict[str, Any]:
        view = _site(ctx).complete(ctx.actor, str(iso(utcnow())))
        ctx.audit(
            "site.setup.complete",
            site_name=view["site_name"],
            server_url=view["server_url"],
            addresses=view["addresses"],
        )
        return view


def site_brief(ctx: Ctx) -> bool | None:
    """For /v1/status: whether first-boot setup is done (None: no site service)."""
    return ctx.site.setup_complete() if isinstance(ctx.site, SiteService) else None
