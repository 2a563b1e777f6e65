"""Users: list, create, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ..client import ApiError
from ..format import fmt, when
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .user_form import UserFormScreen


class UsersScreen(OutpostScreen):
    NAV = "users"
    TITLE_TEXT = "Users"
    HELP = """
The users of the tailnet. Nodes and enrolment keys belong to a user (or carry
tags instead). Press c to create a user. d deletes the selected user and
their enrolment keys after asking; the server refuses while the user still
owns nodes (delete or re-own those first).
"""

    BINDINGS = [
        Binding("c", "create", "Create"),
        Binding("d,delete", "delete", "Delete"),
    ]

    DEFAULT_CSS = """
    UsersScreen #users-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: ansi_bright_white;
    }
    UsersScreen #users {
        height: 1fr;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.users: list[dict[str, Any]] = []
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        yield Static("Users", id="users-title")
        yield DataTable(id="users", cursor_type="row")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#users", DataTable)
        for key, label in (
            ("id", "ID"),
            ("name", "Name"),
            ("display", "Display name"),
            ("created", "Created"),
        ):
            table.add_column(label, key=key)
        table.focus()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="users-load")
    async def load(self) -> None:
        try:
            self.users = await self.console_app.client.users()
        except ApiError as exc:
            self.report(exc, "load the users")
            return
        table = self.query_one("#users", DataTable)
        row = table.cursor_row
        table.clear()
        for u in self.users:
            table.add_row(
                str(u["id"]),
                u["name"],
                fmt(u.get("display_name")),
                when(u.get("created")),
                key=u["name"],
            )
        if self.users:
            table.move_cursor(row=min(row, len(self.users) - 1), animate=False)
        self.query_one("#users-title", Static).update(
            f"Users ({len(self.users)}): c create, d delete"
        )
        self.loaded.set()

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#users", DataTable)
        if not self.users or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((u for u in self.users if u["name"] == key), None)

    def action_create(self) -> None:
        def done(user: dict[str, Any] | None) -> None:
            if user:
                self.notify(f"Created user {user['name']}")
                self.reload()

        self.app.push_screen(UserFormScreen(), done)

    def action_delete(self) -> None:
        u = self.selected()
        if u is None:
            self.notify("Select a user first.", severity="warning")
            return
        question = (
            f"Delete user {u['name']} and their enrolment keys? "
            "The server refuses while the user owns nodes."
        )
        self.app.push_screen(
            ConfirmScreen("Delete user", question, f"Delete {u['name']}"),
            lambda ok: self.delete_user(u) if ok else None,
        )

    @work(group="users-action")
    async def delete_user(self, u: dict[str, Any]) -> None:
        try:
            await self.console_app.client.delete_user(u["name"])
        except ApiError as exc:
            self.report(exc, f"delete user {u['name']}")
            return
        self.notify(f"Deleted user {u['name']}")
        self.reload()
