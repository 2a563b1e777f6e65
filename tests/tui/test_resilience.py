"""The console with the server going away and coming back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from outpost_tui.client import ApiError, AsyncAdminClient, ServerUnreachable
from outpost_tui.screens.users import UsersScreen
from outpost_tui.widgets.status_bar import StatusBar

from .conftest import Server, wait_text, wait_until


async def test_server_down_is_reported_and_the_console_reconnects(
    server: Server, make_app: Any
) -> None:
    server.store.create_user("alice")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await wait_until(
            pilot, lambda: isinstance(app.screen, UsersScreen) and app.screen.loaded.is_set()
        )
        screen = app.screen
        await server.stop()
        await wait_text(pilot, app, "SERVER UNREACHABLE", "retrying")
        assert screen.query_one(StatusBar).has_class("-down")
        # still usable: switch screens, refresh, try an action
        await pilot.press("1")
        await wait_text(pilot, app, "UNREACHABLE")  # the dashboard's server tile
        await pilot.press("3")
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.press("r")
        await pilot.press("c")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "UserFormScreen")
        await pilot.press(*"bob", "enter")
        await wait_text(pilot, app, "Server unreachable")  # inside the dialog, input kept
        assert app.screen.query_one("#name").value == "bob"
        await pilot.press("escape")
        # the server comes back (same data directory, same socket)
        await server.start()
        await wait_text(pilot, app, "Connected |", timeout=15)
        assert not screen.query_one(StatusBar).has_class("-down")
        await pilot.press("c")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "UserFormScreen")
        await pilot.press(*"bob", "enter")
        table = screen.query_one("#users", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, timeout=10)


async def test_console_starts_with_no_server(tmp_path: Path, make_app: Any, server: Server) -> None:
    await server.stop()
    (server.data_dir / "admin.sock").unlink(missing_ok=True)
    app = make_app()
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_text(pilot, app, "SERVER UNREACHABLE", "no admin socket")
        await pilot.press("2")
        await wait_text(pilot, app, "Select a node", "SERVER UNREACHABLE")  # empty, not crashed
        await server.start()
        await wait_text(pilot, app, "Connected |", timeout=15)


async def test_client_errors_are_typed(server: Server, tmp_path: Path) -> None:
    client = AsyncAdminClient(server.socket_path)
    await client.create_user("dup")
    with pytest.raises(ApiError) as refused:
        await client.create_user("dup")
    assert not isinstance(refused.value, ServerUnreachable)
    assert 400 <= refused.value.status < 500 and "dup" in refused.value.message
    with pytest.raises(ApiError) as missing:
        await client.node(999)
    assert missing.value.status == 404
    await client.aclose()
    with pytest.raises(ServerUnreachable):
        await AsyncAdminClient(tmp_path / "nope.sock").status()
