"""A screen whose feature is not built yet. It says so and does nothing else."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import OutpostScreen

# mode name -> (title, feature that brings it, what the screen will do)
# Every screen has arrived; the mechanism stays for the next feature that starts as a stub.
UPCOMING: dict[str, tuple[str, str, str]] = {}


class UpcomingScreen(OutpostScreen):
    DEFAULT_CSS = """
    UpcomingScreen #upcoming {
        border: ascii ansi_white;
        margin: 1 2;
        padding: 1 2;
        height: auto;
    }
    """

    def __init__(self, mode: str) -> None:
        title, feature, purpose = UPCOMING[mode]
        self.NAV = mode
        self.TITLE_TEXT = title
        self.feature = feature
        self.purpose = purpose
        self.HELP = (
            f"This screen arrives with {feature}. The server has no API for it yet, "
            "so there is nothing to show or do here."
        )
        super().__init__()

    def compose_body(self) -> ComposeResult:
        yield Static(
            f"{self.TITLE_TEXT}: arrives with {self.feature}.\n\n"
            f"When it does, this screen will {self.purpose}.\n\n"
            "The server does not offer this yet; nothing here is live.",
            id="upcoming",
            markup=False,
        )
