"""The help panel (F1 or ?): what the screen is for and every key on it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Button, Static

from .modal import Dialog

GLOBAL_KEYS: tuple[tuple[str, str], ...] = (
    ("1-9", "switch screen (see the line under the title)"),
    ("F1 / ?", "this help"),
    ("Ctrl+L", "lock the console now (passphrase to unlock)"),
    ("Tab", "next field or table"),
    ("Ctrl+Q", "quit the console (it restarts locked)"),
)


class HelpScreen(Dialog[None]):
    HELP = "This panel. Escape, Enter or F1 closes it."
    BINDINGS = [Binding("f1,question_mark,q", "cancel", "Close")]

    DEFAULT_CSS = """
    HelpScreen > #dialog {
        width: 90;
        max-height: 100%;
    }
    HelpScreen #help-body {
        height: auto;
        max-height: 30;
    }
    """

    def __init__(self, title: str, about: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.about = about
        self.keys = keys

    def compose(self) -> ComposeResult:
        text = Text()
        text.append(self.about.strip() + "\n\n")
        text.append("Keys on this screen\n", style="bold underline")
        for key, what in self.keys:
            text.append(f"  {key:<14}", style="bold")
            text.append(f"{what}\n")
        text.append("\nEverywhere\n", style="bold underline")
        for key, what in GLOBAL_KEYS:
            text.append(f"  {key:<14}", style="bold")
            text.append(f"{what}\n")
        with VerticalScroll(id="dialog") as box:
            box.border_title = f"Help: {self.title_text}"
            yield Static(text, id="help-body")
            yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)
