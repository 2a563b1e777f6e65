"""Rename a node (its MagicDNS name)."""

from __future__ import annotations

import re
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from ..widgets.safe import SafeInput
from .form import FormDialog, InvalidForm

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class RenameScreen(FormDialog):
    HELP = (
        "Give the node a new MagicDNS name: lowercase letters, digits and dashes, "
        "up to 63 characters. Peers see the new name at their next map update. "
        "Enter renames, Escape cancels."
    )

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__()
        self.node = node

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = f"Rename node {self.node.get('name')}"
            yield Static(
                f"Current name: {self.node.get('fqdn') or self.node.get('name')}", markup=False
            )
            yield Label("New name")
            yield SafeInput(value=str(self.node.get("name") or ""), id="name")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Rename", id="ok", variant="primary")

    def validate_form(self) -> dict[str, Any]:
        name = self.query_one("#name", SafeInput).value.strip().lower()
        if not name:
            raise InvalidForm("Enter a name.")
        if not NAME_RE.match(name):
            raise InvalidForm(
                "Use lowercase letters, digits and dashes (not at either end), at most 63."
            )
        return {"name": name}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.rename_node(int(self.node["id"]), request["name"])  # type: ignore[attr-defined]
