"""Console safety and text snapshots of each screen at 80x25 and 160x50.

Every rendered screen (including dialogs) must use only glyphs the Linux
console font can draw (`SAFE_GLYPHS`). The main screens are compared with text
snapshots in `snapshots/` (times, ports, versions and key prefixes masked);
regenerate them with OUTPOST_UPDATE_SNAPSHOTS=1 after a deliberate change.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from textual.widgets import DataTable

from outpost_tui.screens.help import HelpScreen
from outpost_tui.screens.key_form import KeyFormScreen
from outpost_tui.theme import SAFE_GLYPHS

from .conftest import Server, masked, screen_text, wait_text, wait_until

SNAPSHOTS = Path(__file__).parent / "snapshots"
HEX12 = re.compile(r"\b[0-9a-f]{12}\b")


def unsafe(text: str) -> set[str]:
    return {c for c in text if c not in SAFE_GLYPHS and c != "\n"}


async def settled(pilot: Any, app: Any) -> str:
    """The masked screen once two renders in a row agree."""
    last = None
    for _ in range(60):
        await pilot.pause(0.1)
        now = HEX12.sub("#" * 12, masked(screen_text(app)))
        if now == last:
            return now
        last = now
    raise AssertionError("the screen did not settle")


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("OUTPOST_UPDATE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        return
    want = path.read_text()
    assert text == want, (
        f"{name} differs from {path} (OUTPOST_UPDATE_SNAPSHOTS=1 to accept):\n{text}"
    )


async def test_screens_are_console_safe_and_match_snapshots(server: Server, make_app: Any) -> None:
    await server.joined_node("web1", user="alice")
    await server.pending_login("laptop")
    app = make_app()
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_text(pilot, app, "1 online / 1 total", "1 device waiting")
        # dialogs (at the small size): help, a form, a confirmation
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await settled(pilot, app)
        assert not unsafe(screen_text(app)), ("help", unsafe(screen_text(app)))
        await pilot.press("escape", "4", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, KeyFormScreen))
        await settled(pilot, app)
        assert not unsafe(screen_text(app)), ("key form", unsafe(screen_text(app)))
        await pilot.press("escape", "2")
        await wait_until(pilot, lambda: app.current_mode == "nodes")
        await wait_until(pilot, lambda: app.screen.query_one("#nodes", DataTable).row_count == 1)
        app.screen.query_one("#nodes", DataTable).focus()
        await pilot.press("d")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")
        await settled(pilot, app)
        assert not unsafe(screen_text(app)), ("confirm", unsafe(screen_text(app)))
        await pilot.press("escape")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NodesScreen")
        # the main screens at both sizes
        for w, h in ((80, 25), (160, 50)):
            await pilot.resize_terminal(w, h)
            for name, key in SCREENS.items():
                await pilot.press(key)
                await wait_until(pilot, lambda n=name: app.current_mode == n)
                if name == "nodes":
                    await wait_text(pilot, app, "Waiting for approval (1)", "web1")
                if name in ("users", "keys", "policy", "audit", "certificates", "backups"):
                    await wait_until(pilot, lambda: app.screen.loaded.is_set())
                text = await settled(pilot, app)
                assert not unsafe(screen_text(app)), (name, unsafe(screen_text(app)))
                check_snapshot(f"{name}_{w}x{h}", text)


SCREENS = {
    "dashboard": "1",
    "nodes": "2",
    "users": "3",
    "keys": "4",
    "policy": "5",
    "bundles": "6",
    "backups": "7",
    "audit": "8",
    "certificates": "9",
}


async def test_setup_wizard_is_console_safe_and_matches_snapshots(
    server: Server, make_app: Any
) -> None:
    from outpost_tui.screens.wizard import WizardScreen  # noqa: PLC0415

    app = make_app(setup_wizard=True)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, WizardScreen))
        await app.client.create_user("admin")  # the owner of the key on the last step
        wizard = app.screen
        await wait_until(pilot, lambda: bool(wizard.query_one("#server-url").value))
        for w, h in ((80, 25), (160, 50)):
            await pilot.resize_terminal(w, h)
            for step in range(5):
                wizard.show_step(step)
                await wait_until(pilot, lambda s=step: wizard.index == s)
                if step == 1:
                    await wait_text(pilot, app, "Root SHA-256")
                text = await settled(pilot, app)
                assert not unsafe(screen_text(app)), (step, unsafe(screen_text(app)))
                if step in (0, 1):
                    check_snapshot(f"wizard-step{step + 1}_{w}x{h}", text)
        # the key shown once, on the last step
        await pilot.press("enter")
        await wait_text(pilot, app, "SHOWN ONCE")
        text = await settled(pilot, app)
        assert not unsafe(screen_text(app))
        check_snapshot("wizard-enrol_160x50", text)
