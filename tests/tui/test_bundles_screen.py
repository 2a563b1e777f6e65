"""The USB bundles screen against a real server: list, details, approve and reject (confirmed)."""

from __future__ import annotations

from outpost_tui.client import console_actor

import json
import time
from typing import Any

from textual.widgets import DataTable, Static

from outpost_server.bundles.service import Medium
from outpost_tui.screens.bundles import BundlesScreen, RejectScreen
from outpost_tui.screens.confirm import ConfirmScreen
from tests.bundle_env import policy_bundle, trust_doc

from .conftest import Server, wait_until


def stage(server: Server, *files: tuple[str, bytes]) -> list[int]:
    svc = server.server.bundles  # type: ignore[union-attr]
    if svc.trust() is None:
        svc.init_trust(json.dumps(trust_doc()).encode(), "console:root")
    out = svc.intake_files(list(files), Medium(label="STICK"), "usb-watcher")
    return [b.id for b in out.staged] + [b.id for b in out.rejected]


def good(server: Server, seq: int) -> bytes:
    now = int(time.time())
    app_id = server.server.appliance_id  # type: ignore[union-attr]
    return policy_bundle(seq, "A", "B", appliance=app_id, created=now - 60, expires=now + 3600)


async def open_bundles(app: Any, pilot: Any) -> BundlesScreen:
    await pilot.press("6")
    await wait_until(
        pilot,
        lambda: isinstance(app.screen, BundlesScreen) and app.screen.loaded.is_set(),
        what="bundles screen",
    )
    return app.screen  # type: ignore[no-any-return]


async def test_approve_asks_then_applies_and_rejected_files_show_why(
    server: Server, make_app: Any
) -> None:
    bid, bad = stage(server, ("policy.opb", good(server, 1)), ("bad.opb", b"garbage"))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_bundles(app, pilot)
        table = screen.query_one("#bundles", DataTable)
        assert table.row_count == 2
        row = [str(c) for c in table.get_row_at(0)]  # newest first: the rejected file
        assert row[:2] == [str(bad), "rejected"]
        assert row[7].startswith("truncated: header needs 17 bytes")
        await pilot.press("x")  # not staged: nothing to reject
        assert not isinstance(app.screen, RejectScreen)
        await pilot.press("down")
        await wait_until(
            pilot,
            lambda: screen.current is not None and screen.current["id"] == bid,
            what="details",
        )
        text = str(screen.query_one("#bundle-details", Static).render())
        assert "Policy change:" in text
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Apply policy bundle {bid}" in app.screen.question
        await pilot.press("n")  # cancelled: nothing applied
        await wait_until(pilot, lambda: app.screen is screen)
        assert server.store.current_policy() is None
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: server.store.current_policy() is not None, what="apply")
        await wait_until(
            pilot, lambda: "applied" in [str(c) for c in table.get_row_at(1)][1], what="refresh"
        )
        entries = server.server.audit_log.entries()  # type: ignore[union-attr]
        assert [e.actor for e in entries if e.action == "bundle.apply"] == [console_actor()]


async def test_reject_needs_a_reason_and_records_it(server: Server, make_app: Any) -> None:
    [bid] = stage(server, ("policy.opb", good(server, 2)))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_bundles(app, pilot)
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, RejectScreen))
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: "Give a reason" in str(app.screen.query_one("#form-error").render())
        )
        await pilot.press(*"wrong site")
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, RejectScreen))
        svc = server.server.bundles  # type: ignore[union-attr]
        await wait_until(pilot, lambda: svc.get(bid).status == "rejected", what="rejected")
        assert svc.get(bid).reason == "wrong site" and svc.get(bid).decided_by == console_actor()
