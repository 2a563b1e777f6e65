"""Nodes: every node, the logins waiting for approval, and what can be done.

The table is filtered by the search box (name, address, user, tag, version)
and sorted by any column (press s, or click a header). Logins waiting for
approval are listed above the nodes while there are any.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from ..client import ApiError
from ..format import ago
from ..widgets.node_details import NodeDetails
from ..widgets.safe import SafeInput
from .approve import ApproveScreen
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .node_edit import RoutesScreen, TagsScreen
from .rename import RenameScreen

AUTO_REFRESH_S = 5.0

# (column key, header, sort key)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"),
    ("ipv4", "IPv4"),
    ("owner", "Owner"),
    ("state", "State"),
    ("seen", "Last seen"),
)


def _owner(n: dict[str, Any]) -> str:
    return n.get("user") or ",".join(n.get("tags") or []) or "-"


def _state(n: dict[str, Any]) -> str:
    if n.get("expired"):
        return "expired"
    return "online" if n.get("online") else "offline"


def _ip_sort(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in ip.split("."))
    except ValueError:
        return (999,)


SORTERS = {
    "name": lambda n: (n.get("name") or "").lower(),
    "ipv4": lambda n: _ip_sort(n.get("ipv4") or ""),
    "owner": lambda n: _owner(n).lower(),
    "state": lambda n: (
        {"online": 0, "offline": 1, "expired": 2}[_state(n)],
        (n.get("name") or ""),
    ),
    "seen": lambda n: n.get("last_seen") or "",
}


def matches(n: dict[str, Any], query: str) -> bool:
    if not query:
        return True
    hay = " ".join(
        str(v)
        for v in (
            n.get("name"),
            n.get("hostname"),
            n.get("ipv4"),
            n.get("ipv6"),
            n.get("user"),
            " ".join(n.get("tags") or []),
            n.get("client_version"),
            _state(n),
        )
    ).lower()
    return all(word in hay for word in query.lower().split())


class NodesScreen(OutpostScreen):
    NAV = "nodes"
    TITLE_TEXT = "Nodes"
    HELP = """
Every node of the tailnet, and the interactive logins waiting for approval.

Logins waiting for approval are listed first (yellow). Select one and press a
to approve it (you choose the owning user or tags) or x to reject it.

