"""The Policy, Audit and Certificates screens driven with Pilot against a real server.

Kept in their own file (not test_screens.py) so branches adding other screens
do not collide in one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from outpost_tui.screens import audit as audit_screen
from outpost_tui.screens.audit import AuditScreen
from outpost_tui.screens.certs import CertsScreen
from outpost_tui.screens.confirm import ConfirmScreen
from outpost_tui.screens.policy import PolicyScreen
from outpost_tui.screens.policy_file import PolicyFileScreen
from outpost_tui.screens.revoke_form import RevokeReasonScreen
from outpost_tui.screens.text_view import TextViewScreen

from .conftest import Server, wait_text, wait_until
from .test_screens import notified, rows

OPEN = (
    '{\n  // everyone, everywhere\n'
    '  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],\n}\n'
)
SSH_ONLY = '{\n  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}],\n}\n'
# Line 3 lacks a comma; the server says where.
BROKEN = '{\n  "acls": [\n    {"action": "accept" "src": ["*"], "dst": ["*:22"]},\n  ],\n}\n'
# Valid syntax, but a port no rule can have: refused without a position.
BAD_PORT = '{\n  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:99999"]}],\n}\n'


async def open_screen(app: Any, pilot: Any, key: str, cls: type) -> Any:
    await wait_until(pilot, lambda: app.connection.ok is True, what="connected")
    await pilot.press(key)
    await wait_until(
        pilot, lambda: isinstance(app.screen, cls) and app.screen.loaded.is_set(), what=cls.__name__
    )
    return app.screen


def form_error(dialog: Any) -> str:
    return str(dialog.query_one("#form-error").render())


def current_policy(server: Server) -> Any:
    return server.store.current_policy()


# ------------------------------------------------------------------- policy
async def test_policy_shows_text_history_and_diff_and_cancelled_rollback_changes_nothing(
    server: Server, make_app: Any
) -> None:
    server.store.save_policy(OPEN, "cli:alice", "first")
    server.store.save_policy(SSH_ONLY, "cli:bob", "ssh only")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_screen(app, pilot, "5", PolicyScreen)
        text = await wait_text(pilot, app, "Current: version 2 by cli:bob", '"dst": ["*:22"]')
        assert "History (2 versions)" in text and "ssh only" in text
        table = screen.query_one("#history", DataTable)
        assert [r[0] for r in rows(table)] == ["2", "1"]  # newest first
        # d on the current version explains itself instead of an empty diff
        await pilot.press("d")
        await notified(pilot, app, "Version 2 is the current policy")
        table.move_cursor(row=1)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, TextViewScreen), what="diff")
        text = await wait_text(pilot, app, "Changes from version 1 to the current version 2")
        assert "-  // everyone, everywhere" in text and '+  "acls": [{"action"' in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        # enter shows the selected version's text
        await pilot.press("enter")
        await wait_text(pilot, app, "Policy version 1 by cli:alice", "// everyone, everywhere")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        # rollback: the question names the version; cancelling changes nothing
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Roll the policy back to version 1 by cli:alice" in app.screen.question
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.pause(0.3)
        assert current_policy(server).id == 2 and len(server.store.policy_history()) == 2
        # confirmed: a new version with the old text, by the console's actor
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: current_policy(server).id == 3, what="rolled back")
        assert current_policy(server).text == OPEN
        assert current_policy(server).author.startswith("console")
        await wait_until(pilot, lambda: table.row_count == 3)
        await wait_text(pilot, app, "rollback to version 1")


async def test_policy_file_check_reports_line_and_column_and_apply_asks_first(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    broken, good = tmp_path / "broken.hujson", tmp_path / "good.hujson"
    bad_port = tmp_path / "port.hujson"
    broken.write_text(BROKEN)
    bad_port.write_text(BAD_PORT)
    good.write_text(SSH_ONLY)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_screen(app, pilot, "5", PolicyScreen)
        await wait_text(pilot, app, "No policy set")
        # check: a missing file is caught in the console
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyFileScreen))
        dialog = app.screen
        await pilot.press(*str(tmp_path / "nope.hujson"), "enter")
        await wait_text(pilot, app, "No such file")
        # an invalid policy: the server's message with line and column, path kept
        dialog.query_one("#path").value = str(broken)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "Refused" in str(dialog.query_one("#form-error").render()))
        error = str(dialog.query_one("#form-error").render())
        assert "line 3, column 25" in error, error
        assert app.screen is dialog and dialog.query_one("#path").value == str(broken)
        dialog.query_one("#path").value = str(bad_port)
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: "port out of range" in str(dialog.query_one("#form-error").render())
        )
        # a valid one: checked, nothing applied
        dialog.query_one("#path").value = str(good)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen)
        await notified(pilot, app, "Nothing was changed")
        assert current_policy(server) is None
        # apply: refused file first, then a good one with a confirmation naming it
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyFileScreen))
        dialog = app.screen
        await pilot.press(*str(broken), "tab", *"lock down", "enter")
        await wait_until(
            pilot, lambda: "line 3, column" in str(dialog.query_one("#form-error").render())
        )
        dialog.query_one("#path").value = str(good)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Apply the policy in {good} (3 lines" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: current_policy(server) is not None, what="applied")
        rec = current_policy(server)
        assert rec.text == SSH_ONLY and rec.comment == "lock down"
        await notified(pilot, app, f"Applied {good} as policy version 1")
        await wait_text(pilot, app, "Current: version 1", '"lock down"')


async def test_policy_screen_reports_the_server_going_away(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    good = tmp_path / "good.hujson"
    good.write_text(SSH_ONLY)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_screen(app, pilot, "5", PolicyScreen)
        await server.stop()
        await wait_text(pilot, app, "SERVER UNREACHABLE")
        await pilot.press("r")
        await notified(pilot, app, "Could not load the policy")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PolicyFileScreen))
        await pilot.press(*str(good), "enter")
        await wait_text(pilot, app, "Server unreachable")
        assert app.screen.query_one("#path").value == str(good)  # kept for another try


# -------------------------------------------------------------------- audit
async def test_audit_pages_filters_shows_details_and_verifies(
    server: Server, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_screen, "PAGE", 4)
    app = make_app()
    async with app.run_test(size=(120, 32)) as pilot:
        client = app.client
        for name in ("ann", "ben", "cat"):
            await client.create_user(name)
        last = server.server.audit_log.last_seq  # type: ignore[union-attr]
        screen = await open_screen(app, pilot, "8", AuditScreen)
        table = screen.query_one("#audit", DataTable)
        assert [int(r[0]) for r in rows(table)] == [last, last - 1, last - 2, last - 3]
        assert rows(table)[0][3] == "user.create" and rows(table)[0][2].startswith("console")
        await wait_text(
            pilot, app, f"{last} entries in the log; loaded entries {last - 3} to {last}"
        )
        # older pages until the first entry
        while int(rows(table)[-1][0]) > 1:
            n = table.row_count
            await pilot.press("o")
            await wait_until(pilot, lambda n=n: table.row_count > n, what="older page")
        assert [int(r[0]) for r in rows(table)] == list(range(last, 0, -1))
        await pilot.press("o")
        await notified(pilot, app, "entry 1 is the first")
        # filter over actor/action/details
        await pilot.press("slash", *"user ben")
        await wait_until(pilot, lambda: table.row_count == 1)
        assert "user=ben" in rows(table)[0][4]
        await pilot.press("enter")  # back to the table
        assert app.focused is table
        await pilot.press("enter")  # the entry in full
        await wait_until(pilot, lambda: isinstance(app.screen, TextViewScreen))
        await wait_text(pilot, app, "Audit entry", '"user": "ben"', "Hash")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.press("slash", "ctrl+u", "enter")
        await wait_until(pilot, lambda: table.row_count == last)
        # verify: ok, and the dashboard tile follows
        await pilot.press("v")
        await wait_text(pilot, app, f"Chain verified: {last} entries")
        await pilot.press("1")
        await wait_text(pilot, app, f"intact up to entry {last}")


async def test_audit_verify_names_the_first_bad_entry(server: Server, make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await app.client.create_user("mallory")
        log_path = server.data_dir / "audit" / "audit.log"
        raw = log_path.read_bytes()
        with log_path.open("r+b") as f:  # same length: only the hash chain can tell
            f.seek(raw.index(b"mallory"))
            f.write(b"MALLORY")
        bad = server.server.audit_log.last_seq  # type: ignore[union-attr]
        screen = await open_screen(app, pilot, "8", AuditScreen)
        await pilot.press("v")
        await wait_text(pilot, app, f"CHAIN BROKEN: entry {bad}: hash does not match")
        assert screen.verdict["first_bad_seq"] == bad
        table = screen.query_one("#audit", DataTable)
        assert rows(table)[table.cursor_row][0] == str(bad)  # the cursor is on it
        assert "bright_red" in str(table.get_row_at(table.cursor_row)[0].style)
        await pilot.press("1")
        await wait_text(pilot, app, f"BROKEN at entry {bad}")


# ------------------------------------------------------------- certificates
async def test_certs_screen_renews_and_revokes_with_confirmations(
    server: Server, make_app: Any
) -> None:
    certs = server.server.certs  # type: ignore[union-attr]
    first = certs.files.serial
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_screen(app, pilot, "9", CertsScreen)
        text = await wait_text(pilot, app, "Server certificate", "396 days left", "Root CA")
        assert "7304 days left" in text and "Issuing CA" in text and "not kept" in text
        table = screen.query_one("#issued", DataTable)
        assert [r[1] for r in rows(table)] == ["server", "intermediate"]
        # renew: cancelled, then confirmed
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Replace the server certificate {first}" in app.screen.question
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.pause(0.3)
        assert certs.files.serial == first
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: certs.files.serial != first, what="renewed")
        second = certs.files.serial
        await notified(pilot, app, f"New server certificate {second}")
        await wait_until(pilot, lambda: table.row_count == 3)
        # revoke the first (superseded) leaf: reason, then a question naming it
        table.move_cursor(row=1)
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, RevokeReasonScreen))
        await pilot.press("ctrl+u", *"bored", "enter")
        await wait_text(pilot, app, "Unknown reason")
        await pilot.press("ctrl+u", *"key-compromise", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert (
            f"certificate {first}" in app.screen.question
            and "key-compromise" in app.screen.question
        )
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.pause(0.3)
        assert not any(c["revoked"] for c in certs.issued())
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, RevokeReasonScreen))
        await pilot.press("ctrl+u", *"key-compromise", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await notified(pilot, app, f"Revoked certificate {first} (key-compromise)")
        assert [c["serial"] for c in certs.issued() if c["revoked"]] == [first]
        assert certs.files.serial == second  # not the served one: nothing replaced
        await wait_until(pilot, lambda: "revoked" in [r[2] for r in rows(table)])
        # the issuing CA cannot be revoked from here, and says where to go
        table.move_cursor(row=table.row_count - 1)
        await pilot.press("x")
        await notified(pilot, app, "outpost ca renew --intermediate")
        # the root certificate, public, with its fingerprint and the CLI export hint
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, TextViewScreen))
        text = await wait_text(pilot, app, "BEGIN CERTIFICATE", "SHA-256", "outpost ca export-root")
        fp = certs.status().root.sha256
        assert fp[:47] in text and fp[48:] in text  # on two lines, to fit 80 columns


async def test_dashboard_certificate_tile_is_live(server: Server, make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        text = await wait_text(pilot, app, "server: 396 days left", "root CA: 7304 days left")
        assert "% used" in text and "not verified yet" in text
        assert "not available yet" not in text
