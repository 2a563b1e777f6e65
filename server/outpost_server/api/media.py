"""Admin API for removable media seen by the root watcher: export requests, first trust.

    GET  /v1/media                           watcher running?, devices, export requests, candidates
    POST /v1/media/poll                      (watcher) devices held now -> export requests to write
    POST /v1/media/exports                   (console) build an export, queue it for a device
    GET  /v1/media/exports/{id}              one request's progress
    POST /v1/media/exports/{id}/result       (watcher) written and read back: verified or failed
    POST /v1/media/candidates                (watcher) first-trust files found on a medium
    POST /v1/media/candidates/{id}/install   (console/wizard) install one, after a confirmation

The state is the in-memory desk (bundles/desk.py); the exports are built by
the same functions as the CLI's endpoints, so they are signed, numbered and
audited the same way. See docs/bundles.md, "Exports from the console".
"""

from __future__ import annotations

import hashlib
from typing import Any

from litestar import Controller, get, post

from ..bundles.desk import (
    MAX_CANDIDATES,
    MAX_KEY_CANDIDATE_BYTES,
    MAX_TRUST_CANDIDATE_BYTES,
    ExportRequest,
    MediaDesk,
    parse_devices,
)
from ..errors import InvalidInput
from .app_types import Ctx, FromPath, JsonObject

EXPORT_KINDS = ("audit-export", "node-inventory", "client-enrolment", "root-certificate")
ROOT_CERT_FILE = "outpost-root.pem"
# The watcher's candidate report: a trust store and a few keys, base64-free text.
MAX_CANDIDATE_BODY_BYTES = MAX_CANDIDATES * (MAX_TRUST_CANDIDATE_BYTES + MAX_KEY_CANDIDATE_BYTES)
# Audit action per export kind for the written report: the CLI's names for the same thing.
WRITTEN_ACTION = {
    "audit-export": "audit.export.written",
    "node-inventory": "bundle.export.written",
    "client-enrolment": "bundle.export.written",
    "root-certificate": "ca.export.written",
}


def _desk(ctx: Ctx) -> MediaDesk:
    if not isinstance(ctx.media, MediaDesk):
        raise InvalidInput("removable media are not available on this server")
    return ctx.media


def _trust_installed(ctx: Ctx) -> bool:
    return ctx.bundles is not None and ctx.bundles.trust() is not None


def _build(ctx: Ctx, kind: str, data: dict[str, Any]) -> tuple[str, bytes, str, str, str]:
    """(file name, bytes, public key hex, appliance, summary) for one export kind."""
    from .audit import build_audit_export  # noqa: PLC0415 - controllers import each other lazily
    from .bundles import build_client_enrolment, build_inventory  # noqa: PLC0415

    appliance = ctx.bundles.appliance_id if ctx.bundles is not None else ""
    if kind == "audit-export":
        out = build_audit_export(ctx, data)
        last = data.get("to") or ctx.audit_chain.last_seq
        summary = f"audit entries {data['from']}..{last}"
    elif kind == "node-inventory":
        out = build_inventory(ctx)
        summary = f"{len(ctx.store.nodes())} nodes"
    elif kind == "client-enrolment":
        out = build_client_enrolment(ctx, data)
        summary = f"enrolment keys for {', '.join(data['clients'])}"[:120]
    else:
        if ctx.root_pem is None:
            raise InvalidInput("this server has no CA root certificate")
        pem = ctx.root_pem()
        ctx.audit("ca.export.root", sha256=hashlib.sha256(pem).hexdigest(), via="console request")
        return ROOT_CERT_FILE, pem, "", appliance, "the Outpost root certificate (public)"
    return out.name, out.data, out.public_key.hex(), appliance, summary


