"""The new enrolment key, shown exactly once."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from ..format import when
from .modal import Dialog


class KeySecretScreen(Dialog[None]):
    HELP = (
        "The enrolment key just created. The server stores only a hash of it, so "
        "this is the only time it can be shown: write it down or type it into the "
        "device now. Close with the button once it is recorded; if it is lost, "
        "revoke it on the Keys screen and create another."
    )
    BINDINGS = [Binding("escape", "cancel", "Close", show=False)]

    DEFAULT_CSS = """
    KeySecretScreen > #dialog {
        width: 100;
        border: double ansi_bright_yellow;
    }
    KeySecretScreen #warning {
        background: ansi_yellow;
        color: ansi_black;
        text-style: bold;
        padding: 0 1;
        margin-top: 1;
    }
    KeySecretScreen #secret {
        border: solid ansi_bright_white;
        color: ansi_bright_white;
        text-style: bold;
        padding: 0 1;
        margin-top: 1;
        height: auto;
    }
    """

    def __init__(self, key: dict[str, Any], server_url: str = "") -> None:
        super().__init__()
        self.key = key
        self.server_url = server_url

    def compose(self) -> ComposeResult:
        k = self.key
        owner = k.get("user") or ", ".join(k.get("tags") or []) or "-"
        with Vertical(id="dialog") as box:
            box.border_title = "Enrolment key created"
            yield Static(
                "SHOWN ONCE: the server keeps only a hash. Record it now; it cannot be displayed again.",
                id="warning",
            )
            yield Static(str(k.get("key", "")), id="secret", markup=False)
            yield Static(
                f"Owner {owner}; expires {when(k.get('expires')) + ' UTC' if k.get('expires') else 'never'}; "
                f"{'reusable' if k.get('reusable') else 'single use'}"
                f"{', ephemeral' if k.get('ephemeral') else ''}. Key id {k.get('id')} ({k.get('prefix')}).",
                markup=False,
            )
            if self.server_url:
                yield Static(
                    f"On the device: tailscale up --login-server={self.server_url} --authkey=<the key>",
                    classes="hint",
                    markup=False,
                )
            with Horizontal(classes="buttons"):
                yield Button("I have recorded the key", id="done", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#done", Button).focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.notify(
            "Close with the button once the key is recorded: it is not shown again.",
            severity="warning",
        )
