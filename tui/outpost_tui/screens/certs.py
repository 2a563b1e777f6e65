"""Certificates: the root, the issuing CA and the server's TLS certificate; renew, revoke."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from ..client import ApiError
from ..format import parse_time, when
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .export_media import ExportToMediaScreen
from .revoke_form import RevokeReasonScreen
from .text_view import TextViewScreen

LEAF_ATTENTION_DAYS = 14  # the server renews at 30 days left: below 14 renewal is failing
EXPORT_HINT = (
    "u writes the root certificate (outpost-root.pem) to a USB stick through the USB "
    "watcher, read back and checked; `outpost ca export-root DIR` does it on the box."
)


def days_text(days: int | None, attention_below: int) -> Text:
    """'396 days left' in green, yellow below the threshold, red when expired."""
    if days is None:
        return Text("-")
    if days < 0:
        return Text("EXPIRED", style="bold bright_red")
    style = "bold bright_yellow" if days < attention_below else "bold bright_green"
    return Text(f"{days} day{'s' if days != 1 else ''} left", style=style)


def cert_state(c: dict[str, Any]) -> Text:
    if c.get("revoked"):
        return Text("revoked", style="red")
    end = parse_time(c.get("not_after"))
    if end is not None and end <= datetime.now(UTC):
        return Text("expired", style="yellow")
    if c.get("current"):
        return Text("served now", style="bold green")
    return Text("valid")


def short(serial: str, chars: int = 12) -> str:
    return serial if len(serial) <= chars else serial[:chars] + "..."


def summary(st: dict[str, Any]) -> Text:
    """The three certificates with days left coloured, then root key, CRL and warnings."""
    t = Text()
    leaf = st.get("leaf")
    rows = (
        ("Server certificate", leaf, LEAF_ATTENTION_DAYS),
        ("Issuing CA", st.get("intermediate"), 180),
        ("Root CA", st.get("root"), 730),
    )
    for title, c, attention_below in rows:
        t.append(f"{title:<19}", style="bold bright_white")
        if c is None:
            t.append("none\n", style="bold bright_red")
            continue
        days = days_text(c.get("days_left"), attention_below)
        days.pad_right(max(0, 16 - len(days)))
        t.append_text(days)
        t.append(f"until {when(c.get('not_after'))[:10]}   serial {short(str(c['serial']))}\n")
    if leaf:
        t.append(f"  served now: generation {leaf.get('generation')}, ")
        t.append(f"names {', '.join(leaf.get('names') or []) or '-'}; ")
        t.append(f"renews by itself from {when(leaf.get('renew_due_at'))[:10]}\n")
    root = st.get("root") or {}
    t.append(f"  root SHA-256 {str(root.get('sha256', '-'))[:23]}... (p shows all of it)\n")
    rk = st.get("root_key") or {}
    t.append("Root key: ", style="bold")
    t.append(str(rk.get("state", "-")))
    last = rk.get("last_export")
    t.append(
        f"; last export {when(last['at'])} to {last['path']}\n" if last else "; never exported\n"
    )
    crl = st.get("crl") or {}
    t.append("CRL: ", style="bold")
    t.append(f"#{crl.get('number')}, next update {when(crl.get('next_update'))[:10]}; ")
    t.append(f"{st.get('issued_count')} issued, {st.get('revoked_count')} revoked\n")
    for w in st.get("warnings") or []:
        t.append(f"! {w}\n", style="bright_yellow")
    t.rstrip()
    return t


class CertsScreen(OutpostScreen):
    NAV = "certificates"
    TITLE_TEXT = "Certificates"
    HELP = f"""
The appliance's own certificate authority. Clients trust its root certificate;
the issuing CA on the box signs the server's TLS certificate (for DERP and
HTTPS) and the revocation list (CRL). Days left turn yellow when little time
remains and red when expired.

The server renews its certificate by itself well before it expires. n renews
it now (for instance after a suspected key leak): new connections get the new
one at once, existing ones keep theirs.

x revokes the certificate selected in the list (you give the reason, then
confirm); revoking the server's own certificate replaces it at once. p shows
the root certificate (PEM) and its SHA-256 fingerprint, to compare with what
a client has installed.

