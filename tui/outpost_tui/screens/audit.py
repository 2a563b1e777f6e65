"""Audit log: who did what, newest first, page by page; filter; verify the hash chain."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import RowDoesNotExist

from ..client import ApiError
from ..format import when
from ..widgets.safe import SafeInput
from .base import OutpostScreen
from .export_media import ExportField, ExportToMediaScreen
from .form import InvalidForm
from .text_view import TextViewScreen

PAGE = 100  # entries per request
MAX_PAGE = 1000  # the server's limit per request (api/audit.py MAX_AUDIT_PAGE)
DETAILS_CHARS = 70  # in the table; Enter shows everything


def details_summary(details: dict[str, Any]) -> str:
    """'user=alice, version=3' cut to fit a table cell."""
    text = ", ".join(
        f"{k}={v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v)}"
        for k, v in details.items()
    )
    return text if len(text) <= DETAILS_CHARS else text[: DETAILS_CHARS - 3] + "..."


def entry_matches(e: dict[str, Any], query: str) -> bool:
    """Every word of the query appears in the actor, action or details."""
    if not query.strip():
        return True
    hay = " ".join(
        (str(e.get("actor", "")), str(e.get("action", "")), json.dumps(e.get("details", {})))
    ).lower()
    return all(word in hay for word in query.lower().split())


class AuditScreen(OutpostScreen):
    NAV = "audit"
    TITLE_TEXT = "Audit log"
    HELP = f"""
Every administrative action and server event, in a tamper-evident chain: each
entry carries the hash of the one before, and the server signs checkpoints of
the chain's head. The newest {PAGE} entries are shown first; o loads {PAGE} older.

/ filters the loaded entries (words match the actor, the action and the
details). Enter shows the selected entry in full, with its hash.

v verifies the whole chain on the server: every entry's hash and link and every
signed checkpoint. A broken chain names the first entry that fails, in red; the
dashboard's Audit chain tile shows the last result.

