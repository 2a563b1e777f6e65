"""Base for dialogs that send something to the server and may be refused.

The dialog does the call itself (in a worker) so a refusal or invalid input is
shown inside it, with the fields kept, instead of closing and losing them.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Static

from ..client import ApiError, ServerUnreachable
from ..widgets.safe import SafeInput
from .modal import Dialog


class InvalidForm(ValueError):
    """The admin's input is wrong; the message says how."""


class FormDialog(Dialog[dict[str, Any] | None]):
    HELP = (
        "Fill in the fields and press Enter (or the button) to send. If the server "
        "refuses, its reason appears in red and the fields are kept. Escape cancels."
    )

    def show_error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(text)

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.submit()
        else:
            self.dismiss(None)

    def submit(self) -> None:
        try:
            request = self.validate_form()
        except InvalidForm as exc:
            self.show_error(str(exc))
            return
        self.show_error("Sending...")
        self.query_one("#ok", Button).disabled = True
        self._send(request)

    @work(exclusive=True, group="form")
    async def _send(self, request: dict[str, Any]) -> None:
        try:
            result = await self.send(request)
        except ServerUnreachable as exc:
            self.show_error(f"Server unreachable: {exc.message}. Try again when it is back.")
        except ApiError as exc:
            self.show_error(f"Refused: {exc.message}")
        else:
            self.dismiss(result)
            return
        finally:
            if self.is_attached:
                self.query_one("#ok", Button).disabled = False

    def validate_form(self) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class UserPickerForm(FormDialog):
    """A form with a `#user` input and a `#users-hint` line: on open it
    focuses the input and offers the server's user names as suggestions."""

    def on_mount(self) -> None:
        self.query_one("#user", SafeInput).focus()
        self.load_users()

    @work(group="form-users")
    async def load_users(self) -> None:
        try:
            users = await self.app.client.users()  # type: ignore[attr-defined]
        except ApiError:
            return
        names = [u["name"] for u in users]
        self.query_one("#user", SafeInput).suggester = SuggestFromList(names, case_sensitive=False)
        self.query_one("#users-hint", Static).update(
            "Users: " + (", ".join(names) if names else "none yet (create one on screen 3)")
        )
