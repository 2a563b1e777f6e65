"""Base for dialogs: a bordered box in the middle, Escape cancels."""

from __future__ import annotations

from typing import TypeVar

from textual.binding import Binding
from textual.screen import ModalScreen

T = TypeVar("T")


class Dialog(ModalScreen[T]):
    DEFAULT_CSS = """
    Dialog {
        align: center middle;
        background: ansi_black 0%;
    }
    Dialog > #dialog {
        width: 70;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: double ansi_cyan;
        border-title-color: ansi_bright_white;
        border-title-style: bold;
        background: ansi_black;
        padding: 0 1;
    }
    Dialog .buttons {
        height: auto;
        align-horizontal: right;
        margin-top: 1;
    }
    Dialog .buttons Button {
        margin-left: 2;
    }
    Dialog .error {
        color: ansi_bright_red;
        text-style: bold;
        height: auto;
    }
    Dialog .hint {
        color: ansi_white;
        height: auto;
    }
    Dialog Label {
        margin-top: 0;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    HELP = "A dialog. Tab moves between fields, Enter activates a button, Escape cancels."

    def action_cancel(self) -> None:
        self.dismiss(None)  # type: ignore[arg-type]
