"""A read-only, scrollable text in a dialog: a policy diff, an audit entry, a certificate."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import ScrollableContainer, Vertical
from textual.widgets import Button, Static

from ..highlight import console_safe
from .modal import Dialog


class TextViewScreen(Dialog[None]):
    HELP = (
        "Read-only text. Up/Down, PageUp/PageDown and Home/End scroll it "
        "(Left/Right for long lines). Escape, q or the button closes it."
    )
    BINDINGS = [Binding("q", "cancel", "Close")]

    DEFAULT_CSS = """
    TextViewScreen > #dialog {
        width: 100%;
        height: 100%;
        max-height: 100%;
    }
    TextViewScreen #text-scroll {
        height: 1fr;
        border: solid ansi_white;
        scrollbar-size: 1 1;
    }
    TextViewScreen #text-scroll:focus {
        border: solid ansi_bright_cyan;
    }
    TextViewScreen #text-body {
        width: auto;
    }
    """

    def __init__(self, title: str, body: Text | str, note: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.body = body if isinstance(body, Text) else Text(console_safe(body))
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = self.title_text
            if self.note:
                yield Static(self.note, classes="hint", markup=False)
            with ScrollableContainer(id="text-scroll", can_focus=True):
                yield Static(self.body, id="text-body", markup=False)
            with Vertical(classes="buttons"):
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#text-scroll").focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)