class MediaController(Controller):
    path = "/v1/media"

    @get()
    async def overview(self, ctx: Ctx) -> dict[str, Any]:
        desk = _desk(ctx)
        installed = _trust_installed(ctx)
        return {
            "watcher_running": desk.watcher_running(),
            "devices": [d.view() for d in desk.devices()],
            "exports": [r.view() for r in desk.requests()],
            "trust_installed": installed,
            "candidates": [] if installed else [c.view() for c in desk.candidates()],
        }

    @post("/poll")
    async def poll(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """The watcher's heartbeat: the devices it holds; answers with the exports to write."""
        claimed = _desk(ctx).poll(parse_devices(data.get("devices", [])))
        for r in claimed:
            ctx.audit("media.export.writing", request=r.id, kind=r.kind, device=r.device)
        return {
            "exports": [r.view(with_data=True) for r in claimed],
            "want_candidates": not _trust_installed(ctx),
        }

    @post("/exports")
    async def request_export(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        kind, device = data.get("kind"), data.get("device")
        if kind not in EXPORT_KINDS:
            raise InvalidInput(f"'kind' must be one of {', '.join(EXPORT_KINDS)}")
        if not isinstance(device, str):
            raise InvalidInput("'device' (a medium the USB watcher holds) is required")
        desk = _desk(ctx)
        target = desk.require_device(device)  # before anything is built, numbered or audited
        name, payload, key, appliance, summary = _build(ctx, kind, data)
        r = desk.queue(ExportRequest(
            0, kind, target.device, name, payload, hashlib.sha256(payload).hexdigest(), key,
            appliance, summary, ctx.actor, 0.0,
        ))  # fmt: skip
        ctx.audit("media.export.queued", request=r.id, kind=kind, device=target.device,
                  label=target.label, file=name, sha256=r.sha256)  # fmt: skip
        return r.view()

    @get("/exports/{request_id:int}")
    async def export_state(self, ctx: Ctx, request_id: FromPath[int]) -> dict[str, Any]:
        return _desk(ctx).get(request_id).view()

    @post("/exports/{request_id:int}/result")
    async def export_result(self, ctx: Ctx, request_id: FromPath[int], data: JsonObject) -> dict[str, Any]:
        ok, where, problem = data.get("verified"), data.get("path", ""), data.get("problem", "")
        if not isinstance(ok, bool) or not isinstance(where, str) or not isinstance(problem, str):
            raise InvalidInput("'verified' (true/false), 'path' and 'problem' are required")
        r = _desk(ctx).finish(request_id, verified=ok, path=where, message=problem)
        ctx.audit(WRITTEN_ACTION[r.kind], sha256=r.sha256, path=r.path, device=r.device,
                  verified=ok, request=r.id, kind=r.kind, problem=r.message)  # fmt: skip
        return r.view()

    @post("/candidates", request_max_body_size=MAX_CANDIDATE_BODY_BYTES)
    async def offer_candidates(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """First-trust files the watcher found at the top of a medium; unverified by nature."""
        device, label, files = data.get("device"), data.get("label", ""), data.get("files")
        if not isinstance(device, str) or not isinstance(label, str) or not isinstance(files, list):
            raise InvalidInput("'device', 'label' and 'files' [{name, text}] are required")
        if _trust_installed(ctx):
            return {"accepted": 0, "reason": "a trust store is installed: candidates are ignored"}
        pairs = []
        for i, f in enumerate(files[:MAX_CANDIDATES]):
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not isinstance(f.get("text"), str):
                raise InvalidInput(f"files[{i}] must be an object with name and text")
            pairs.append((f["name"][:255], f["text"]))
        added = _desk(ctx).offer(device[:128], label[:128], pairs)
        ctx.audit("media.trust.candidates", device=device[:128], label=label[:128],
                  files=[c.file for c in added],
                  fingerprints=[",".join(c.fingerprints) or c.problem[:80] for c in added])  # fmt: skip
        return {"accepted": len(added), "candidates": [c.view() for c in added]}

    @post("/candidates/{candidate_id:int}/install")
    async def install_candidate(self, ctx: Ctx, candidate_id: FromPath[int]) -> dict[str, Any]:
        desk = _desk(ctx)
        c = desk.candidate(candidate_id)
        if c.problem:
            raise InvalidInput(f"{c.file} on {c.device} cannot be installed: {c.problem}")
        if _trust_installed(ctx) and c.kind == "trust-store":
            desk.drop_candidates()
            raise InvalidInput("a trust store is installed already; it changes only by signed bundles")
        ctx.audit("media.trust.candidate.install", kind=c.kind, device=c.device, file=c.file,
                  fingerprints=list(c.fingerprints), sha256=c.view()["sha256"])  # fmt: skip
        if c.kind == "trust-store":
            store = ctx.bundles.init_trust(c.text.encode(), ctx.actor)
            desk.drop_candidates()  # first trust is in: every other candidate is moot
            return {"installed": "trust-store", "store": store.to_json()}
        if ctx.backups is None:
            raise InvalidInput("backups are not available on this server")
        result = ctx.backups.add_recipient(ctx.actor, c.detail, f"from {c.label or c.device}:{c.file}")
        desk.forget(c.id)  # installed: offering it again would add it twice
        return {"installed": "recovery-key", "key_id": c.fingerprints[0], "backup": result}
