"""Bottom line: is the server reachable, and what is waiting.

Follows `App.connection`, which the app's monitor worker refreshes every few
seconds. When the server is down or busy it says so, with the reason and that
it keeps retrying; the rest of the console stays usable.
"""

from __future__ import annotations

from textual.widgets import Static

from ..connection import Connection


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        padding: 0 1;
        background: ansi_black;
        color: ansi_white;
    }
    StatusBar.-down {
        background: ansi_red;
        color: ansi_bright_white;
        text-style: bold;
    }
    StatusBar.-unknown {
        background: ansi_yellow;
        color: ansi_black;
    }
    StatusBar.-attention {
        background: ansi_yellow;
        color: ansi_black;
    }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._update, init=True)

    def _update(self, conn: Connection) -> None:
        self.set_class(conn.ok is False, "-down")
        self.set_class(conn.ok is None, "-unknown")
        pending = int((conn.status or {}).get("pending_registrations") or 0)
        self.set_class(bool(conn.ok) and pending > 0, "-attention")
        self.update(conn.summary())
