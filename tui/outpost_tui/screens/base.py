"""What every main screen shares: title, navigation, body, status bar, keys.

Subclasses set `NAV` (their mode name), `TITLE_TEXT`, `HELP` (what the screen
is for; the help panel adds the key list itself) and implement
`compose_body()` and, if they show server data, `reload()`, which must start
a worker (no network call on the event loop's critical path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import Footer

from ..client import ApiError, ServerUnreachable
from ..connection import Connection
from ..widgets.nav_bar import NavBar
from ..widgets.status_bar import StatusBar
from ..widgets.title_bar import TitleBar

if TYPE_CHECKING:
    from ..app import OutpostConsole


class OutpostScreen(Screen[None]):
    NAV = ""
    TITLE_TEXT = ""
    HELP = ""

    DEFAULT_CSS = """
    OutpostScreen > #top {
        dock: top;
        height: 2;
    }
    OutpostScreen > #bottom {
        dock: bottom;
        height: 2;
    }
    OutpostScreen > #body {
        height: 1fr;
    }
    """

    BINDINGS = [Binding("f5,r", "reload", "Refresh", show=False)]

    _was_ok: bool | None = None

    @property
    def console_app(self) -> OutpostConsole:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield TitleBar(self.TITLE_TEXT)
            yield NavBar(self.NAV)
        with Vertical(id="bottom"):
            yield StatusBar()
            yield Footer()
        with Container(id="body"):
            yield from self.compose_body()

    def compose_body(self) -> ComposeResult:
        return iter(())

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._connection_changed, init=False)

    def on_screen_resume(self) -> None:
        self.reload()

    def _connection_changed(self, conn: Connection) -> None:
        if conn.ok and self._was_ok is False and self.is_current:
            self.reload()  # the server is back: show fresh data
        self._was_ok = conn.ok

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Fetch this screen's data again (in a worker)."""

    def report(self, exc: ApiError, doing: str) -> None:
        """Tell the admin why something did not happen."""
        if isinstance(exc, ServerUnreachable):
            self.notify(
                f"Could not {doing}: {exc.message}", title="Server unreachable", severity="error"
            )
            self.console_app.poll_status()
        else:
            self.notify(
                f"Could not {doing}: {exc.message}", title="Refused by the server", severity="error"
            )
