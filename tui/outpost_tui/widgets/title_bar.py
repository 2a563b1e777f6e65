"""One line at the top: product, current screen, server URL and version."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from ..connection import Connection


class TitleBar(Static):
    DEFAULT_CSS = """
    TitleBar {
        height: 1;
        background: ansi_blue;
        color: ansi_bright_white;
        text-style: bold;
        padding: 0 1;
    }
    """

    screen_title: reactive[str] = reactive("")

    def __init__(self, screen_title: str) -> None:
        super().__init__()
        self.screen_title = screen_title

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._update, init=True)

    def _update(self, conn: Connection) -> None:
        s = conn.status or {}
        right = f"{s.get('server_url', '')}  v{s['version']}" if s.get("version") else ""
        left = f"OUTPOST CONSOLE | {self.screen_title}"
        width = max(self.size.width - 2, len(left) + len(right) + 1)
        self.update(left + " " * (width - len(left) - len(right)) + right)

    def on_resize(self) -> None:
        self._update(self.app.connection)  # type: ignore[attr-defined]