e exports a range of entries to a USB stick as a signed audit-export bundle
(from the first entry given to the last, or the newest): the USB watcher
writes it, reads it back and verifies it as `outpost-audit-verify` would.
`outpost audit show`, `verify` and `export` on the box use the same log.
"""

    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("o", "older", "Older"),
        Binding("v", "verify", "Verify chain"),
        Binding("e", "export", "Export to USB"),
    ]

    DEFAULT_CSS = """
    AuditScreen #audit-filter {
        border: none;
        height: 1;
        padding: 0 1;
        background: ansi_black;
    }
    AuditScreen #audit-filter:focus {
        background: ansi_blue;
    }
    AuditScreen #audit-summary, AuditScreen #audit-verify {
        height: auto;
        padding: 0 1;
    }
    AuditScreen #audit {
        height: 1fr;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[dict[str, Any]] = []  # newest first
        self.last_seq = 0
        self.verdict: dict[str, Any] | None = None
        self.loaded = asyncio.Event()

    def compose_body(self) -> ComposeResult:
        yield SafeInput(placeholder="/ to filter: actor, action, details", id="audit-filter")
        yield Static("loading...", id="audit-summary", markup=False)
        yield Static("Chain not verified yet: press v.", id="audit-verify", markup=False)
        yield DataTable(id="audit", cursor_type="row")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#audit", DataTable)
        for key, label in (
            ("seq", "Seq"), ("time", "Time (UTC)"), ("actor", "Actor"),
            ("action", "Action"), ("details", "Details"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        table.focus()

    # ------------------------------------------------------------ loading
    def reload(self) -> None:
        """The newest entries, as far back as the admin had paged (coming back
        from an entry's details must not lose the older pages)."""
        self.load(int(self.entries[-1]["seq"]) if self.entries else 0)

    @work(exclusive=True, group="audit-load")
    async def load(self, oldest: int = 0) -> None:
        client = self.console_app.client
        try:
            if oldest > 0:
                limit = min(MAX_PAGE, self.last_seq - oldest + 1 + PAGE)
                page = await client.audit(oldest, limit)
                if page.get("entries") and page["entries"][-1]["seq"] < page.get("last_seq", 0):
                    page = await client.audit(0, PAGE)  # too much new: start again at the top
            else:
                page = await client.audit(0, PAGE)
        except ApiError as exc:
            self.report(exc, "load the audit log")
            return
        self.last_seq = int(page.get("last_seq") or 0)
        self.entries = list(reversed(page.get("entries") or []))
        self.show()
        self.loaded.set()

    def action_older(self) -> None:
        if not self.entries:
            return
        first = int(self.entries[-1]["seq"])
        if first <= 1:
            self.notify("All entries are loaded: entry 1 is the first.")
            return
        self.load_older(max(1, first - PAGE), first - max(1, first - PAGE))

    @work(exclusive=True, group="audit-load")
    async def load_older(self, start: int, limit: int) -> None:
        try:
            page = await self.console_app.client.audit(start, limit)
        except ApiError as exc:
            self.report(exc, "load older audit entries")
            return
        self.entries.extend(reversed(page.get("entries") or []))
        self.show()
        self.notify(f"Loaded entries {start} to {start + limit - 1}.")

    def show(self) -> None:
        query = self.query_one("#audit-filter", SafeInput).value
        shown = [e for e in self.entries if entry_matches(e, query)]
        table = self.query_one("#audit", DataTable)
        keep = self.selected()
        table.clear()
        bad = (self.verdict or {}).get("first_bad_seq") if self.verdict else None
        for e in shown:
            style = "bold bright_red" if bad is not None and e["seq"] == bad else ""
            table.add_row(
                Text(str(e["seq"]), style=style),
                when(e.get("time")),
                str(e.get("actor", "")),
                Text(str(e.get("action", "")), style=style),
                details_summary(e.get("details") or {}),
                key=str(e["seq"]),
            )
        if keep is not None and any(e["seq"] == keep["seq"] for e in shown):
            table.move_cursor(row=table.get_row_index(str(keep["seq"])), animate=False)
        loaded = (
            f"entries {self.entries[-1]['seq']} to {self.entries[0]['seq']}"
            if self.entries
            else "none"
        )
        summary = f"{self.last_seq} entries in the log; loaded {loaded} (newest first)"
        if query.strip():
            summary += f"; {len(shown)} match the filter"
        self.query_one("#audit-summary", Static).update(summary)

    @on(Input.Changed, "#audit-filter")
    def filter_changed(self) -> None:
        self.show()

    @on(Input.Submitted, "#audit-filter")
    def filter_done(self) -> None:
        self.query_one("#audit", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#audit-filter", SafeInput).focus()

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#audit", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((e for e in self.entries if str(e["seq"]) == key), None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        e = self.selected()
        if e is None:
            return
        body = Text()
        for label, value in (
            ("Seq", e["seq"]), ("Time", f"{when(e.get('time'))} UTC ({e.get('time')})"),
            ("Actor", e.get("actor")), ("Action", e.get("action")), ("Hash", e.get("hash")),
        ):  # fmt: skip
            body.append(f"{label:<8}", style="bold")
            body.append(f"{value}\n")
        body.append("Details\n", style="bold")
        body.append(json.dumps(e.get("details") or {}, indent=2, sort_keys=True))
        self.app.push_screen(TextViewScreen(f"Audit entry {e['seq']}", body))

    # ------------------------------------------------------------- verify
    def action_verify(self) -> None:
        self.query_one("#audit-verify", Static).update("Verifying the whole chain...")
        self.verify()

    @work(exclusive=True, group="audit-verify")
    async def verify(self) -> None:
        try:
            verdict = await self.console_app.client.audit_verify()
        except ApiError as exc:
            self.query_one("#audit-verify", Static).update("Chain not verified (see the notice).")
            self.report(exc, "verify the audit chain")
            return
        self.verdict = verdict
        line = Text()
        if verdict.get("ok"):
            line.append("Chain verified: ", style="bold bright_green")
            line.append(
                f"{verdict.get('entries')} entries, {verdict.get('checkpoints')} signed "
                f"checkpoints, head {str(verdict.get('head', ''))[:16]}..."
            )
            self.notify("The audit chain verifies.", title="Audit chain intact")
        else:
            bad = verdict.get("first_bad_seq")
            line.append("CHAIN BROKEN: ", style="bold bright_red")
            line.append(str(verdict.get("error")), style="bright_red")
            if bad is not None:
                line.append(" (its row is red)" if self._loaded(bad) else " (press o to load it)")
            self.notify(str(verdict.get("error")), title="Audit chain BROKEN", severity="error")
        self.query_one("#audit-verify", Static).update(line)
        self.show()
        bad = verdict.get("first_bad_seq")
        if bad is not None and self._loaded(bad):
            table = self.query_one("#audit", DataTable)
            table.move_cursor(row=table.get_row_index(str(bad)), animate=False)

    def _loaded(self, seq: int) -> bool:
        try:
            self.query_one("#audit", DataTable).get_row_index(str(seq))
        except RowDoesNotExist:  # filtered out, or not loaded yet
            return False
        return True

    # ------------------------------------------------------------ export
    def action_export(self) -> None:
        newest = self.last_seq

        def build(values: dict[str, str]) -> dict[str, Any]:
            return audit_range(values["from"], values["until"], newest)

        self.app.push_screen(
            ExportToMediaScreen(
                "Audit log to USB",
                "audit-export",
                "a signed export of the audit log",
                (
                    ExportField("from", "First entry", "1"),
                    ExportField("until", f"Last entry (empty: the newest, now {newest})"),
                ),
                build=build,
                note="A signed audit-export bundle; auditors check it anywhere with "
                "outpost-audit-verify and this appliance's audit key.",
            )
        )


def audit_range(first: str, last: str, newest: int) -> dict[str, Any]:
    """{'from': N, 'to': M or None} from what was typed, or InvalidForm saying why."""
    try:
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        raise InvalidForm("Entries are numbers: the first entry, and the last or nothing.") from None
    if start < 1 or (end is not None and end < start) or (newest and start > newest):
        raise InvalidForm(f"Give a range inside 1..{newest or 'the newest'} with first <= last.")
    return {"from": start, "to": end}
