"""USB bundles: what intake staged, rejected or applied; approve or reject with confirmation."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Label, Static

from ..client import ApiError
from ..format import fmt, when
from ..widgets.safe import SafeInput
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .export_media import ExportField, ExportToMediaScreen
from .form import FormDialog, InvalidForm
from .key_form import DURATION_RE

STATUS_STYLE = {
    "staged": "bold ansi_yellow",
    "applied": "bold ansi_green",
    "rejected": "ansi_red",
    "expired": "ansi_white",
}


def details(b: dict[str, Any]) -> str:
    """The selected bundle in words, with what approving it would change."""
    lines = [
        f"Bundle {b['id']} ({b['status']}): {fmt(b.get('kind'))} sequence {fmt(b.get('seq'))}, "
        f"file {b['file']} from {fmt(b.get('medium_label'))}",
        f"Signed by {fmt(b.get('signers'))}; sha256 {str(b.get('sha256', ''))[:16]}...",
    ]
    if b.get("reason"):
        lines.append(f"Reason: {b['reason']}")
    if b.get("decided_by"):
        lines.append(f"Decided by {b['decided_by']} at {when(b.get('decided_at'))}")
    p = b.get("preview") or {}
    for k in p.get("keys", []):
        owner = k.get("user") or ",".join(k.get("tags") or [])
        lines.append(f"New enrolment key {k['prefix']} for {owner}")
    if "trust" in p:
        lines.append(f"New signers: {', '.join(p['trust']['signers'])}")
        lines.append(
            f"Thresholds: {p['trust']['thresholds']}; retired: {fmt(p['trust']['retired'])}"
        )
    if "policy_diff" in p:
        diff = p["policy_diff"].splitlines()
        lines += ["Policy change:", *diff[:12], *(["..."] if len(diff) > 12 else [])]
    if "ca_material" in p:
        m = p["ca_material"]
        lines.append(f"New issuing CA: {m['subject']}, serial {m['serial']}")
        lines.append(f"Valid {m['not_before']} to {m['not_after']}")
        if "key_source" in m:
            lines.append(f"Key: {m['key_source']}; replaces issuing CA {m['replaces']}")
    if "problem" in p:
        lines.append(f"Approval will be refused: {p['problem']}")
    return "\n".join(lines)


class RejectScreen(FormDialog):
    HELP = (
        "Reject the staged bundle: it is never applied. The reason goes into the "
        "audit log. Enter rejects, Escape cancels."
    )

    def __init__(self, bundle: dict[str, Any]) -> None:
        super().__init__()
        self.bundle = bundle

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = f"Reject bundle {self.bundle['id']}"
            yield Static(
                f"{fmt(self.bundle.get('kind'))} sequence {fmt(self.bundle.get('seq'))} "
                f"from {self.bundle['file']}",
                markup=False,
            )
            yield Label("Reason (kept in the audit log)")
            yield SafeInput(id="reason")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Reject", id="ok", variant="error")

    def on_mount(self) -> None:
        self.query_one("#reason", SafeInput).focus()

    def validate_form(self) -> dict[str, Any]:
        reason = self.query_one("#reason", SafeInput).value.strip()
        if not reason:
            raise InvalidForm("Give a reason.")
        return {"reason": reason}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        client = self.app.client  # type: ignore[attr-defined]
        return dict(await client.reject_bundle(int(self.bundle["id"]), request["reason"]))


class BundlesScreen(OutpostScreen):
    NAV = "bundles"
    TITLE_TEXT = "USB bundles"
    HELP = """
Signed bundles arrive on USB sticks. The USB watcher verifies each one
(signatures by trusted keys, addressed to this appliance, not expired, not
replayed, digests) and stages those that pass; nothing is applied until an
administrator approves it here or with `outpost bundles approve`.

a approves the selected staged bundle after asking: it is verified again and
applied all at once (keys, policy or trust store), or not at all. x rejects it
with a reason. Rejected files show the check that failed.

