"""Set a node's tags, and approve the subnet routes and exit-node routes it advertises."""

from __future__ import annotations

import re
from ipaddress import ip_network
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from ..widgets.safe import SafeInput
from .form import FormDialog, InvalidForm

TAG_RE = re.compile(r"^tag:[a-zA-Z0-9][a-zA-Z0-9-]{0,79}$")
EXIT_ROUTES = ("0.0.0.0/0", "::/0")


def split_list(text: str) -> list[str]:
    return [p for p in re.split(r"[\s,]+", text.strip()) if p]


class TagsScreen(FormDialog):
    HELP = (
        "A node's tags decide what the policy lets it do; tagged nodes are owned by their "
        "tags, not by a user. Enter tags separated by commas (tag:server, tag:prod); an empty "
        "field removes every tag, which only works for a node that also has a user. "
        "Enter saves, Escape cancels."
    )

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__()
        self.node = node

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = f"Tags of {self.node.get('name')}"
            owner = self.node.get("user") or "no user (enrolled with tags)"
            yield Static(f"Owner: {owner}", markup=False)
            yield Label("Tags (comma-separated)")
            yield SafeInput(value=", ".join(self.node.get("tags") or []), id="tags")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save tags", id="ok", variant="primary")

    def validate_form(self) -> dict[str, Any]:
        tags = split_list(self.query_one("#tags", SafeInput).value)
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise InvalidForm(f"{bad[0]!r} is not a tag: tags look like tag:name")
        if not tags and not self.node.get("user"):
            raise InvalidForm("This node has no user: it must keep at least one tag.")
        return {"tags": sorted(set(tags))}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.set_node_tags(int(self.node["id"]), request["tags"])  # type: ignore[attr-defined]


class RoutesScreen(FormDialog):
    HELP = (
        "Routes a node advertises (subnets behind it, or 0.0.0.0/0 and ::/0 to be an exit "
        "node) carry traffic only once approved. The field starts with what is approved now; "
        "list every route that should be approved, separated by commas. autoApprovers in the "
        "policy approve routes by themselves. Enter saves, Escape cancels."
    )

    def __init__(self, node: dict[str, Any], routes: dict[str, Any]) -> None:
        super().__init__()
        self.node = node
        self.routes = routes

    def compose(self) -> ComposeResult:
        advertised = self.routes.get("advertised") or []
        with Vertical(id="dialog") as box:
            box.border_title = f"Routes of {self.node.get('name')}"
            yield Static("Advertised: " + (", ".join(advertised) or "none"), markup=False)
            yield Static("Serving now: " + (", ".join(self.routes.get("serving") or []) or "none"), markup=False)
            if all(r in advertised for r in EXIT_ROUTES):
                yield Static("It offers to be an exit node: approve 0.0.0.0/0 and ::/0 for that.", markup=False)
            yield Label("Approved routes")
            yield SafeInput(value=", ".join(self.routes.get("approved") or []), id="routes")
            with Horizontal(classes="buttons"):
                yield Button("Approve all advertised", id="all")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save approval", id="ok", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        # Textual also runs FormDialog's handler (Ok/Cancel) unless the default is prevented.
        if event.button.id == "all":
            event.prevent_default()
            event.stop()
            self.query_one("#routes", SafeInput).value = ", ".join(self.routes.get("advertised") or [])

    def validate_form(self) -> dict[str, Any]:
        routes = split_list(self.query_one("#routes", SafeInput).value)
        for r in routes:
            try:
                ip_network(r, strict=True)
            except ValueError:
                raise InvalidForm(f"{r!r} is not a network (like 10.0.0.0/24)") from None
        not_offered = [r for r in routes if r not in (self.routes.get("advertised") or [])]
        if not_offered:
            raise InvalidForm(f"{not_offered[0]} is not advertised by this node")
        return {"routes": routes}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.approve_routes(int(self.node["id"]), request["routes"])  # type: ignore[attr-defined]
