"""Create an enrolment key: owner or tags, lifetime, reusable, ephemeral."""

from __future__ import annotations

import re
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Label, Static

from ..widgets.safe import SafeCheckbox, SafeInput
from .form import InvalidForm, UserPickerForm

DURATION_RE = re.compile(r"^[1-9][0-9]*[smhd]$")
TAG_RE = re.compile(r"^tag:[a-z0-9][a-z0-9_-]*$", re.IGNORECASE)


def parse_tags(text: str) -> list[str]:
    tags = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
    for t in tags:
        if not TAG_RE.match(t):
            raise InvalidForm(f"Invalid tag {t!r}: tags look like tag:name.")
    return tags


class KeyFormScreen(UserPickerForm):
    HELP = (
        "Create an enrolment key for 'tailscale up --authkey'. Nodes enrolled with it "
        "belong to the user, or carry the tags (tagged nodes have no user owner). "
        "Lifetime: e.g. 30m, 12h, 7d (empty: the key never expires). Reusable keys "
        "enrol any number of devices; ephemeral nodes are removed when they go away. "
        "The key itself is shown once, right after creation. Space toggles a box."
    )

    DEFAULT_CSS = """
    KeyFormScreen .row {
        height: auto;
    }
    KeyFormScreen SafeCheckbox {
        border: none;
        padding: 0 1;
        margin-top: 1;
        width: auto;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog") as box:
            box.border_title = "New enrolment key"
            yield Label("Owner (user name)")
            yield SafeInput(placeholder="user name (or leave empty and give tags)", id="user")
            yield Static("", id="users-hint", classes="hint", markup=False)
            yield Label("Tags (comma separated)")
            yield SafeInput(placeholder="tag:server, tag:printer", id="tags")
            yield Label("Lifetime of the key")
            yield SafeInput(
                value="1h", placeholder="30m, 12h, 7d; empty: never expires", id="expires"
            )
            yield Label("Description (optional)")
            yield SafeInput(placeholder="what or who it is for", id="description")
            with Horizontal(classes="row"):
                yield SafeCheckbox("Reusable", id="reusable")
                yield SafeCheckbox("Ephemeral", id="ephemeral")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Create key", id="ok", variant="primary")

    def validate_form(self) -> dict[str, Any]:
        user = self.query_one("#user", SafeInput).value.strip()
        tags = parse_tags(self.query_one("#tags", SafeInput).value)
        expires = self.query_one("#expires", SafeInput).value.strip().lower()
        if not user and not tags:
            raise InvalidForm("Give an owner user, or tags for server-owned nodes.")
        if expires and not DURATION_RE.match(expires):
            raise InvalidForm(f"Invalid lifetime {expires!r}: use e.g. 30m, 12h or 7d.")
        return {
            "user": user or None,
            "tags": tags,
            "expires_in": expires or None,
            "reusable": self.query_one("#reusable", SafeCheckbox).value,
            "ephemeral": self.query_one("#ephemeral", SafeCheckbox).value,
            "description": self.query_one("#description", SafeInput).value.strip(),
        }

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.create_key(**request)  # type: ignore[attr-defined, no-any-return]
