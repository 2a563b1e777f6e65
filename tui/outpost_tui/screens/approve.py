"""Approve an interactive login: choose who owns the new node (or its tags)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Label, Static

from ..widgets.safe import SafeInput
from .form import InvalidForm, UserPickerForm
from .key_form import parse_tags


class ApproveScreen(UserPickerForm):
    HELP = (
        "Approve a device that is waiting in an interactive login. Give the user "
        "who owns it, or tags (tag:name, comma separated) for a server-owned node. "
        "Right arrow completes a suggested user name. Enter approves, Escape cancels "
        "(the device keeps waiting)."
    )

    def __init__(self, pending: dict[str, Any]) -> None:
        super().__init__()
        self.pending = pending

    def compose(self) -> ComposeResult:
        p = self.pending
        with VerticalScroll(id="dialog") as box:
            box.border_title = f"Approve {p.get('hostname')}"
            yield Static(
                f"Device {p.get('hostname')} (auth id {p.get('auth_id')}) asks to join.",
                markup=False,
            )
            yield Label("Owner (user name)")
            yield SafeInput(placeholder="user name", id="user")
            yield Static("", id="users-hint", classes="hint", markup=False)
            yield Label("Tags (instead of a user; comma separated)")
            yield SafeInput(
                value=", ".join(p.get("requested_tags") or []), placeholder="tag:server", id="tags"
            )
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Approve", id="ok", variant="success")

    def validate_form(self) -> dict[str, Any]:
        user = self.query_one("#user", SafeInput).value.strip()
        tags = parse_tags(self.query_one("#tags", SafeInput).value)
        if not user and not tags:
            raise InvalidForm("Give an owner user, or tags for a server-owned node.")
        return {"user": user or None, "tags": tags}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.approve(  # type: ignore[attr-defined, no-any-return]
            self.pending["auth_id"], user=request["user"], tags=request["tags"]
        )
