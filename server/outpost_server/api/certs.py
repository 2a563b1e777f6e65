"""Admin API for the server's certificates: status, renew the leaf now, revoke.

What is deliberately absent, and why:

* Anything needing the root key (signing a new issuing CA, removing the root
  key from the box): that needs the root passphrase and removable media, and
  stays with `outpost ca ...` on the box, where getpass reads the passphrase.
  What *is* here is the request for a new issuing CA: the server makes and
  keeps the key and returns a PKCS#10 request for the offline station to
  sign; the certificate comes back in a `ca-material` bundle (docs/ca.md).
* Writing the root certificate to USB media: that belongs with the USB
  bundles feature. The root certificate is public, so it is shown here (PEM
  and SHA-256) for the admin to compare or copy.

Revocation signs the CRL with the issuing CA's key, which lives on the box, so
it needs no passphrase and is offered here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from litestar import Controller, get, post

from ..ca import REVOCATION_REASONS
from ..ca.authority import CAEvent, CAStatus
from ..ca.certs import CertInfo
from ..ca.service import ServerCertificates, iso_utc
from ..errors import DomainError, InvalidInput
from .app_types import Ctx, JsonObject

MAX_SERIAL_CHARS = 64  # a 159-bit serial is 40 hex digits; room for colons and 0x


class CertificatesUnavailable(DomainError):
    http_status = 503


def _certs(ctx: Ctx) -> ServerCertificates:
    if ctx.certs is None:
        raise CertificatesUnavailable("this server has no certificate service")
    certs: ServerCertificates = ctx.certs
    return certs


def cert_view(c: CertInfo) -> dict[str, Any]:
    return {
        "subject": c.subject,
        "serial": c.serial,
        "not_before": iso_utc(c.not_before),
        "not_after": iso_utc(c.not_after),
        "days_left": c.days_left,
        "sha256": c.sha256,
    }


def status_view(st: CAStatus, issued: list[dict[str, Any]], root_pem: str) -> dict[str, Any]:
    last = st.exports[-1] if st.exports else None
    return {
        "site": st.site,
        "root": {**cert_view(st.root), "pem": root_pem},
        "intermediate": cert_view(st.intermediate),
        "leaf": None
        if st.leaf is None
        else {
            **cert_view(st.leaf),
            "names": list(st.leaf_names),
            "generation": st.leaf_generation,
            "renew_due_at": iso_utc(st.renew_due_at),
        },
        "root_key": {
            "on_box": st.root_key_present,
            "encrypted": st.root_key_encrypted,
            "state": st.root_key_state,
            "last_export": None
            if last is None
            else {"path": last.path, "at": iso_utc(last.at), "with_key": last.with_key},
        },
        "crl": {"number": st.crl_number, "next_update": iso_utc(st.crl_next_update)},
        "name_constraints": st.name_constraints,
        "issued_count": st.issued_count,
        "revoked_count": st.revoked_count,
        "issued": [
            {
                "serial": i["serial"],
                "kind": i["kind"],
                "subject": i["subject"],
                "names": list(i["names"]),
                "not_after": iso_utc(dt.datetime.fromisoformat(i["not_after"])),
                "issued_at": iso_utc(dt.datetime.fromisoformat(i["issued_at"])),
                "revoked": bool(i["revoked"]),
                "current": i["serial"] == (st.leaf.serial if st.leaf else None),
            }
            for i in issued
        ],
        "revocation_reasons": list(REVOCATION_REASONS),
        "warnings": list(st.warnings),
        "pending_intermediate": None
        if not st.pending_intermediate
        else {
            "key_sha256": st.pending_intermediate["key_sha256"],
            "created": iso_utc(dt.datetime.fromisoformat(st.pending_intermediate["created"])),
            "actor": st.pending_intermediate["actor"],
        },
    }


def _event_view(e: CAEvent) -> dict[str, Any]:
    return {"action": e.action, "subject": e.subject, "serial": e.serial, "detail": e.detail}


def _audit_events(ctx: Ctx, events: list[CAEvent]) -> None:
    for e in events:
        ctx.audit(e.action, subject=e.subject, serial=e.serial, detail=e.detail)


class CertificatesController(Controller):
    path = "/v1/certs"

    @get()
    async def status(self, ctx: Ctx) -> dict[str, Any]:
        certs = _certs(ctx)
        return status_view(certs.status(), certs.issued(), certs.root_pem())

    @post("/renew")
    async def renew(self, ctx: Ctx) -> dict[str, Any]:
        events, reloaded = await _certs(ctx).renew(ctx.actor)
        _audit_events(ctx, events)
        leaf = _certs(ctx).files
        return {
            "serial": leaf.serial,
            "not_after": iso_utc(leaf.not_after),
            "generation": leaf.generation,
            "reloaded": reloaded,
            "events": [_event_view(e) for e in events],
        }

    @post("/intermediate-request")
    async def request_intermediate(self, ctx: Ctx) -> dict[str, Any]:
        """New pending issuing-CA key on the box; returns the request (PEM) to sign offline."""
        certs = _certs(ctx)
        csr_pem, events = await certs.request_intermediate(ctx.actor)
        _audit_events(ctx, events)
        st = certs.status()
        pending = st.pending_intermediate or {}
        return {
            "csr_pem": csr_pem.decode(),
            "file": f"outpost-intermediate-request-{_file_safe(st.site)}.csr.pem",
            "key_sha256": pending.get("key_sha256"),
            "root_sha256": st.root.sha256,
            "events": [_event_view(e) for e in events],
        }

    @post("/revoke")
    async def revoke(self, ctx: Ctx, data: JsonObject) -> dict[str, Any]:
        serial, reason = data.get("serial"), data.get("reason", "unspecified")
        if not isinstance(serial, str) or not serial.strip() or len(serial) > MAX_SERIAL_CHARS:
            raise InvalidInput("'serial' (hex, as the certificate list shows it) is required")
        if not isinstance(reason, str):
            raise InvalidInput("'reason' must be a string")
        events, reloaded = await _certs(ctx).revoke(serial, reason, ctx.actor)
        _audit_events(ctx, events)
        return {
            "revoked": serial,
            "reason": reason,
            "server_leaf_replaced": reloaded,
            "events": [_event_view(e) for e in events],
        }


def _file_safe(text: str) -> str:
    """A site name as part of a file name on FAT media (no spaces, slashes or colons)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "site"


def certs_brief(ctx: Ctx) -> dict[str, Any] | None:
    """For /v1/status. A CA that cannot be read is reported, never a failed status call
    (the console would take that for a server that is down)."""
    if ctx.certs is None:
        return None
    try:
        return dict(ctx.certs.brief())
    except Exception as exc:  # any CA failure is the thing to show
        return {"error": str(exc) or type(exc).__name__}
