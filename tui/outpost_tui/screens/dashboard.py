"""Dashboard: the state of the site at a glance, and what needs the admin.

Everything here comes from `/v1/status`, which the app's connection monitor
fetches every few seconds, so this screen makes no calls of its own.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid

from ..connection import Connection
from ..format import size
from ..widgets.stat_tile import StatTile
from .base import OutpostScreen

NOT_YET = "not available yet"

# Tiles whose API does not exist yet: (id, title, which feature brings it).
UPCOMING_TILES: tuple[tuple[str, str, str], ...] = (
    ("certs", "Certificate expiry", "arrives with certificate management"),
    ("audit", "Audit chain", "arrives with the audit log"),
    ("disk", "Disk use", "arrives with the system status API"),
)


class DashboardScreen(OutpostScreen):
    NAV = "dashboard"
    TITLE_TEXT = "Dashboard"
    HELP = """
The state of the site at a glance, refreshed every few seconds.

A tile with a double yellow border needs you: devices waiting for approval,
nodes whose key has expired. A red tile means the server cannot be reached.
Tiles in a dashed (ASCII) border are figures the server cannot report yet;
they say which feature brings them.
"""

    BINDINGS = [
        Binding("a", "approvals", "Review approvals"),
        Binding("n", "app.switch_mode('nodes')", "Nodes"),
    ]

    DEFAULT_CSS = """
    DashboardScreen #tiles {
        grid-size: 2;
        grid-gutter: 0 1;
        grid-rows: auto;
        height: auto;
        padding: 0 1;
    }
    """

    def compose_body(self) -> ComposeResult:
        with Grid(id="tiles"):
            yield StatTile("Server", id="server")
            yield StatTile("Nodes", id="nodes")
            yield StatTile("Waiting for approval", id="pending")
            yield StatTile("Relay (DERP / STUN)", id="relay")
            yield StatTile("Last backup", id="backup")
            for tile_id, title, feature in UPCOMING_TILES:
                tile = StatTile(title, id=tile_id, value=NOT_YET, detail=feature)
                tile.add_class("-unavailable")
                yield tile

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "connection", self.show_status, init=True)

    def action_approvals(self) -> None:
        self.console_app.switch_mode("nodes")
        self.console_app.call_after_refresh(self.console_app.focus_pending)

    def show_status(self, conn: Connection) -> None:
        s: dict[str, Any] = conn.status or {}
        server = self.query_one("#server", StatTile)
        if conn.ok is False:
            server.set("UNREACHABLE", conn.error, bad=True)
        elif conn.ok is None:
            server.set("connecting...", "")
        else:
            server.set(
                str(s.get("server_url", "-")),
                f"version {s.get('version', '-')}, {s.get('users', 0)} users",
            )
        if not s:
            return
        online, total = int(s.get("nodes_online", 0)), int(s.get("nodes_total", 0))
        self.query_one("#nodes", StatTile).set(
            f"{online} online / {total} total", "press 2 for the node list"
        )
        pending = int(s.get("pending_registrations", 0))
        self.query_one("#pending", StatTile).set(
            f"{pending} device{'s' if pending != 1 else ''} waiting" if pending else "none",
            "press a to review and approve" if pending else "interactive logins appear here",
            attention=pending > 0,
        )
        self.show_backup(s.get("backup"))
        relay = s.get("relay") or {}
        derp, stun = relay.get("derp") or {}, relay.get("stun") or {}
        self.query_one("#relay", StatTile).set(
            f"{derp.get('connections_current', 0)} connections, {derp.get('keys_current', 0)} clients",
            f"relayed {size(derp.get('bytes_relayed'))} in {derp.get('packets_relayed', 0)} packets; "
            f"STUN answered {stun.get('requests_answered', 0)}",
        )

    def show_backup(self, b: dict[str, Any] | None) -> None:
        tile = self.query_one("#backup", StatTile)
        if not b:
            tile.set("-", "the server reports no backup state")
            return
        last, good = b.get("last"), b.get("last_ok")
        if not b.get("ready"):
            tile.set("NOT READY", "no recovery key: press 7, then see help (F1)", attention=True)
        elif b.get("running"):
            tile.set("running now...", f"schedule: {b.get('schedule')}")
        elif last is None:
            tile.set("none yet", f"schedule: {b.get('schedule')}; press 7 to back up now")
        elif not last.get("ok"):
            tile.set("LAST RUN FAILED", str(last.get("error"))[:120], bad=True)
        else:
            tile.set(_utc(good.get("finished") if good else None), f"ok; schedule: {b.get('schedule')}")


def _utc(t: float | None) -> str:
    import time  # noqa: PLC0415

    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
