"""Create a user."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from ..widgets.safe import SafeInput
from .form import FormDialog, InvalidForm


class UserFormScreen(FormDialog):
    HELP = (
        "Create a user. The name is how nodes, keys and policy refer to the user "
        "(login name NAME@site); the display name is only shown. Enter creates, "
        "Escape cancels."
    )

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = "New user"
            yield Label("Name")
            yield SafeInput(placeholder="e.g. alice", id="name")
            yield Label("Display name (optional)")
            yield SafeInput(placeholder="e.g. Alice Smith", id="display")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Create", id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#name", SafeInput).focus()

    def validate_form(self) -> dict[str, Any]:
        name = self.query_one("#name", SafeInput).value.strip()
        if not name:
            raise InvalidForm("Enter a user name.")
        if any(c.isspace() for c in name):
            raise InvalidForm("A user name cannot contain spaces.")
        return {
            "name": name,
            "display_name": self.query_one("#display", SafeInput).value.strip() or None,
        }

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.create_user(request["name"], request["display_name"])  # type: ignore[attr-defined, no-any-return]
