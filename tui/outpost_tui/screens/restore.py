"""Restore a backup from the console: the recovery key (from a file) or the passphrase, checked
in full by the server, then one restart swaps it in."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from ..local_files import LocalFileError, read_text_file
from ..widgets.safe import SafeInput
from .form import FormDialog, InvalidForm

MAX_KEY_FILE_BYTES = 4096  # a recovery key file is a few comment lines and one key line


class RestoreScreen(FormDialog):
    HELP = (
        "Restore replaces the whole state of this appliance (nodes, keys, policy, CA, audit log) "
        "with the backup's. Give the path of a recovery key file (e.g. on the USB stick the key "
        "holder brought) or the backup passphrase. The server decrypts and checks the backup "
        "completely first; only then does it restart and swap the state in. Enrolled clients "
        "reconnect by themselves. The replaced state is kept in DATA_DIR/.restore/previous. "
        "The key is used once and not stored."
    )

    def __init__(self, backup: dict[str, Any]) -> None:
        super().__init__()
        self.backup = backup

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = f"Restore {self.backup.get('name')}"
            yield Static(
                f"Backup {self.backup.get('id')} of appliance {self.backup.get('appliance')}, "
                f"schema {self.backup.get('schema')}. Opens with: "
                + ", ".join(self.backup.get("opens_with") or []),
                markup=False,
            )
            yield Label("Recovery key file (path)")
            yield SafeInput(placeholder="/media/usb/recovery-alice.key", id="keyfile")
            yield Label("or the backup passphrase")
            yield SafeInput(password=True, id="passphrase")
            yield Static("The current state is replaced and the server restarts.", classes="error")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Check and restore", id="ok", variant="error")

    def validate_form(self) -> dict[str, Any]:
        path = self.query_one("#keyfile", SafeInput).value.strip()
        phrase = self.query_one("#passphrase", SafeInput).value
        if bool(path) == bool(phrase):
            raise InvalidForm("Give either the recovery key file or the passphrase.")
        if path:
            try:
                _, text = read_text_file(path, "recovery key", MAX_KEY_FILE_BYTES)
            except LocalFileError as exc:
                raise InvalidForm(str(exc)) from None
            return {"name": self.backup["name"], "recovery_key": text, "restart": True}
        return {"name": self.backup["name"], "passphrase": phrase, "restart": True}

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.app.client.backup_restore(request)  # type: ignore[attr-defined]
