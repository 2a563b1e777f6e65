"""Exports to a USB stick from the console: the watcher's media, confirmation, progress.

The USB watcher's agent runs in-process against the same server, with a
directory standing in for the stick (as `outpost audit export --to DIR`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from outpost_appliance.apiclient import AdminClient
from outpost_appliance.media_agent import MediaAgent
from outpost_server.bundles.watcher import MediaInserted
from outpost_tui.client import console_actor
from outpost_tui.screens.audit import AuditScreen
from outpost_tui.screens.bundles import BundlesScreen
from outpost_tui.screens.certs import CertsScreen
from outpost_tui.screens.confirm import ConfirmScreen
from outpost_tui.screens.export_media import ExportToMediaScreen

from .conftest import Server, wait_text, wait_until


def watcher(server: Server) -> MediaAgent:
    return MediaAgent(AdminClient(server.socket_path, acting_as="usb-watcher"), lambda _s: None)


async def insert(agent: MediaAgent, medium: Path, label: str = "AUDITSTICK") -> None:
    medium.mkdir(exist_ok=True)
    await asyncio.to_thread(agent.inserted, MediaInserted(str(medium), "vfat", label, "SER"))


async def test_audit_export_says_no_watcher_then_confirms_writes_and_shows_verified(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    server.store.create_user("erin")
    stick = tmp_path / "stick"
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("8")
        await wait_until(pilot, lambda: isinstance(app.screen, AuditScreen) and app.screen.loaded.is_set())
        await pilot.press("e")
        await wait_text(pilot, app, "Audit log to USB", "No USB watcher is running")
        dialog = app.screen
        assert isinstance(dialog, ExportToMediaScreen)
        await pilot.press("enter")  # nothing to write to: said plainly, no confirmation
        await wait_text(pilot, app, "Nothing to write to.")
        assert app.screen is dialog

        agent = watcher(server)
        await insert(agent, stick)
        await wait_text(pilot, app, "1 medium present", "AUDITSTICK")
        dialog.query_one("#field-from").value = "0"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_text(pilot, app, "Give a range inside 1..")
        dialog.query_one("#field-from").value = "1"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        assert f"to {stick} (label AUDITSTICK" in app.screen.question
        await pilot.press("n")  # cancelled: nothing is queued
        await wait_until(pilot, lambda: app.screen is dialog)
        assert (await asyncio.to_thread(agent.client.get, "/v1/media"))["exports"] == []

        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_text(pilot, app, "Queued: waiting for the USB watcher")
        assert not list(stick.iterdir())
        await asyncio.to_thread(agent.poll_once)
        await wait_text(pilot, app, "Written and verified", "Close")
        [written] = list(stick.iterdir())
        assert written.name.startswith("audit-")
        assert dialog.result is not None and dialog.result["path"] == str(written)  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, AuditScreen))

    log = server.server.audit_log  # type: ignore[union-attr]
    acts = [(e.actor, e.action) for e in log.entries(1, log.last_seq)]
    assert (console_actor(), "media.export.queued") in acts
    assert ("usb-watcher", "audit.export.written") in acts


async def test_enrolment_package_form_checks_input_and_a_failed_write_shows_the_reason(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    server.store.create_user("erin")
    stick = tmp_path / "stick"
    agent = watcher(server)
    await insert(agent, stick, "KEYS")
    app = make_app()
    async with app.run_test(size=(100, 45)) as pilot:
        await pilot.press("6")
        await wait_until(pilot, lambda: isinstance(app.screen, BundlesScreen) and app.screen.loaded.is_set())
        await pilot.press("e")
        await wait_text(pilot, app, "Client enrolment package to USB", "1 medium present")
        dialog = app.screen
        await pilot.press("enter")
        await wait_text(pilot, app, "Name at least one client")
        dialog.query_one("#field-clients").value = "laptop1, laptop2"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_text(pilot, app, "Give either an owner user or tags")
        dialog.query_one("#field-user").value = "erin"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "USABLE enrolment keys" in app.screen.question
        await pilot.press("y")
        await wait_text(pilot, app, "Queued")
        stick.rmdir()  # the medium cannot be written: the watcher's reason reaches the console
        await asyncio.to_thread(agent.poll_once)
        await wait_text(pilot, app, "FAILED: not written", "neither a directory")
    keys = [k.description for k in server.store.enrolment_keys().values()]
    assert sorted(keys) == [f"client-enrolment package: laptop{i}" for i in (1, 2)]


async def test_inventory_and_root_certificate_go_to_the_stick(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    stick = tmp_path / "stick"
    agent = watcher(server)
    await insert(agent, stick, "INV")
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        for nav, screen_type, key, expect in (
            ("6", BundlesScreen, "i", "inventory-"),
            ("9", CertsScreen, "u", "outpost-root.pem"),
        ):
            await pilot.press(nav)
            await wait_until(pilot, lambda t=screen_type: isinstance(app.screen, t))  # type: ignore[misc]
            await pilot.press(key)
            await wait_text(pilot, app, "1 medium present")
            app.screen.query_one("#media-list").focus()
            await pilot.press("enter")  # Enter on the medium list chooses it and asks
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_text(pilot, app, "Queued")
            await asyncio.to_thread(agent.poll_once)
            await wait_text(pilot, app, "Written and verified")
            assert any(p.name.startswith(expect) for p in stick.iterdir())
            await pilot.press("escape")
            await wait_until(pilot, lambda t=screen_type: isinstance(app.screen, t))  # type: ignore[misc]
    assert len(list(stick.iterdir())) == 2
