"""Dashboard: the state of the site at a glance, and what needs the admin.

Everything here comes from `/v1/status`, which the app's connection monitor
fetches every few seconds, so this screen makes no calls of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid

from ..connection import Connection
from ..format import size, when
from ..widgets.stat_tile import StatTile
from .base import OutpostScreen
from .wizard import WizardScreen

NOT_YET = "not available yet"

# Tiles whose API does not exist yet: (id, title, which feature brings it). None left.
UPCOMING_TILES: tuple[tuple[str, str, str], ...] = ()

LEAF_ATTENTION_DAYS = 14  # the server renews at 30 days left: below 14, renewal is failing
DISK_ATTENTION_PERCENT = 90
DISK_BAD_PERCENT = 98


@dataclass(frozen=True)
class Tile:
    """What a tile shows: pure functions below map /v1/status parts to this."""

    value: str
    detail: str = ""
    attention: bool = False
    bad: bool = False


def certs_tile(c: dict[str, Any] | None) -> Tile:
    if not c:
        return Tile("-", "the server reports no certificate state")
    if c.get("error"):
        return Tile("CA UNREADABLE", str(c["error"])[:120], bad=True)
    leaf, root = c.get("leaf_days_left"), c.get("root_days_left")
    detail = f"root CA: {root} days left; press 9 for details"
    if leaf is None:
        return Tile("no server certificate", detail, bad=True)
    if leaf < 0:
        return Tile("SERVER CERTIFICATE EXPIRED", "press 9, then n to renew now", bad=True)
    value = f"server: {leaf} day{'s' if leaf != 1 else ''} left"
    if leaf < LEAF_ATTENTION_DAYS:
        return Tile(value, "automatic renewal is failing: press 9, then n", attention=True)
    return Tile(value, detail, attention=root is not None and root < LEAF_ATTENTION_DAYS)


def audit_tile(a: dict[str, Any] | None) -> Tile:
    if not a:
        return Tile("-", "the server reports no audit log")
    size = f"{a.get('entries', 0)} entries"
    cp = a.get("last_checkpoint_seq")
    size += f", last signed checkpoint at {cp}" if cp else ", no signed checkpoint yet"
    v = a.get("verified")
    if not v:
        return Tile("not verified yet", f"{size}; press 8, then v")
    if not v.get("ok"):
        bad = v.get("first_bad_seq")
        return Tile(f"BROKEN at entry {bad}", str(v.get("error"))[:120], bad=True)
    return Tile(f"intact up to entry {v.get('last_seq')}", f"{size}; checked {_when(v.get('at'))}")


def disk_tile(d: dict[str, Any] | None) -> Tile:
    if not d:
        return Tile("-", "the server reports no disk figures")
    if d.get("error"):
        return Tile("unknown", str(d["error"]), attention=True)
    used, free = int(d.get("used") or 0), int(d.get("free") or 0)
    percent = 100 * used / (used + free) if used + free else 0.0
    return Tile(
        f"{percent:.0f}% used",
        f"{size(free)} free of {size(int(d.get('total') or 0))}",
        attention=DISK_ATTENTION_PERCENT < percent < DISK_BAD_PERCENT,
        bad=percent >= DISK_BAD_PERCENT,
    )


class DashboardScreen(OutpostScreen):
    NAV = "dashboard"
    TITLE_TEXT = "Dashboard"
    HELP = """
The state of the site at a glance, refreshed every few seconds.

A tile with a double yellow border needs you: devices waiting for approval,
nodes whose key has expired. A red tile means the server cannot be reached.
Certificate expiry turns yellow when the server certificate has under 14
days left (the server renews it at 30, so renewal is failing) and red when it
has expired. The audit chain shows the last verification (press 8, then v);
it is red when the chain is broken. Disk use turns yellow above 90% and red
from 98%.

w opens the first-boot setup again (site name and addresses, CA, signers and
recovery key, first administrator, a first-client key); F10 leaves it.
"""

    BINDINGS = [
        Binding("a", "approvals", "Review approvals"),
        Binding("n", "app.switch_mode('nodes')", "Nodes"),
        Binding("w", "setup_wizard", "Setup wizard"),
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
            yield StatTile("Certificate expiry", id="certs")
            yield StatTile("Audit chain", id="audit")
            yield StatTile("Disk use", id="disk")
            for tile_id, title, feature in UPCOMING_TILES:
                tile = StatTile(title, id=tile_id, value=NOT_YET, detail=feature)
                tile.add_class("-unavailable")
                yield tile

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "connection", self.show_status, init=True)

    def action_setup_wizard(self) -> None:
        self.app.push_screen(WizardScreen(reopened=True))

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
        for tile_id, tile in (
            ("certs", certs_tile(s.get("certs"))),
            ("audit", audit_tile(s.get("audit"))),
            ("disk", disk_tile(s.get("disk"))),
        ):
            self.query_one(f"#{tile_id}", StatTile).set(
                tile.value, tile.detail, attention=tile.attention, bad=tile.bad
            )
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


def _when(text: str | None) -> str:
    return f"{when(text)} UTC" if text else "-"


def _utc(t: float | None) -> str:
    import time  # noqa: PLC0415

    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
