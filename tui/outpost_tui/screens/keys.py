"""Enrolment keys: list, create (secret shown once), revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ..client import ApiError
from ..format import fmt, when
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .key_form import KeyFormScreen
from .key_secret import KeySecretScreen

STATE_STYLE = {
    "valid": "bold ansi_green",
    "expired": "ansi_yellow",
    "revoked": "ansi_red",
    "used": "ansi_white",
}


class KeysScreen(OutpostScreen):
    NAV = "keys"
    TITLE_TEXT = "Enrolment keys"
    HELP = """
Enrolment keys let a device join without an interactive approval:
tailscale up --login-server=URL --authkey=KEY.

Press c to create one: choose the owner user or tags, the lifetime, and
whether it is reusable or ephemeral. The key itself is shown ONCE, right after
creation; the server keeps only a hash, so the list shows a prefix. d revokes
the selected key after asking (nodes already enrolled stay).
"""

    BINDINGS = [
        Binding("c", "create", "Create"),
        Binding("d,delete", "revoke", "Revoke"),
    ]

    DEFAULT_CSS = """
    KeysScreen #keys-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: ansi_bright_white;
    }
    KeysScreen #keys {
        height: 1fr;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[dict[str, Any]] = []
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        yield Static("Enrolment keys", id="keys-title")
        yield DataTable(id="keys", cursor_type="row")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#keys", DataTable)
        for key, label in (
            ("id", "ID"),
            ("prefix", "Key"),
            ("owner", "Owner"),
            ("state", "State"),
            ("flags", "Flags"),
            ("uses", "Uses"),
            ("expires", "Expires"),
            ("description", "Description"),
        ):
            table.add_column(label, key=key)
        table.focus()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="keys-load")
    async def load(self) -> None:
        try:
            self.keys = await self.console_app.client.keys()
        except ApiError as exc:
            self.report(exc, "load the enrolment keys")
            return
        table = self.query_one("#keys", DataTable)
        row = table.cursor_row
        table.clear()
        for k in self.keys:
            flags = ",".join(
                f
                for f, on in (("reusable", k.get("reusable")), ("ephemeral", k.get("ephemeral")))
                if on
            )
            state = str(k.get("state", ""))
            table.add_row(
                str(k["id"]),
                k.get("prefix") or "-",
                k.get("user") or ",".join(k.get("tags") or []) or "-",
                Text(state, style=STATE_STYLE.get(state, "")),
                flags or "single use",
                str(k.get("uses", 0)),
                when(k.get("expires")) if k.get("expires") else "never",
                fmt(k.get("description")),
                key=str(k["id"]),
            )
        if self.keys:
            table.move_cursor(row=min(row, len(self.keys) - 1), animate=False)
        self.query_one("#keys-title", Static).update(
            f"Enrolment keys ({len(self.keys)}): c create, d revoke"
        )
        self.loaded.set()

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#keys", DataTable)
        if not self.keys or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((k for k in self.keys if str(k["id"]) == key), None)

    def action_create(self) -> None:
        def done(key: dict[str, Any] | None) -> None:
            if key:
                url = str((self.console_app.connection.status or {}).get("server_url", ""))
                self.app.push_screen(KeySecretScreen(key, url))
                self.reload()

        self.app.push_screen(KeyFormScreen(), done)

    def action_revoke(self) -> None:
        k = self.selected()
        if k is None:
            self.notify("Select a key first.", severity="warning")
            return
        if k.get("state") == "revoked":
            self.notify(f"Key {k.get('prefix')} is already revoked.", severity="warning")
            return
        owner = k.get("user") or ",".join(k.get("tags") or []) or "-"
        question = (
            f"Revoke enrolment key {k.get('prefix')} (id {k['id']}, owner {owner})? "
            "No device can enrol with it any more; nodes already enrolled stay."
        )
        self.app.push_screen(
            ConfirmScreen("Revoke enrolment key", question, f"Revoke {k.get('prefix')}"),
            lambda ok: self.revoke(k) if ok else None,
        )

    @work(group="keys-action")
    async def revoke(self, k: dict[str, Any]) -> None:
        try:
            await self.console_app.client.revoke_key(int(k["id"]))
        except ApiError as exc:
            self.report(exc, f"revoke key {k.get('prefix')}")
            return
        self.notify(f"Revoked enrolment key {k.get('prefix')}")
        self.reload()
