"""Confirmation for destructive actions: names the object, default is No."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from .modal import Dialog


class ConfirmScreen(Dialog[bool]):
    HELP = (
        "Confirm or cancel a change that cannot be undone. The question names the "
        "object it acts on. Escape or 'n' cancels; the confirm button (or 'y') goes ahead."
    )
    BINDINGS = [Binding("y", "confirm", "Yes"), Binding("n", "cancel", "No")]

    def __init__(self, title: str, question: str, confirm_label: str) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.question, id="question", markup=False)
            yield Static("This cannot be undone.", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