In the node table, the pane on the right shows the selected node's addresses,
owner, tags, client version, last contact and key expiry. Type in the search
box (/) to filter; press s (or click a header) to change the sort order.
Rename, expire and delete ask before they act and name the node. t sets the
node's tags; o approves the subnet routes it advertises, and 0.0.0.0/0 with
::/0 make it an exit node.
"""

    BINDINGS = [
        Binding("slash", "search", "Search", show=False),
        Binding("s", "sort", "Sort", show=False),
        Binding("a", "approve", "Approve"),
        Binding("x", "reject", "Reject"),
        Binding("n", "rename", "Rename"),
        Binding("t", "tags", "Tags"),
        Binding("o", "routes", "Routes"),
        Binding("e", "expire", "Expire"),
        Binding("d,delete", "delete", "Delete"),
    ]

    DEFAULT_CSS = """
    NodesScreen #search {
        border: none;
        height: 1;
        padding: 0 1;
        background: ansi_black;
        margin-bottom: 0;
    }
    NodesScreen #search:focus {
        background: ansi_blue;
    }
    NodesScreen #left {
        width: 1fr;
    }
    NodesScreen NodeDetails {
        width: 36;
    }
    NodesScreen .section {
        height: 1;
        padding: 0 1;
        text-style: bold;
        background: ansi_black;
        color: ansi_bright_white;
    }
    NodesScreen #pending-title {
        background: ansi_yellow;
        color: ansi_black;
    }
    NodesScreen #pending {
        height: auto;
        max-height: 6;
    }
    NodesScreen #nodes {
        height: 1fr;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.sort_key = "name"
        self.sort_reverse = False
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="left"):
                yield SafeInput(placeholder="/ to search: name, address, user, tag", id="search")
                yield Static("", id="pending-title", classes="section")
                yield DataTable(id="pending", cursor_type="row")
                yield Static("Nodes", id="nodes-title", classes="section")
                yield DataTable(id="nodes", cursor_type="row")
            yield NodeDetails(id="details")

    def on_mount(self) -> None:
        super().on_mount()
        pending = self.query_one("#pending", DataTable)
        pending.add_column("Hostname", key="hostname")
        pending.add_column("Tags asked", key="tags")
        pending.add_column("Waiting", key="waiting")
        pending.display = False
        self.query_one("#pending-title").display = False
        table = self.query_one("#nodes", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.set_interval(AUTO_REFRESH_S, self._auto_refresh)
        table.focus()

    def _auto_refresh(self) -> None:
        if self.is_current and self.console_app.connection.ok:
            self.reload()

    # ------------------------------------------------------------------ data
    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="nodes-load")
    async def load(self) -> None:
        client = self.console_app.client
        try:
            nodes, pending = await asyncio.gather(client.nodes(), client.pending())
        except ApiError as exc:
            self.report(exc, "load the node list")
            return
        self.nodes, self.pending = nodes, pending
        self.populate()
        self.loaded.set()

    def visible_nodes(self) -> list[dict[str, Any]]:
        query = self.query_one("#search", Input).value.strip()
        rows = [n for n in self.nodes if matches(n, query)]
        rows.sort(key=SORTERS[self.sort_key], reverse=self.sort_reverse)
        return rows

    def populate(self) -> None:
        self._fill_pending()
        table = self.query_one("#nodes", DataTable)
        keep = self._cursor_key(table)
        table.clear()
        rows = self.visible_nodes()
        for n in rows:
            state = _state(n)
            style = {"online": "bold ansi_green", "offline": "", "expired": "bold ansi_red"}[state]
            table.add_row(
                n.get("name") or "-",
                n.get("ipv4") or "-",
                _owner(n),
                Text(state, style=style),
                ago(n.get("last_seen")),
                key=str(n["id"]),
            )
        arrow = "v" if self.sort_reverse else "^"
        label = dict(COLUMNS)[self.sort_key]
        query = self.query_one("#search", Input).value.strip()
        shown = f"{len(rows)} of {len(self.nodes)}" if query else str(len(self.nodes))
        self.query_one("#nodes-title", Static).update(f"Nodes ({shown}), sorted by {label} {arrow}")
        self._restore_cursor(table, keep)
        self._show_details()

    def _fill_pending(self) -> None:
        table = self.query_one("#pending", DataTable)
        keep = self._cursor_key(table)
        table.clear()
        for p in self.pending:
            table.add_row(
                p.get("hostname") or "-",
                ", ".join(p.get("requested_tags") or []) or "-",
                ago(p.get("created")),
                key=p["auth_id"],
            )
        has = bool(self.pending)
        table.display = has
        title = self.query_one("#pending-title", Static)
        title.display = has
        title.update(f"Waiting for approval ({len(self.pending)}): press a or x")
        self._restore_cursor(table, keep)
        self.refresh_bindings()

    @staticmethod
    def _cursor_key(table: DataTable[Any]) -> str | None:
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except (CellDoesNotExist, RowDoesNotExist):  # no valid cursor
            return None

    @staticmethod
    def _restore_cursor(table: DataTable[Any], key: str | None) -> None:
        if key is None:
            return
        with contextlib.suppress(RowDoesNotExist):  # the row is gone
            table.move_cursor(row=table.get_row_index(key), animate=False)

    # ------------------------------------------------------------ selection
    def selected_node(self) -> dict[str, Any] | None:
        key = self._cursor_key(self.query_one("#nodes", DataTable))
        return next((n for n in self.nodes if str(n["id"]) == key), None)

    def selected_pending(self) -> dict[str, Any] | None:
        key = self._cursor_key(self.query_one("#pending", DataTable))
        return next((p for p in self.pending if p["auth_id"] == key), None)

    def _show_details(self) -> None:
        details = self.query_one(NodeDetails)
        focused = self.focused
        if focused is not None and focused.id == "pending" and self.selected_pending():
            details.show({**(self.selected_pending() or {}), "_pending": True})
        else:
            details.show(self.selected_node())

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def on_descendant_focus(self) -> None:
        self._show_details()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.populate()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.query_one("#nodes", DataTable).focus()

    @on(DataTable.HeaderSelected, "#nodes")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, False
        self.populate()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            return True if self.pending else None
        if action in ("rename", "expire", "delete"):
            return True if self.nodes else None
        return True

    # -------------------------------------------------------------- actions
    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_sort(self) -> None:
        keys = [k for k, _ in COLUMNS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.sort_reverse = False
        self.populate()

    def focus_pending(self) -> None:
        if self.pending:
            self.query_one("#pending", DataTable).focus()

    def action_approve(self) -> None:
        p = self.selected_pending()
        if p is None:
            self.notify("No login is waiting for approval.", severity="warning")
            return

        def done(node: dict[str, Any] | None) -> None:
            if node:
                self.notify(
                    f"Approved {p.get('hostname')}: node {node.get('name')} ({node.get('ipv4')})"
                )
                self.reload()
                self.console_app.poll_status()

        self.app.push_screen(ApproveScreen(p), done)

    def action_reject(self) -> None:
        p = self.selected_pending()
        if p is None:
            self.notify("No login is waiting for approval.", severity="warning")
            return
        question = (
            f"Reject the login from {p.get('hostname')} (auth id {p['auth_id']})? "
            "The device must start a new login to try again."
        )

        def done(ok: bool | None) -> None:
            if ok:
                self.reject(p)

        self.app.push_screen(
            ConfirmScreen("Reject login", question, f"Reject {p.get('hostname')}"), done
        )

    @work(group="nodes-action")
    async def reject(self, p: dict[str, Any]) -> None:
        try:
            await self.console_app.client.reject(p["auth_id"])
        except ApiError as exc:
            self.report(exc, f"reject {p.get('hostname')}")
            return
        self.notify(f"Rejected the login from {p.get('hostname')}")
        self.reload()
        self.console_app.poll_status()

    def _need_node(self) -> dict[str, Any] | None:
        n = self.selected_node()
        if n is None:
            self.notify("Select a node first.", severity="warning")
        return n

    def action_rename(self) -> None:
        n = self._need_node()
        if n is None:
            return

        def done(node: dict[str, Any] | None) -> None:
            if node:
                self.notify(f"Renamed {n.get('name')} to {node.get('name')} ({node.get('fqdn')})")
                self.reload()

        self.app.push_screen(RenameScreen(n), done)

    def action_tags(self) -> None:
        n = self._need_node()
        if n is None:
            return

        def done(node: dict[str, Any] | None) -> None:
            if node:
                self.notify(f"Tags of {node.get('name')}: {', '.join(node.get('tags') or []) or 'none'}")
                self.reload()

        self.app.push_screen(TagsScreen(n), done)

    def action_routes(self) -> None:
        n = self._need_node()
        if n is not None:
            self.open_routes(n)

    @work(group="node-routes")
    async def open_routes(self, n: dict[str, Any]) -> None:
        try:
            routes = await self.console_app.client.node_routes(int(n["id"]))
        except ApiError as exc:
            self.report(exc, f"load the routes of {n.get('name')}")
            return
        if not routes.get("advertised") and not routes.get("approved"):
            self.notify(f"{n.get('name')} advertises no routes (tailscale up --advertise-routes=...).")
            return

        def done(r: dict[str, Any] | None) -> None:
            if r is not None:
                self.notify(f"Approved for {n.get('name')}: {', '.join(r.get('approved') or []) or 'none'}")
                self.reload()

        self.app.push_screen(RoutesScreen(n, routes), done)

    def action_expire(self) -> None:
        n = self._need_node()
        if n is None:
            return
        question = (
            f"Expire the key of node {n.get('name')} ({n.get('ipv4')})? "
            "It is disconnected and must log in again."
        )
        self.app.push_screen(
            ConfirmScreen("Expire node", question, f"Expire {n.get('name')}"),
            lambda ok: self.node_action("expire", n) if ok else None,
        )

    def action_delete(self) -> None:
        n = self._need_node()
        if n is None:
            return
        question = (
            f"Delete node {n.get('name')} ({n.get('ipv4')}, owner {_owner(n)})? "
            "It must enrol again to rejoin."
        )
        self.app.push_screen(
            ConfirmScreen("Delete node", question, f"Delete {n.get('name')}"),
            lambda ok: self.node_action("delete", n) if ok else None,
        )

    @work(group="nodes-action")
    async def node_action(self, what: str, n: dict[str, Any]) -> None:
        client = self.console_app.client
        try:
            if what == "expire":
                await client.expire_node(int(n["id"]))
            else:
                await client.delete_node(int(n["id"]))
        except ApiError as exc:
            self.report(exc, f"{what} {n.get('name')}")
            return
        self.notify(f"{'Expired' if what == 'expire' else 'Deleted'} node {n.get('name')}")
        self.reload()
        self.console_app.poll_status()
