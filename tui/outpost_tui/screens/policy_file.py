"""Check (or prepare to apply) a policy file the admin names by its path.

tty1 has no editor: the admin writes the policy elsewhere (a USB stick, an
SSH session, `outpost policy` on the box) and gives its path here. The dialog
reads the file and has the server check it; a refusal (syntax, validation,
the policy's own tests) is shown in red with its line and column, and the
path stays for another try. Applying happens only after a confirmation on the
Policy screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from ..local_files import LocalFileError, read_text_file
from ..widgets.safe import SafeInput
from .form import FormDialog, InvalidForm

# The server's own bound on a policy is far lower in practice; this only stops
# the console from reading a whole disk image by mistake.
MAX_POLICY_FILE_BYTES = 1024 * 1024


def read_policy_file(path_text: str) -> tuple[Path, str]:
    """The file's path and text, or InvalidForm saying plainly what is wrong."""
    if not path_text.strip():
        raise InvalidForm("Enter the path of the policy file (e.g. /media/usb/policy.hujson).")
    try:
        return read_text_file(path_text, "policy", MAX_POLICY_FILE_BYTES)
    except LocalFileError as exc:
        raise InvalidForm(str(exc)) from None


class PolicyFileScreen(FormDialog):
    """`apply=False`: check only. `apply=True`: check, then return the text to apply."""

    def __init__(self, *, apply: bool) -> None:
        super().__init__()
        self.apply = apply
        self.HELP = (
            "Give the full path of a policy file (HuJSON, as Tailscale writes it). The server "
            "checks its syntax, its rules and the tests inside it; a mistake is shown with "
            "its line and column. "
            + (
                "If it passes you are asked to confirm before it replaces the current policy."
                if apply
                else "Nothing is changed: this is only a check."
            )
            + " Escape cancels."
        )

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = "Apply a policy file" if self.apply else "Check a policy file"
            yield Label("Path of the policy file")
            yield SafeInput(placeholder="/media/usb/policy.hujson", id="path")
            if self.apply:
                yield Label("Comment for the history (optional)")
                yield SafeInput(placeholder="what changed and why", id="comment")
            yield Static(
                "Checked by the server: syntax, rules and the file's own tests.",
                classes="hint",
            )
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Check, then apply" if self.apply else "Check", id="ok",
                             variant="primary")  # fmt: skip

    def on_mount(self) -> None:
        self.query_one("#path", SafeInput).focus()

    def validate_form(self) -> dict[str, Any]:
        path, text = read_policy_file(self.query_one("#path", SafeInput).value)
        comment = self.query_one("#comment", SafeInput).value.strip() if self.apply else ""
        return {"path": str(path), "text": text, "comment": comment}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        result = await self.app.client.policy_check(request["text"])  # type: ignore[attr-defined]
        return {**request, "check": result}
