"""Why a certificate is revoked: the reason goes on the CRL. Confirmation follows."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Button, Label, Static

from ..widgets.safe import SafeInput
from .form import FormDialog, InvalidForm


class RevokeReasonScreen(FormDialog):
    HELP = (
        "Give the reason to publish on the certificate revocation list: key-compromise if "
        "the private key may have leaked, superseded if it was replaced, and so on (right "
        "arrow completes a suggestion). Nothing is revoked until you confirm on the next "
        "question. Escape cancels."
    )

    def __init__(self, cert: dict[str, Any], reasons: list[str]) -> None:
        super().__init__()
        self.cert = cert
        self.reasons = reasons

    def compose(self) -> ComposeResult:
        c = self.cert
        with Vertical(id="dialog") as box:
            box.border_title = f"Revoke certificate {c['serial']}"
            yield Static(
                f"{c.get('kind')} certificate for {', '.join(c.get('names') or []) or '-'}",
                markup=False,
            )
            yield Label("Reason")
            yield SafeInput(
                value="superseded",
                placeholder=", ".join(self.reasons),
                id="reason",
                suggester=SuggestFromList(self.reasons, case_sensitive=False),
            )
            yield Static("Reasons: " + ", ".join(self.reasons), classes="hint", markup=False)
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Next", id="ok", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#reason", SafeInput).focus()

    def validate_form(self) -> dict[str, Any]:
        reason = self.query_one("#reason", SafeInput).value.strip().lower()
        if reason not in self.reasons:
            raise InvalidForm(f"Unknown reason {reason!r}: use one of {', '.join(self.reasons)}.")
        return {"serial": self.cert["serial"], "reason": reason}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return request  # the screen asks for confirmation, then revokes