Outbound, signed with the appliance key and written to a USB stick by the USB
watcher (read back and verified): i the node inventory (every node with its
addresses, owner, tags, version, routes); e a client enrolment package (the
login URL, the Outpost root certificate and one fresh single-use key per named
client: it carries usable secrets, keep the stick with the devices).
"""

    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("x", "reject", "Reject"),
        Binding("i", "export_inventory", "Inventory to USB"),
        Binding("e", "export_enrolment", "Enrolment to USB"),
    ]

    DEFAULT_CSS = """
    BundlesScreen #bundles-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: ansi_bright_white;
    }
    BundlesScreen #bundles {
        height: 1fr;
    }
    BundlesScreen #bundle-details {
        height: auto;
        max-height: 14;
        padding: 0 1;
        border-top: ascii ansi_white;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.bundles: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        yield Static("USB bundles", id="bundles-title")
        yield DataTable(id="bundles", cursor_type="row")
        yield Static("", id="bundle-details", markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#bundles", DataTable)
        for key, label in (
            ("id", "ID"),
            ("status", "Status"),
            ("kind", "Kind"),
            ("seq", "Seq"),
            ("file", "File"),
            ("medium", "Medium"),
            ("seen", "Seen"),
            ("reason", "Reason"),
        ):
            table.add_column(label, key=key)
        table.focus()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="bundles-load")
    async def load(self) -> None:
        try:
            self.bundles = await self.console_app.client.bundles()
        except ApiError as exc:
            self.report(exc, "load the bundles")
            return
        table = self.query_one("#bundles", DataTable)
        row = table.cursor_row
        table.clear()
        for b in reversed(self.bundles):  # newest first
            status = str(b.get("status", ""))
            table.add_row(
                str(b["id"]),
                Text(status, style=STATUS_STYLE.get(status, "")),
                fmt(b.get("kind")),
                fmt(b.get("seq")),
                str(b.get("file", ""))[:40],
                fmt(b.get("medium_label")),
                when(b.get("staged_at")),
                str(b.get("reason") or "")[:60],
                key=str(b["id"]),
            )
        if self.bundles:
            table.move_cursor(row=min(row, len(self.bundles) - 1), animate=False)
        staged = sum(1 for b in self.bundles if b.get("status") == "staged")
        self.query_one("#bundles-title", Static).update(
            f"USB bundles ({len(self.bundles)}, {staged} waiting): a approve, x reject"
        )
        if not self.bundles:
            self.query_one("#bundle-details", Static).update(
                "No bundles yet. Plug in a USB stick carrying signed bundles (.opb)."
            )
        self.loaded.set()

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#bundles", DataTable)
        if not self.bundles or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((b for b in self.bundles if str(b["id"]) == key), None)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        b = self.selected()
        if b is not None:
            self.show_details(int(b["id"]))

    @work(exclusive=True, group="bundles-detail")
    async def show_details(self, bundle_id: int) -> None:
        try:
            self.current = await self.console_app.client.bundle(bundle_id)
        except ApiError as exc:
            self.report(exc, f"load bundle {bundle_id}")
            return
        self.query_one("#bundle-details", Static).update(details(self.current))

    def _staged_selection(self) -> dict[str, Any] | None:
        b = self.selected()
        if b is None:
            self.notify("Select a bundle first.", severity="warning")
            return None
        if b.get("status") != "staged":
            self.notify(f"Bundle {b['id']} is {b.get('status')}, not staged.", severity="warning")
            return None
        return b

    def action_approve(self) -> None:
        b = self._staged_selection()
        if b is None:
            return
        question = (
            f"Apply {b.get('kind')} bundle {b['id']} (sequence {b.get('seq')}, file {b['file']}, "
            f"signed by {fmt(b.get('signers'))})? It is verified again and applied all at once."
        )

        def decided(ok: bool | None) -> None:
            if ok:
                self.approve(b)

        self.app.push_screen(
            ConfirmScreen("Approve bundle", question, f"Apply bundle {b['id']}"), decided
        )

    @work(group="bundles-action")
    async def approve(self, b: dict[str, Any]) -> None:
        try:
            await self.console_app.client.approve_bundle(int(b["id"]))
        except ApiError as exc:
            self.report(exc, f"apply bundle {b['id']}")
            self.reload()
            return
        self.notify(f"Applied {b.get('kind')} bundle {b['id']}")
        self.reload()

    def action_reject(self) -> None:
        b = self._staged_selection()
        if b is None:
            return

        def done(result: dict[str, Any] | None) -> None:
            if result:
                self.notify(f"Rejected bundle {b['id']}")
                self.reload()

        self.app.push_screen(RejectScreen(b), done)

    # ------------------------------------------------------------ exports
    def action_export_inventory(self) -> None:
        self.app.push_screen(
            ExportToMediaScreen(
                "Node inventory to USB",
                "node-inventory",
                "a signed node inventory (nodes.json)",
                note="Every node with its addresses, owner, tags, client version, routes and "
                "last seen, signed with the appliance key.",
            )
        )

    def action_export_enrolment(self) -> None:
        self.app.push_screen(
            ExportToMediaScreen(
                "Client enrolment package to USB",
                "client-enrolment",
                "a client enrolment package with USABLE enrolment keys",
                (
                    ExportField("clients", "Clients (names, comma separated)", "", "laptop1, laptop2"),
                    ExportField("user", "Owner user (or give tags)"),
                    ExportField("tags", "Tags (comma separated, instead of a user)", "", "tag:kiosk"),
                    ExportField("expires", "Key lifetime", "7d"),
                ),
                build=enrolment_request,
                note="One fresh single-use key per client, the login URL and the root "
                "certificate. The stick carries usable secrets until the keys expire.",
            )
        )


def enrolment_request(values: dict[str, str]) -> dict[str, Any]:
    """The client-enrolment request from the dialog's fields, or InvalidForm saying why."""
    clients = [c.strip() for c in values["clients"].split(",") if c.strip()]
    tags = [t.strip() for t in values["tags"].split(",") if t.strip()]
    if not clients:
        raise InvalidForm("Name at least one client, e.g. laptop1.")
    if len(set(clients)) != len(clients):
        raise InvalidForm("Each client name once, please.")
    if bool(values["user"]) == bool(tags):
        raise InvalidForm("Give either an owner user or tags (tag:name), not both.")
    if any(not t.startswith("tag:") for t in tags):
        raise InvalidForm("Tags look like tag:name.")
    if values["expires"] and not DURATION_RE.match(values["expires"].lower()):
        raise InvalidForm(f"Lifetime {values['expires']!r}: use e.g. 12h or 7d.")
    body: dict[str, Any] = {"clients": clients, "tags": tags, "expires_in": values["expires"] or "7d"}
    if values["user"]:
        body["user"] = values["user"]
    return body
