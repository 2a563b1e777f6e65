"""The details pane beside the node table."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from ..format import ago, fmt, when


class NodeDetails(Static):
    DEFAULT_CSS = """
    NodeDetails {
        border: solid ansi_white;
        border-title-color: ansi_bright_white;
        padding: 0 1;
        height: 1fr;
        overflow-y: auto;
    }
    """

    def on_mount(self) -> None:
        self.border_title = "Details"
        self.show(None)

    def show(self, node: dict[str, Any] | None) -> None:
        if node is None:
            self.update("Select a node to see its details.")
            return
        if node.get("_pending"):
            rows = [
                ("State", "WAITING FOR APPROVAL"),
                ("Hostname", node.get("hostname")),
                ("Auth ID", node.get("auth_id")),
                ("Tags asked", node.get("requested_tags")),
                ("Re-auth of", node.get("reauth_of")),
                ("Waiting since", when(node.get("created"))),
                ("Machine key", node.get("machine_key")),
            ]
        else:
            state = "online" if node.get("online") else "offline"
            if node.get("expired"):
                state += ", KEY EXPIRED"
            rows = [
                ("Name", node.get("name")),
                ("FQDN", node.get("fqdn")),
                ("State", state),
                ("IPv4", node.get("ipv4")),
                ("IPv6", node.get("ipv6")),
                ("User", node.get("user")),
                ("Tags", node.get("tags")),
                ("Client", node.get("client_version")),
                ("Last seen", ago(node.get("last_seen"))),
                ("Seen at", when(node.get("last_seen"))),
                ("Key expiry", when(node.get("key_expiry")) if node.get("key_expiry") else "never"),
                ("Created", when(node.get("created"))),
                ("Ephemeral", node.get("ephemeral")),
                ("Hostname", node.get("hostname")),
                ("Endpoints", node.get("endpoints")),
                ("Home DERP", node.get("home_derp")),
                ("Node ID", node.get("id")),
            ]
        text = Text()
        for label, value in rows:
            text.append(f"{label:<12}", style="bold")
            text.append(fmt(value) + "\n")
        self.update(text)
