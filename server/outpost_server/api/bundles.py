"""Admin API for offline bundles: intake into staging, list, show, approve, reject, trust store.

Bundle files reach the server as bytes in the request (base64 in JSON): the
root-run USB watcher and `outpost bundles import` read the medium, the server
never walks removable media itself (docs/bundles.md, "who mounts").
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from litestar import Controller, get, post
from litestar.params import FromQuery

from ..bundles.format import MAX_BUNDLE_BYTES
from ..bundles.intake import MAX_BUNDLES, Rejected
from ..bundles.service import BundleService, ExportedBundle, Medium
from ..bundles.trust import TrustStore
from ..errors import InvalidInput
from ..state.bundles import BundleStatus, StagedBundle
from .app_types import Ctx, FromPath, JsonObject, iso

# One request carries one medium's bundles. Base64 inflates by 4/3; the limit
# admits one bundle of the maximum size plus a handful of ordinary ones.
MAX_INTAKE_BODY_BYTES = (MAX_BUNDLE_BYTES * 4) // 3 + 8 * 1024 * 1024
MAX_MEDIUM_FIELD_CHARS = 128  # labels and serials as udev reports them
# What `outpost system update` reports about a slot it wrote (digests, entry
# name, a refusal's text): short fields, bounded so the audit entry stays small.
INSTALL_TEXT_FIELDS = (
    "slot", "entry", "root_sha256", "kernel_sha256", "initrd_sha256", "medium", "reason",
)  # fmt: skip
INSTALL_INT_FIELDS = ("version", "previous_version")
MAX_INSTALL_FIELD_CHARS = 512


def bundle_view(b: StagedBundle) -> dict[str, Any]:
    return {
        "id": b.id,
        "status": b.status.value,
        "kind": b.kind or None,
        "seq": b.seq,
        "file": b.file_name,
        "medium_label": b.medium_label,
        "medium_serial": b.medium_serial,
        "signers": list(b.signers),
        "created": b.bundle_created,
        "expires": b.bundle_expires,
        "size": b.size,
        "sha256": b.sha256,
        "staged_by": b.staged_by,
        "staged_at": iso(b.staged_at),
        "decided_by": b.decided_by,
        "decided_at": iso(b.decided_at),
        "reason": b.reason,
        "result": b.result,
    }


def _service(ctx: Ctx) -> BundleService:
    svc = ctx.bundles
    if not isinstance(svc, BundleService):
        raise InvalidInput("bundle intake is not available on this server")
    return svc


def _text(body: dict[str, Any], key: str, limit: int = MAX_MEDIUM_FIELD_CHARS) -> str:
    v = body.get(key, "")
    if not isinstance(v, str):
        raise InvalidInput(f"'{key}' must be text")
    return v[:limit]


def _files(body: dict[str, Any]) -> list[tuple[str, bytes]]:
    files = body.get("files")
    if not isinstance(files, list) or len(files) > MAX_BUNDLES:
        raise InvalidInput(f"'files' must be a list of at most {MAX_BUNDLES} bundle files")
    out = []
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise InvalidInput(f"files[{i}] must be an object with name and data (base64)")
        try:
            data = base64.b64decode(str(f.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"files[{i}] ({f['name'][:255]}): data is not base64") from None
        out.append((f["name"][:255], data))
    return out


def _ignored(body: dict[str, Any]) -> list[Rejected]:
    items = body.get("ignored") or []
    if not isinstance(items, list):
        raise InvalidInput("'ignored' must be a list of {name, reason}")
    return [
        Rejected(str(i.get("name", ""))[:255], str(i.get("reason", ""))[:255])
        for i in items[:1000]
        if isinstance(i, dict)
    ]


class BundlesController(Controller):
    path = "/v1/bundles"

    @get()
    async def list_bundles(self, ctx: Ctx, status: FromQuery[str | None] = None) -> list[Any]:
        try:
            wanted = BundleStatus(status) if status else None
        except ValueError:
            raise InvalidInput(
                f"status must be one of {', '.join(s.value for s in BundleStatus)}"
            ) from None
        return [bundle_view(b) for b in _service(ctx).list_bundles(wanted)]

    @get("/{bundle_id:int}")
    async def show(self, ctx: Ctx, bundle_id: FromPath[int]) -> dict[str, Any]:
        svc = _service(ctx)
        return {**bundle_view(svc.get(bundle_id)), "preview": svc.preview(bundle_id)}

    @post("/intake", request_max_body_size=MAX_INTAKE_BODY_BYTES)
    async def intake(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        medium = Medium(
            label=_text(data, "label"), serial=_text(data, "serial"), device=_text(data, "device")
        )
        out = _service(ctx).intake_files(_files(data), medium, ctx.actor, _ignored(data))
        return {
            "staged": [bundle_view(b) for b in out.staged],
            "rejected": [bundle_view(b) for b in out.rejected],
            "ignored": [{"name": r.name, "reason": r.reason} for r in out.ignored],
        }

    @post("/{bundle_id:int}/approve")
    async def approve(self, ctx: Ctx, bundle_id: FromPath[int]) -> dict[str, Any]:
        applied = _service(ctx).approve(bundle_id, ctx.actor)
        if applied.bundle.status is BundleStatus.APPROVED:  # system-update: nothing applied here
            return {**bundle_view(applied.bundle), "approved_for_install": applied.bundle.result}
        return {
            **bundle_view(applied.bundle),
            "applied": {
                "policy_version": applied.policy.id if applied.policy else None,
                "enrolment_keys": [k.prefix for k in applied.keys],
                "trust_version": applied.trust.id if applied.trust else None,
                "intermediate": applied.bundle.result.get("intermediate"),
            },
        }

    @post("/{bundle_id:int}/install")
    async def install_report(
        self, ctx: Ctx, bundle_id: FromPath[int], data: JsonObject
    ) -> dict[str, Any]:
        """The root-run `outpost system update` reports a phase of writing an approved update.

        The server records and audits; it never writes a slot (it runs
        unprivileged under ProtectSystem=strict and cannot).
        """
        phase = data.get("phase")
        if not isinstance(phase, str):
            raise InvalidInput("'phase' (started, installed or failed) is required")
        details: dict[str, Any] = {}
        for key in INSTALL_TEXT_FIELDS:
            if key in data:
                details[key] = _text(data, key, MAX_INSTALL_FIELD_CHARS)
        for key in INSTALL_INT_FIELDS:
            if key in data:
                v = data[key]
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**53:
                    raise InvalidInput(f"'{key}' must be a non-negative integer")
                details[key] = v
        b = _service(ctx).record_install(bundle_id, ctx.actor, phase, details)
        return bundle_view(b)

    @post("/{bundle_id:int}/reject")
    async def reject(self, ctx: Ctx, bundle_id: FromPath[int], data: JsonObject) -> dict[str, Any]:
        reason = data.get("reason")
        if not isinstance(reason, str):
            raise InvalidInput("'reason' is required to reject a bundle")
        return bundle_view(_service(ctx).reject(bundle_id, ctx.actor, reason))

    @get("/trust")
    async def trust(self, ctx: Ctx) -> dict[str, Any]:
        svc = _service(ctx)
        history = svc.ledger.trust_history()
        current: TrustStore | None = svc.trust()
        return {
            "appliance": svc.appliance_id,
            "installed": current is not None,
            "store": current.to_json() if current else None,
            "last_seq": svc.ledger.last_seqs(),
            "history": [
                {"version": t.id, "source": t.source, "actor": t.actor, "created": iso(t.created)}
                for t in history
            ],
        }

    @post("/trust/init")
    async def trust_init(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        doc = data.get("document")
        if not isinstance(doc, str):
            raise InvalidInput("'document' (the trust-store.json text) is required")
        store = _service(ctx).init_trust(doc.encode(), ctx.actor)
        return {"installed": True, "store": store.to_json()}

    # ------------------------------------------------------------------ outbound exports
    @post("/export/inventory")
    async def export_inventory(self, ctx: Ctx) -> dict[str, Any]:
        """Every node with its addresses, owner, tags, client version and routes, signed."""
        return _export_view(_service(ctx), build_inventory(ctx))

    @post("/export/client-enrolment")
    async def export_client_enrolment(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        """One fresh enrolment key per named client, with the login URL and the Outpost root."""
        return _export_view(_service(ctx), build_client_enrolment(ctx, data))


# ---------------------------------------------------------------- outbound builders
# Shared by the CLI's endpoints above and the console's export requests (api/media.py).
def build_inventory(ctx: Ctx) -> ExportedBundle:
    from .app import node_view  # noqa: PLC0415 - app.py imports this module

    svc = _service(ctx)
    nodes = [node_view(ctx, n) for _, n in sorted(ctx.store.nodes().items())]
    doc = {"appliance": svc.appliance_id, "server_url": ctx.server_url, "nodes": nodes}
    payload = json.dumps(doc, indent=1, sort_keys=True).encode()
    return svc.export_outbound(
        "node-inventory", "nodes.json", payload, f"inventory-{svc.appliance_id}-{svc.clock()}.opb",
        ctx.actor, {"nodes": len(nodes)},
    )  # fmt: skip


def build_client_enrolment(ctx: Ctx, data: dict[str, Any]) -> ExportedBundle:
    """The package carries usable secrets: keys are single-use and short-lived by default."""
    from datetime import timedelta  # noqa: PLC0415

    from ..state.store import utcnow  # noqa: PLC0415
    from .app import _parse_duration, _user_ref  # noqa: PLC0415

    svc = _service(ctx)
    clients = data.get("clients")
    if (
        not isinstance(clients, list) or not clients or len(clients) > MAX_ENROLMENT_CLIENTS
        or not all(isinstance(c, str) and 0 < len(c) <= 63 for c in clients) or len(set(clients)) != len(clients)
    ):  # fmt: skip
        raise InvalidInput(f"'clients' must list 1 to {MAX_ENROLMENT_CLIENTS} distinct client names (≤ 63 chars)")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("'tags' must be a list of strings")
    ttl = _parse_duration(data.get("expires_in") or "7d") or timedelta(days=7)
    user_id = _user_ref(ctx, data.get("user"))
    if ctx.root_pem is None:
        raise InvalidInput("this server has no CA root to put in the package")
    root = ctx.root_pem().decode()
    entries = []
    for name in clients:
        key, secret = ctx.store.create_enrolment_key(
            user_id=user_id, reusable=False, ephemeral=False, tags=tags,
            expires=utcnow() + ttl, description=f"client-enrolment package: {name}",
        )  # fmt: skip
        ctx.audit("enrolment_key.create", key=key.prefix, client=name, via="client-enrolment")
        entries.append({"client": name, "authkey": secret, "key_prefix": key.prefix,
                        "expires": iso(key.expires), "tags": list(tags)})  # fmt: skip
    doc = {
        "appliance": svc.appliance_id,
        "login_server": ctx.server_url,
        "ca_root_pem": root,
        "clients": entries,
        "how": "tailscale up --login-server=<login_server> --authkey=<authkey>; "
        "trust ca_root_pem (system store or SSL_CERT_FILE)",
    }
    payload = json.dumps(doc, indent=1, sort_keys=True).encode()
    return svc.export_outbound(
        "client-enrolment", "client-enrolment.json", payload,
        f"enrolment-{svc.appliance_id}-{svc.clock()}.opb", ctx.actor,
        {"clients": clients, "keys": [e["key_prefix"] for e in entries]},
    )  # fmt: skip


MAX_ENROLMENT_CLIENTS = 256  # one package per batch of devices being set up


def _export_view(svc: BundleService, out: ExportedBundle) -> dict[str, Any]:
    return {
        "name": out.name,
        "data": base64.b64encode(out.data).decode(),
        "sha256": out.sha256,
        "appliance_key": out.public_key.hex(),
        "appliance": svc.appliance_id,
        "bundle_seq": out.seq,
    }
