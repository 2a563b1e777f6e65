"""Backups: readiness, schedule, the local backups, run one now with progress, verify, prune."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, ProgressBar, Static

from ..client import ApiError
from ..format import size
from .base import OutpostScreen
from .confirm import ConfirmScreen
from .restore import RestoreScreen

JOB_POLL_S = 0.5


def _utc(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


class BackupsScreen(OutpostScreen):
    NAV = "backups"
    TITLE_TEXT = "Backups"
    HELP = """
Encrypted backups of the whole site state: nodes, keys, addresses, policy,
CA material, trust store and the audit log. Each backup is sealed to the
recovery keys listed at the top; their private halves live offline, so this
appliance cannot read its own backups (unless a passphrase is set).

b makes a backup now and reads it back; v checks the selected backup's
signature and digests (no key needed); p applies the retention policy after
showing what it would delete. Scheduled backups run daily at the time shown.

R (shift-r) restores the selected backup: give the recovery key file (from
the key holder's stick) or the passphrase; the server checks the backup in
full, then restarts and swaps the state in, keeping the old one aside.
outpost backup drill proves a backup without touching anything.
"""

    BINDINGS = [
        Binding("b", "backup_now", "Back up now"),
        Binding("v", "verify", "Verify"),
        Binding("p", "prune", "Prune"),
        Binding("R", "restore", "Restore"),
    ]

    DEFAULT_CSS = """
    BackupsScreen #backup-summary {
        height: auto;
        padding: 0 1;
    }
    BackupsScreen #backup-progress {
        padding: 0 1;
        height: 1;
    }
    BackupsScreen #backup-progress.-idle {
        display: none;
    }
    BackupsScreen #backups {
        height: 1fr;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}
        self.loaded = asyncio.Event()
        self.last_job: dict[str, Any] | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("loading...", id="backup-summary", markup=False)
        yield ProgressBar(id="backup-progress", total=100, show_eta=False, classes="-idle")
        yield DataTable(id="backups", cursor_type="row")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#backups", DataTable)
        for key, label in (
            ("name", "Backup"), ("created", "Made (UTC)"), ("size", "Size"),
            ("schema", "Schema"), ("by", "Appliance"), ("label", "Label"),
        ):  # fmt: skip
            table.add_column(label, key=key)
        table.focus()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="backups-load")
    async def load(self) -> None:
        client = self.console_app.client
        try:
            self.state = await client.backup_status()
            self.items = await client.backups()
        except ApiError as exc:
            self.report(exc, "load the backups")
            return
        self.query_one("#backup-summary", Static).update(self.summary())
        table = self.query_one("#backups", DataTable)
        row = table.cursor_row
        table.clear()
        for b in reversed(self.items):  # newest first
            if not b.get("ok"):
                table.add_row(b["name"], Text("UNREADABLE", style="bold red"), size(b.get("size")),
                              "-", "-", b.get("error", ""), key=b["name"])  # fmt: skip
                continue
            table.add_row(
                b["name"], _utc(b.get("created")), size(b.get("size")), str(b.get("schema", "-")),
                "this one" if b.get("own") else str(b.get("appliance", "?")), b.get("label") or "-",
                key=b["name"],
            )  # fmt: skip
        if self.items:
            table.move_cursor(row=min(row, len(self.items) - 1), animate=False)
        running = self.state.get("running")
        if running and not self.workers_in("backup-run"):
            self.follow(running)
        self.loaded.set()

    def workers_in(self, group: str) -> bool:
        return any(w.group == group and not w.is_finished for w in self.workers)

    def summary(self) -> Text:
        s = self.state.get("settings") or {}
        sched = s.get("schedule") or {}
        ret = s.get("retention") or {}
        opens = [r["id"] + (f" ({r['label']})" if r.get("label") else "") for r in s.get("recipients", [])]
        if s.get("passphrase"):
            opens.append("passphrase")
        t = Text()
        if not s.get("ready"):
            t.append("NOT READY: no recovery key. Create one offline (outpost backup keygen) and add\n"
                     "its public key: outpost backup recipients add opr1:...\n", style="bold yellow")  # fmt: skip
        # One segment per line: Textual drops the spaces where two styled segments meet.
        when = f"daily at {sched.get('time')} UTC" if sched.get("enabled") else "off"
        t.append(
            f"Schedule: {when}   Keep: {ret.get('daily')} daily, {ret.get('weekly')} weekly, "
            f"{ret.get('monthly')} monthly\n"
        )
        t.append("Opens with: " + (", ".join(opens) or "nothing") + "\n")
        runs = self.state.get("runs") or []
        if runs:
            last = runs[-1]
            if last.get("ok"):
                t.append(f"Last run {_utc(last.get('started'))}: ok ({last.get('name')})", style="green")
            else:
                t.append(f"Last run {_utc(last.get('started'))}: FAILED: {last.get('error')}", style="bold red")
        else:
            t.append("No backup has run on this appliance yet.")
        return t

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#backups", DataTable)
        if not self.items or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((b for b in self.items if b["name"] == key), None)

    # ------------------------------------------------------------ actions
    def action_backup_now(self) -> None:
        if self.workers_in("backup-run"):
            self.notify("A backup is already running.", severity="warning")
            return
        self.start_backup()

    @work(group="backup-start")
    async def start_backup(self) -> None:
        try:
            job = await self.console_app.client.backup_run("console")
        except ApiError as exc:
            self.report(exc, "start a backup")
            return
        self.notify("Backup started.")
        self.follow(job)

    @work(group="backup-run")
    async def follow(self, job: dict[str, Any]) -> None:
        bar = self.query_one("#backup-progress", ProgressBar)
        bar.remove_class("-idle")
        try:
            while job.get("finished") is None:
                total = int(job.get("total") or 0)
                bar.update(total=total or None, progress=int(job.get("done") or 0))
                await asyncio.sleep(JOB_POLL_S)
                try:
                    job = await self.console_app.client.backup_job(job["id"])
                except ApiError as exc:
                    self.report(exc, "follow the backup")
                    return
        finally:
            bar.add_class("-idle")
        self.last_job = job
        if job.get("ok"):
            r = job.get("result") or {}
            self.notify(f"Backup written and read back: {r.get('name')} ({size(r.get('body_bytes'))})",
                        title="Backup done")  # fmt: skip
        else:
            self.notify(f"Backup failed: {job.get('error')}", title="Backup failed", severity="error")
        self.reload()

    def action_verify(self) -> None:
        b = self.selected()
        if b is None:
            self.notify("Select a backup first.", severity="warning")
            return
        self.verify(b["name"])

    @work(group="backup-verify")
    async def verify(self, name: str) -> None:
        try:
            r = await self.console_app.client.backup_verify(name)
        except ApiError as exc:
            self.notify(f"{name}: {exc.message}", title="Backup does NOT verify", severity="error")
            return
        who = "this appliance" if r.get("own") else f"appliance {r.get('appliance')}"
        self.notify(f"{name}: signature and digests verify (made by {who}).", title="Backup intact")

    def action_restore(self) -> None:
        b = self.selected()
        if b is None or not b.get("ok"):
            self.notify("Select a readable backup first.", severity="warning")
            return
        question = (
            f"Restore {b['name']} (made {_utc(b.get('created'))})? Every node, key, policy and the "
            "audit log go back to that moment; the server restarts."
        )

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.app.push_screen(RestoreScreen(b), self.restored)

        self.app.push_screen(ConfirmScreen("Restore backup", question, f"Restore {b['name'][:24]}"), confirmed)

    def restored(self, doc: dict[str, Any] | None) -> None:
        if doc:
            checks = (doc.get("report") or {}).get("checks") or []
            self.notify(
                f"{doc.get('backup')} checked ({len(checks)} checks passed); the server is restarting "
                "to put it in place.",
                title="Restore prepared",
                timeout=15,
            )

    def action_prune(self) -> None:
        self.prune_preview()

    @work(group="backup-prune")
    async def prune_preview(self) -> None:
        try:
            names = await self.console_app.client.backup_prune(dry_run=True)
        except ApiError as exc:
            self.report(exc, "work out what retention would delete")
            return
        if not names:
            self.notify("Retention keeps every backup; nothing to delete.")
            return
        question = f"Delete {len(names)} backup(s) the retention policy no longer keeps?\n" + "\n".join(names[:10])
        if len(names) > 10:
            question += f"\n... and {len(names) - 10} more"
        self.app.push_screen(
            ConfirmScreen("Prune backups", question, f"Delete {len(names)}"),
            lambda ok: self.prune() if ok else None,
        )

    @work(group="backup-prune")
    async def prune(self) -> None:
        try:
            names = await self.console_app.client.backup_prune(dry_run=False)
        except ApiError as exc:
            self.report(exc, "prune backups")
            return
        self.notify(f"Deleted {len(names)} backup(s).")
        self.reload()
