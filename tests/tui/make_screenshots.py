"""Screenshots of every console screen for docs/console.md.

    .venv/bin/python -m tests.tui.make_screenshots [OUT_DIR]

Starts a real server in a temporary directory, fills it (users, keys, nodes
made with the simulated client, a pending login), drives the console with
Pilot and saves each screen as SVG in the 16-colour VGA palette of the Linux
console, then converts to PNG with rsvg-convert (apt: librsvg2-bin) when it
is installed.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.terminal_theme import TerminalTheme

from outpost_tui.app import OutpostConsole
from outpost_tui.client import AsyncAdminClient
from outpost_tui.lock import ConsoleLock

from .conftest import Server, wait_text, wait_until

# The Linux console's default palette (drivers/tty/vt/vt.c).
VGA = TerminalTheme(
    (0, 0, 0),
    (170, 170, 170),
    [
        (0, 0, 0),
        (170, 0, 0),
        (0, 170, 0),
        (170, 85, 0),
        (0, 0, 170),
        (170, 0, 170),
        (0, 170, 170),
        (170, 170, 170),
    ],
    [
        (85, 85, 85),
        (255, 85, 85),
        (85, 255, 85),
        (255, 255, 85),
        (85, 85, 255),
        (255, 85, 255),
        (85, 255, 255),
        (255, 255, 255),
    ],
)

SIZE = (100, 30)

POLICY_V1 = """{
  // Everyone may reach everything (the default without a policy).
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}
"""
POLICY_V2 = """{
  // Admins reach every server on SSH; everyone reaches the web servers.
  "groups": {"group:admins": ["alice@"]},
  "tagOwners": {"tag:web": ["group:admins"]},
  "acls": [
    {"action": "accept", "src": ["group:admins"], "dst": ["*:22"]},
    {"action": "accept", "src": ["*"], "dst": ["tag:web:80,443"]},
  ],
  "tests": [{"src": "alice@", "accept": ["tag:web:443"]}],
}
"""


def save(app: OutpostConsole, out: Path, name: str) -> None:
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="standard",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    svg = out / f"{name}.svg"
    svg.write_text(console.export_svg(title=f"Outpost console: {name}", theme=VGA))
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", str(out / f"{name}.png"), str(svg)], check=True)
        svg.unlink()
    print("saved", name)


async def settle(pilot: Any) -> None:
    await pilot.pause(0.6)


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data")
        await server.start()
        try:
            await shoot(server, out)
        finally:
            await server.stop()


async def shoot(server: Server, out: Path) -> None:
    store = server.store
    store.create_user("alice", "Alice Andersen")
    store.create_user("bob", "Bob Berg")
    for host, user in (("web1", "alice"), ("db1", "bob"), ("alice-laptop", "alice")):
        await server.joined_node(host, user=user)
    await server.pending_login("field-tablet")
    store.create_enrolment_key(
        user_id=store.user_by_name("bob").id, reusable=True, description="lab"
    )
    # Two policy versions, so the Policy screen has a history and a diff.
    store.save_policy(POLICY_V1, "cli:admin", "initial: everyone everywhere")
    store.save_policy(POLICY_V2, "console:admin", "admins only on SSH")
    broken = Path(server.data_dir) / "policy-draft.hujson"
    broken.write_text(POLICY_V2.replace('"accept", "src"', '"accept" "src"'))
    client = AsyncAdminClient(server.socket_path)
    for name in ("carol", "dave"):
        await client.create_user(name)
    await client.aclose()
    lock = ConsoleLock(Path(server.data_dir) / "console-lock.json")
    lock.set("screenshot")
    app = OutpostConsole(AsyncAdminClient(server.socket_path), lock, poll_interval=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await wait_text(pilot, app, "OUTPOST CONSOLE: locked")
        await pilot.press(*"screensh")
        save(app, out, "lock")
        await pilot.press(*"ot", "enter")
        await wait_text(pilot, app, "3 online / 3 total")
        await pilot.pause(3.5)  # let the "unlocked" notice go
        save(app, out, "dashboard")
        await pilot.press("2")
        await wait_text(pilot, app, "Waiting for approval (1)", "alice-laptop")
        await settle(pilot)
        save(app, out, "nodes")
        await pilot.press("a")
        await wait_text(pilot, app, "Users: alice")
        await pilot.press(*"bob")
        await settle(pilot)
        save(app, out, "approve")
        await pilot.press("escape")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NodesScreen")
        app.screen.query_one("#nodes").focus()
        await pilot.press("d")
        await settle(pilot)
        save(app, out, "confirm-delete")
        await pilot.press("escape", "3")
        await wait_text(pilot, app, "Alice Andersen")
        await settle(pilot)
        save(app, out, "users")
        await pilot.press("4")
        await wait_text(pilot, app, "lab")
        await settle(pilot)
        save(app, out, "keys")
        await pilot.press("c")
        await wait_text(pilot, app, "New enrolment key")
        await pilot.press(*"alice", "tab", *"tag:server", "tab", "ctrl+u", *"7d")
        await settle(pilot)
        save(app, out, "key-create")
        await pilot.press("enter")
        await wait_text(pilot, app, "SHOWN ONCE")
        await settle(pilot)
        save(app, out, "key-secret")
        await pilot.press("enter", "5")
        await wait_text(pilot, app, "Current: version 2", "group:admins")
        await settle(pilot)
        save(app, out, "policy")
        app.screen.query_one("#history").move_cursor(row=1)
        await pilot.press("d")
        await wait_text(pilot, app, "Changes from version 1")
        await settle(pilot)
        save(app, out, "policy-diff")
        await pilot.press("escape", "c")
        await wait_text(pilot, app, "Check a policy file")
        await pilot.press(*str(broken), "enter")
        await wait_text(pilot, app, ", column")
        await settle(pilot)
        save(app, out, "policy-check")
        await pilot.press("escape", "6")
        await wait_text(pilot, app, "USB bundles")
        await settle(pilot)
        save(app, out, "usb")
        from outpost_server.backup import format as bfmt  # noqa: PLC0415

        assert server.server is not None
        server.server.backups.add_recipient("screenshots", bfmt.format_public(bfmt.new_recovery_key()[1]), "safe A")
        await pilot.press("7")
        await wait_text(pilot, app, "Opens with")
        await pilot.press("b")
        await wait_text(pilot, app, "Last run", timeout=60)
        await pilot.pause(3.5)  # let the notice go
        save(app, out, "backups")
        await pilot.press("8")
        await wait_text(pilot, app, "entries in the log")
        await pilot.press("v")
        await wait_text(pilot, app, "Chain verified")
        await pilot.pause(3.5)  # let the notice go
        save(app, out, "audit")
        # A stick in the USB watcher's hands: the export dialog lists it.
        from outpost_appliance.apiclient import AdminClient  # noqa: PLC0415
        from outpost_appliance.media_agent import MediaAgent  # noqa: PLC0415
        from outpost_server.bundles.watcher import MediaInserted  # noqa: PLC0415

        agent = MediaAgent(AdminClient(server.socket_path, acting_as="usb-watcher"), lambda _s: None)
        stick = Path(server.data_dir).parent / "stick"
        stick.mkdir()
        await asyncio.to_thread(
            agent.inserted, MediaInserted(str(stick), "vfat", "AUDIT-2026", "4C530001")
        )
        await pilot.press("e")
        await wait_text(pilot, app, "Audit log to USB", "AUDIT-2026")
        await settle(pilot)
        save(app, out, "export-audit")
        await pilot.press("escape")
        await pilot.press("9")
        await wait_text(pilot, app, "Issued certificates")
        await settle(pilot)
        save(app, out, "certs")
        await pilot.press("2", "f1")
        await wait_text(pilot, app, "Keys on this screen")
        await settle(pilot)
        save(app, out, "help-nodes")
        await pilot.press("escape")
        await server.stop()
        await wait_text(pilot, app, "SERVER UNREACHABLE")
        await pilot.press("1")
        await settle(pilot)
        save(app, out, "server-down")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console")))
