"""Policy: the current access policy, its history, diffs, rollback, check and apply a file."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.widgets import DataTable, Static

from ..client import ApiError
from ..format import fmt, when
from ..highlight import hujson, unified_diff
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .policy_file import PolicyFileScreen
from .text_view import TextViewScreen

COMMENT_CHARS = 40  # in the history table; the whole comment is in the version view


def describe(rec: dict[str, Any]) -> str:
    """'version 3 by console:root, 2030-01-31 12:00 UTC ("comment")'."""
    text = f"version {rec.get('id')} by {fmt(rec.get('author'))}, {when(rec.get('created'))} UTC"
    if rec.get("comment"):
        text += f' ("{rec["comment"]}")'
    return text


class PolicyScreen(OutpostScreen):
    NAV = "policy"
    TITLE_TEXT = "Policy"
    HELP = """
The tailnet's access policy (ACLs, groups, tags, SSH, auto-approvers) as the
server runs it now, and every earlier version. Each change is a new version;
nothing is ever overwritten.

The console has no editor: write the policy file elsewhere (a USB stick, an
SSH session) and give its path. c checks a file: the server reports syntax
mistakes, invalid rules and failing policy tests with line and column. a
applies a file: it is checked first, then you confirm.

In the history, select a version: Enter shows its text, d shows what changed
from it to the current policy (+ lines are in the current one, - lines only in
the selected one), b rolls back to it after asking (that makes a new version
with the old text; nodes follow at once).
"""

    BINDINGS = [
        Binding("c", "check", "Check file"),
        Binding("a", "apply", "Apply file"),
        Binding("d", "diff", "Diff"),
        Binding("b", "rollback", "Roll back"),
    ]

    DEFAULT_CSS = """
    PolicyScreen #policy-info {
        height: auto;
        padding: 0 1;
        color: ansi_bright_white;
        text-style: bold;
    }
    PolicyScreen #history-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
        color: ansi_bright_white;
    }
    PolicyScreen #history {
        height: auto;
        max-height: 7;
    }
    PolicyScreen #policy-scroll {
        height: 1fr;
        border: solid ansi_white;
        border-title-color: ansi_bright_white;
    }
    PolicyScreen #policy-scroll:focus {
        border: solid ansi_bright_cyan;
    }
    PolicyScreen #policy-text {
        width: auto;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        yield Static("loading...", id="policy-info", markup=False)
        yield Static("History", id="history-title")
        yield DataTable(id="history", cursor_type="row")
        with ScrollableContainer(id="policy-scroll", can_focus=True) as scroll:
            scroll.border_title = "Current policy (Tab here to scroll it)"
            yield Static("", id="policy-text", markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#history", DataTable)
        for key, label in (
            ("id", "Version"), ("current", "Now"), ("when", "When (UTC)"),
            ("author", "Author"), ("comment", "Comment"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        table.focus()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="policy-load")
    async def load(self) -> None:
        client = self.console_app.client
        try:
            current = await client.policy()
            history = await client.policy_history()
        except ApiError as exc:
            self.report(exc, "load the policy")
            return
        self.current, self.history = current, history
        info = self.query_one("#policy-info", Static)
        text = self.query_one("#policy-text", Static)
        if current.get("id") is None:
            note = str(current.get("note") or "no policy set")
            info.update(f"{note[:1].upper()}{note[1:]}. Press a to apply a file.")
            text.update(Text("(no policy)", style="italic"))
        else:
            info.update(f"Current: {describe(current)}")
            text.update(hujson(str(current.get("text") or "")))
        table = self.query_one("#history", DataTable)
        row = table.cursor_row
        table.clear()
        for rec in reversed(history):  # newest first
            comment = str(rec.get("comment") or "")
            if len(comment) > COMMENT_CHARS:
                comment = comment[: COMMENT_CHARS - 3] + "..."
            table.add_row(
                str(rec["id"]),
                Text("current", style="bold green") if rec.get("current") else "",
                when(rec.get("created")),
                fmt(rec.get("author")),
                comment or "-",
                key=str(rec["id"]),
            )
        if history:
            table.move_cursor(row=min(max(row, 0), len(history) - 1), animate=False)
        self.query_one("#history-title", Static).update(
            f"History ({len(history)} version{'s' if len(history) != 1 else ''}): "
            "Enter view, d diff, b roll back"
        )
        self.loaded.set()

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#history", DataTable)
        if not self.history or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((r for r in self.history if str(r["id"]) == key), None)

    def _selected_old(self, doing: str) -> dict[str, Any] | None:
        rec = self.selected()
        if rec is None:
            self.notify("Select a version in the history first.", severity="warning")
            return None
        if rec.get("current"):
            self.notify(
                f"Version {rec['id']} is the current policy; select an earlier one to {doing}.",
                severity="warning",
            )
            return None
        return rec

    # ------------------------------------------------------------ history
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "history" and (rec := self.selected()) is not None:
            self.view_version(int(rec["id"]))

    @work(group="policy-view")
    async def view_version(self, version: int) -> None:
        try:
            rec = await self.console_app.client.policy_version(version)
        except ApiError as exc:
            self.report(exc, f"load policy version {version}")
            return
        self.app.push_screen(
            TextViewScreen(f"Policy {describe(rec)}", hujson(str(rec.get("text") or "")))
        )

    def action_diff(self) -> None:
        rec = self._selected_old("compare")
        if rec is not None:
            self.show_diff(int(rec["id"]), int(self.current["id"]))

    @work(group="policy-view")
    async def show_diff(self, old: int, new: int) -> None:
        try:
            diff = await self.console_app.client.policy_diff(old, new)
        except ApiError as exc:
            self.report(exc, f"compare version {old} with version {new}")
            return
        body = unified_diff(diff) if diff else Text("The two versions have the same text.")
        self.app.push_screen(
            TextViewScreen(
                f"Changes from version {old} to the current version {new}",
                body,
                "- lines: only in the older version.  + lines: in the current policy.",
            )
        )

    def action_rollback(self) -> None:
        rec = self._selected_old("roll back to")
        if rec is None:
            return
        version = int(rec["id"])
        question = (
            f"Roll the policy back to {describe(rec)}? "
            f"It replaces the current version {self.current.get('id')} as a new version; "
            "every node's access follows at once."
        )
        self.app.push_screen(
            ConfirmScreen("Roll back the policy", question, f"Roll back to {version}"),
            lambda ok: self.rollback(version) if ok else None,
        )

    @work(group="policy-change")
    async def rollback(self, version: int) -> None:
        try:
            rec = await self.console_app.client.policy_rollback(version)
        except ApiError as exc:
            self.report(exc, f"roll back to policy version {version}")
            return
        self.notify(f"Rolled back: version {rec['id']} has the text of version {version}.")
        self.reload()

    # ---------------------------------------------------------- files
    def action_check(self) -> None:
        def done(result: dict[str, Any] | None) -> None:
            if result:
                self.notify(
                    f"{result['path']}: {result['check'].get('message', 'valid')}. "
                    "Nothing was changed; press a to apply it.",
                    title="Policy file is valid",
                )

        self.app.push_screen(PolicyFileScreen(apply=False), done)

    def action_apply(self) -> None:
        def checked(result: dict[str, Any] | None) -> None:
            if not result:
                return
            lines = len(result["text"].splitlines())
            cur = self.current.get("id")
            replaces = f"the current version {cur}" if cur is not None else "no policy (allow all)"
            question = (
                f"Apply the policy in {result['path']} ({lines} lines, checked valid)? "
                f"It replaces {replaces}; every node's access follows at once."
            )
            self.app.push_screen(
                ConfirmScreen("Apply policy file", question, "Apply"),
                lambda ok: self.apply_file(result) if ok else None,
            )

        self.app.push_screen(PolicyFileScreen(apply=True), checked)

    @work(group="policy-change")
    async def apply_file(self, result: dict[str, Any]) -> None:
        try:
            rec = await self.console_app.client.set_policy(result["text"], result["comment"])
        except ApiError as exc:
            self.report(exc, f"apply {result['path']}")
            return
        self.notify(f"Applied {result['path']} as policy version {rec['id']}.")
        self.reload()