Work that needs the root key and its passphrase (a new issuing CA, removing
the root key from the box) is done with `outpost ca` on the box, not here.
{EXPORT_HINT}
"""

    BINDINGS = [
        Binding("n", "renew", "Renew now"),
        Binding("x", "revoke", "Revoke"),
        Binding("p", "root_pem", "Root cert"),
        Binding("u", "export_root", "Root to USB"),
    ]

    DEFAULT_CSS = """
    CertsScreen #certs-top {
        height: auto;
        max-height: 60%;
    }
    CertsScreen #certs-summary {
        height: auto;
        padding: 0 1;
    }
    CertsScreen #issued-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: ansi_bright_white;
    }
    CertsScreen #issued {
        height: 1fr;
        min-height: 4;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] = {}
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="certs-top"):
            yield Static("loading...", id="certs-summary", markup=False)
        yield Static("Issued certificates", id="issued-title")
        yield DataTable(id="issued", cursor_type="row")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#issued", DataTable)
        for key, label in (
            ("serial", "Serial"), ("kind", "Kind"), ("state", "State"),
            ("until", "Valid until"), ("names", "Names"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        table.focus()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="certs-load")
    async def load(self) -> None:
        try:
            st = await self.console_app.client.certs()
        except ApiError as exc:
            self.report(exc, "load the certificate status")
            return
        self.state = st
        self.query_one("#certs-summary", Static).update(summary(st))
        issued = self.issued()
        table = self.query_one("#issued", DataTable)
        row = table.cursor_row
        table.clear()
        for c in issued:
            table.add_row(
                short(c["serial"]), c["kind"], cert_state(c), when(c.get("not_after"))[:10],
                ", ".join(c.get("names") or []) or "-", key=c["serial"],
            )  # fmt: skip
        if issued:
            table.move_cursor(row=min(max(row, 0), len(issued) - 1), animate=False)
        self.query_one("#issued-title", Static).update(
            f"Issued certificates ({len(issued)}, newest first): x revokes the selected one"
        )
        self.loaded.set()

    def issued(self) -> list[dict[str, Any]]:
        return list(reversed(self.state.get("issued") or []))

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#issued", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((c for c in self.issued() if c["serial"] == key), None)

    # ------------------------------------------------------------ renew
    def action_renew(self) -> None:
        leaf = self.state.get("leaf")
        if not leaf:
            self.notify("The certificate status has not loaded yet.", severity="warning")
            return
        question = (
            f"Replace the server certificate {leaf['serial']} "
            f"({', '.join(leaf.get('names') or [])}, {leaf.get('days_left')} days left) "
            "with a new one now? New connections get the new certificate at once."
        )
        self.app.push_screen(
            ConfirmScreen("Renew the server certificate", question, "Renew now"),
            lambda ok: self.renew() if ok else None,
        )

    @work(group="certs-change")
    async def renew(self) -> None:
        try:
            r = await self.console_app.client.renew_leaf()
        except ApiError as exc:
            self.report(exc, "renew the server certificate")
            return
        self.notify(
            f"New server certificate {r['serial']}, valid until {when(r.get('not_after'))} UTC"
            + ("; the TLS listener loaded it." if r.get("reloaded") else "."),
            title="Certificate renewed",
        )
        self.reload()

    # ----------------------------------------------------------- revoke
    def action_revoke(self) -> None:
        c = self.selected()
        if c is None:
            self.notify("Select a certificate in the list first.", severity="warning")
            return
        if c.get("kind") == "intermediate":
            self.notify(
                "That is the issuing CA itself: replacing it needs the root key "
                "(outpost ca renew --intermediate on the box).",
                severity="warning",
            )
            return
        if c.get("revoked"):
            self.notify(f"Certificate {c['serial']} is already revoked.", severity="warning")
            return
        reasons = list(self.state.get("revocation_reasons") or ["unspecified"])

        def reason_given(req: dict[str, Any] | None) -> None:
            if not req:
                return
            names = ", ".join(c.get("names") or []) or "-"
            question = (
                f"Revoke the {c.get('kind')} certificate {c['serial']} ({names}) "
                f"with reason {req['reason']}? It is listed on the CRL for good."
            )
            if c.get("current"):
                question += " It is the server's own certificate: a new one replaces it at once."
            self.app.push_screen(
                ConfirmScreen("Revoke certificate", question, f"Revoke {c['serial'][:12]}"),
                lambda ok: self.revoke(c["serial"], req["reason"]) if ok else None,
            )

        self.app.push_screen(RevokeReasonScreen(c, reasons), reason_given)

    @work(group="certs-change")
    async def revoke(self, serial: str, reason: str) -> None:
        try:
            r = await self.console_app.client.revoke_cert(serial, reason)
        except ApiError as exc:
            self.report(exc, f"revoke certificate {serial}")
            return
        extra = " The server now serves a new certificate." if r.get("server_leaf_replaced") else ""
        self.notify(f"Revoked certificate {serial} ({reason}).{extra}", title="Certificate revoked")
        self.reload()

    # --------------------------------------------------------- root cert
    def action_root_pem(self) -> None:
        root = self.state.get("root")
        if not root:
            self.notify("The certificate status has not loaded yet.", severity="warning")
            return
        body = Text()
        body.append(f"{root['subject']}\n")
        body.append(f"valid {when(root['not_before'])} to {when(root['not_after'])} UTC\n")
        fp = str(root["sha256"])
        half = len(fp) // 2 + 1  # two lines of 16 bytes: an 80-column console fits them
        body.append(f"SHA-256 {fp[:half - 1]}\n        {fp[half:]}\n\n", style="bold")
        body.append(str(root.get("pem", "")))
        self.app.push_screen(TextViewScreen("Root certificate (public)", body, EXPORT_HINT))

    def action_export_root(self) -> None:
        self.app.push_screen(
            ExportToMediaScreen(
                "Root certificate to USB",
                "root-certificate",
                "the Outpost root certificate (outpost-root.pem, public)",
                note="The root certificate is public: clients install it to trust this "
                "appliance's relay and HTTPS. The root key never leaves the box this way.",
            )
        )
