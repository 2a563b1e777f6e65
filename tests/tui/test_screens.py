"""Each screen driven with Pilot against a real server started by the test."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from outpost_tui.screens.backups import BackupsScreen
from outpost_tui.screens.confirm import ConfirmScreen
from outpost_tui.screens.dashboard import DashboardScreen
from outpost_tui.screens.help import HelpScreen
from outpost_tui.screens.key_form import KeyFormScreen
from outpost_tui.screens.key_secret import KeySecretScreen
from outpost_tui.screens.nodes import NodesScreen
from outpost_tui.screens.upcoming import UPCOMING
from outpost_tui.screens.user_form import UserFormScreen
from outpost_tui.screens.users import UsersScreen
from outpost_tui.widgets.stat_tile import StatTile

from .conftest import Server, screen_text, wait_text, wait_until


def rows(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_nodes(app: Any, pilot: Any) -> NodesScreen:
    await pilot.press("2")
    await wait_until(
        pilot,
        lambda: isinstance(app.screen, NodesScreen) and app.screen.loaded.is_set(),
        what="nodes",
    )
    return app.screen  # type: ignore[no-any-return]


async def test_dashboard_shows_counts_pending_and_placeholders(
    server: Server, make_app: Any
) -> None:
    await server.joined_node("web1")
    await server.pending_login("laptop")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.connection.ok is True, what="connected")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        pending = screen.query_one("#pending", StatTile)
        await wait_until(pilot, lambda: pending.has_class("-attention"), what="pending tile lit")
        text = await wait_text(
            pilot, app, "1 online / 1 total", "1 device waiting", "press a to review"
        )
        assert f"http://127.0.0.1:{server.port}" in text
        assert "connections" in text and "STUN answered" in text
        for title in ("Certificate expiry", "Last backup", "Audit chain", "Disk use"):
            assert title in text
        assert "not available yet" not in text
        assert "server: 396 days left" in text and "not verified yet" in text and "% used" in text
        assert "NOT READY" in text  # backups: no recovery key yet
        assert "1 WAITING FOR APPROVAL" in text  # status bar
        # the call to action leads to the pending list
        await pilot.press("a")
        await wait_until(
            pilot, lambda: isinstance(app.screen, NodesScreen) and bool(app.screen.pending)
        )


async def test_nodes_table_details_search_and_sort(server: Server, make_app: Any) -> None:
    await server.joined_node("web1", user="alice")
    await server.joined_node("db1", user="bob")
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_nodes(app, pilot)
        table = screen.query_one("#nodes", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        assert [r[0] for r in rows(table)] == ["db1", "web1"]  # sorted by name
        await wait_text(
            pilot,
            app,
            "Details",
            "IPv4",
            "100.64.0.",
            "fd7a:115c:a1e0::",
            "Client",
            "sim",
            "Key expiry",
            "online",
        )
        # sort by IPv4 (web1 joined first)
        await pilot.press("s")
        assert screen.sort_key == "ipv4"
        assert [r[0] for r in rows(table)] == ["web1", "db1"]
        # search
        await pilot.press("slash", *"bob")
        await wait_until(pilot, lambda: table.row_count == 1)
        assert rows(table)[0][0] == "db1"
        await wait_text(pilot, app, "Nodes (1 of 2)")
        await pilot.press("enter")  # back to the table
        assert app.focused is table
        # details follow the cursor
        await wait_text(pilot, app, "db1.outpost.internal")


async def test_approve_pending_login(server: Server, make_app: Any) -> None:
    server.store.create_user("carol")
    auth_id = await server.pending_login("laptop")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_nodes(app, pilot)
        await wait_until(pilot, lambda: screen.pending and screen.query_one("#pending").display)
        await wait_text(pilot, app, "Waiting for approval (1)", "laptop")
        await pilot.press("a")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ApproveScreen")
        await wait_text(pilot, app, auth_id, "Users: carol")
        await pilot.press(*"carol", "enter")
        await wait_until(
            pilot, lambda: app.screen is screen and not screen.pending, what="approved"
        )
        await wait_until(pilot, lambda: screen.query_one("#nodes", DataTable).row_count == 1)
        nodes = list(server.store.nodes().values())
        assert len(nodes) == 1 and nodes[0].given_name == "laptop"
        assert server.store.users()[nodes[0].user_id].name == "carol"
        assert not screen.query_one("#pending").display


async def test_reject_pending_asks_naming_the_device(server: Server, make_app: Any) -> None:
    await server.pending_login("tablet")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_nodes(app, pilot)
        await wait_until(pilot, lambda: bool(screen.pending))
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Reject the login from tablet" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: app.screen is screen and not screen.pending)
        assert not server.server.registrar.pending  # type: ignore[union-attr]


async def test_rename_then_delete_node_with_confirmation(server: Server, make_app: Any) -> None:
    await server.joined_node("oldname")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_nodes(app, pilot)
        table = screen.query_one("#nodes", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        table.focus()
        # rename, with an invalid name first
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RenameScreen")
        dialog = app.screen
        name_input = dialog.query_one("#name")
        name_input.value = "Bad Name!"
        await pilot.press("enter")
        await wait_text(pilot, app, "lowercase letters")
        assert app.screen is dialog  # kept open, input kept
        name_input.value = "newname"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen)
        await wait_until(pilot, lambda: rows(table) and rows(table)[0][0] == "newname")
        assert next(iter(server.store.nodes().values())).given_name == "newname"
        # delete: the question names the node; cancel keeps it
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Delete node newname (100.64.0.1" in app.screen.question
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        assert len(server.store.nodes()) == 1
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: table.row_count == 0)
        assert server.store.nodes() == {}


async def test_expire_node(server: Server, make_app: Any) -> None:
    await server.joined_node("short")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_nodes(app, pilot)
        await wait_until(pilot, lambda: screen.query_one("#nodes", DataTable).row_count == 1)
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Expire the key of node short" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.nodes and screen.nodes[0]["expired"], what="expired")
        await wait_text(pilot, app, "expired")


async def test_users_list_create_duplicate_and_delete(server: Server, make_app: Any) -> None:
    server.store.create_user("alice")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await wait_until(
            pilot, lambda: isinstance(app.screen, UsersScreen) and app.screen.loaded.is_set()
        )
        screen = app.screen
        table = screen.query_one("#users", DataTable)
        assert [r[1] for r in rows(table)] == ["alice"]
        # create
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, UserFormScreen))
        await pilot.press(*"bob", "tab", *"Bob B", "enter")
        await wait_until(pilot, lambda: [r[1] for r in rows(table)] == ["alice", "bob"])
        # refused: duplicate name, the API's reason shown in the dialog
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, UserFormScreen))
        await pilot.press(*"bob", "enter")
        await wait_text(pilot, app, "Refused:")
        error = str(app.screen.query_one("#form-error").render())
        assert "bob" in error and "exist" in error, error
        # invalid input never reaches the server
        app.screen.query_one("#name").value = ""
        await pilot.press("enter")
        await wait_text(pilot, app, "Enter a user name")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        # delete bob, confirmation names the user
        table.move_cursor(row=1)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Delete user bob" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: [r[1] for r in rows(table)] == ["alice"])
        assert sorted(u.name for u in server.store.users().values()) == ["alice"]


async def test_keys_create_shows_secret_once_then_revoke(server: Server, make_app: Any) -> None:
    server.store.create_user("alice")
    app = make_app()
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press("4")
        await wait_until(
            pilot, lambda: type(app.screen).__name__ == "KeysScreen" and app.screen.loaded.is_set()
        )
        screen = app.screen
        table = screen.query_one("#keys", DataTable)
        assert table.row_count == 0
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, KeyFormScreen))
        form = app.screen
        # invalid lifetime is caught before sending
        form.query_one("#user").value = "alice"
        form.query_one("#expires").value = "5x"
        await pilot.press("enter")
        await wait_text(pilot, app, "Invalid lifetime")
        form.query_one("#expires").value = "12h"
        form.query_one("#tags").value = "tag:server"
        form.query_one("#reusable").value = True
        form.query_one("#description").focus()
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: isinstance(app.screen, KeySecretScreen), what="secret modal"
        )
        secret_screen = app.screen
        secret = secret_screen.key["key"]
        await wait_text(
            pilot,
            app,
            secret,
            "SHOWN ONCE",
            "cannot be displayed again",
            f"--login-server=http://127.0.0.1:{server.port}",
        )
        # Escape does not lose the key by accident
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is secret_screen
        await pilot.press("enter")  # the focused "I have recorded the key" button
        await wait_until(pilot, lambda: app.screen is screen and table.row_count == 1)
        listed = rows(table)[0]
        assert listed[1] == secret_screen.key["prefix"] and "reusable" in listed[4]
        assert secret not in screen_text(app)  # never shown again
        # the key really works on the server
        (key,) = server.store.enrolment_keys().values()
        assert key.reusable and key.tags == ("tag:server",)
        # revoke with a confirmation naming the key
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Revoke enrolment key {key.prefix}" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: "revoked" in rows(table)[0][3])


async def test_help_on_every_screen_and_stubs_say_what_brings_them(
    server: Server, make_app: Any
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        for key in "123456789":
            await pilot.press(key)
            await wait_until(
                pilot, lambda: not isinstance(app.screen, HelpScreen) and app.screen.is_current
            )
            base = app.screen
            await pilot.press("f1")
            await wait_until(
                pilot, lambda: isinstance(app.screen, HelpScreen), what=f"help on {key}"
            )
            await wait_text(pilot, app, "Keys on this screen", "Everywhere", "Refresh")
            await pilot.press("escape")
            await wait_until(pilot, lambda b=base: app.screen is b)
        for mode, (title, feature, _) in UPCOMING.items():
            app.switch_mode(mode)
            await wait_until(pilot, lambda m=mode: app.current_mode == m)
            await wait_text(pilot, app, f"{title}: arrives with {feature}")


async def notified(pilot: Any, app: Any, needle: str) -> None:
    """A toast's text wraps on screen; its message is checked whole."""
    await wait_until(
        pilot, lambda: any(needle in n.message for n in app._notifications), what=f"notification {needle!r}"
    )


async def test_backups_screen_runs_verifies_and_explains_readiness(server: Server, make_app: Any) -> None:
    from outpost_server.backup import format as fmt

    app = make_app()
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_until(pilot, lambda: app.connection.ok is True, what="connected")
        await pilot.press("7")
        await wait_until(
            pilot, lambda: isinstance(app.screen, BackupsScreen) and app.screen.loaded.is_set(), what="backups"
        )
        screen = app.screen
        await wait_text(pilot, app, "NOT READY: no recovery key", "No backup has run")
        await pilot.press("b")  # refused, and the console says why
        await notified(pilot, app, "no recovery key configured")

        assert server.server is not None
        _, public = fmt.new_recovery_key()
        server.server.backups.add_recipient("test", fmt.format_public(public), "vault 2")
        await pilot.press("r")
        await wait_text(pilot, app, f"Opens with: {fmt.key_id(public)} (vault 2)", "daily at 02:30 UTC")
        await pilot.press("b")
        await wait_until(pilot, lambda: screen.last_job is not None, what="backup finished", timeout=60)
        assert screen.last_job["ok"] is True, screen.last_job
        table = screen.query_one("#backups", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, what="backup listed")
        assert "this one" in rows(table)[0]
        await notified(pilot, app, "Backup written and read back")
        await wait_text(pilot, app, "Last run")
        await pilot.press("v")
        await notified(pilot, app, "signature and digests verify (made by this appliance)")
        await pilot.press("p")
        await notified(pilot, app, "nothing to delete")
        # the dashboard tile reflects the run
        await pilot.press("1")
        await wait_text(pilot, app, "Last backup", "ok; schedule: daily 02:30 UTC")


async def test_tags_and_route_approval_from_the_node_list(server: Server, make_app: Any) -> None:
    from outpost_server.sim.client import SimNode

    class Router(SimNode):
        def hostinfo(self) -> dict[str, Any]:
            return {**super().hostinfo(), "RoutableIPs": ["10.9.0.0/24", "0.0.0.0/0", "::/0"]}

    owner = server.store.create_user("alice")
    _, secret = server.store.create_enrolment_key(user_id=owner.id)
    node = Router("gateway")
    await node.connect("127.0.0.1", server.port, server.server_key)
    assert not (await node.register(secret)).get("Error")
    assert await node.start_map() == 200
    server.sims.append(node)
    nid = next(iter(server.store.nodes()))
    await_adv = lambda: server.store.node(nid).advertised_routes()  # noqa: E731
    app = make_app()
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_until(pilot, lambda: bool(await_adv()), what="routes advertised")
        screen = await open_nodes(app, pilot)
        table = screen.query_one("#nodes", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        table.focus()
        # tags: a bad one is refused in the form, a good one is saved and audited
        await pilot.press("t")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TagsScreen")
        box = app.screen.query_one("#tags")
        box.value = "server"
        await pilot.press("enter")
        await wait_text(pilot, app, "is not a tag")
        box.value = "tag:gateway, tag:prod"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen)
        assert server.store.node(nid).tags == ("tag:gateway", "tag:prod")
        # routes: only advertised ones can be approved; the exit-node pair is offered
        await pilot.press("o")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RoutesScreen")
        await wait_text(pilot, app, "Advertised: 0.0.0.0/0, 10.9.0.0/24, ::/0", "exit node")
        routes = app.screen.query_one("#routes")
        routes.value = "10.8.0.0/24"
        await pilot.press("enter")
        await wait_text(pilot, app, "not advertised by this node")
        await pilot.click("#all")
        assert "0.0.0.0/0" in routes.value
        await pilot.click("#ok")
        await wait_until(pilot, lambda: app.screen is screen)
        assert set(server.store.node(nid).approved_routes) == {"10.9.0.0/24", "0.0.0.0/0", "::/0"}
    assert server.server is not None
    actions = [e.action for e in server.server.audit_log.entries()]
    assert "node.tags" in actions and "node.routes.approve" in actions


async def test_restore_from_the_console_with_a_recovery_key_file(server: Server, make_app: Any, tmp_path: Any) -> None:
    from outpost_server.backup import format as fmt

    assert server.server is not None
    private, public = fmt.new_recovery_key()
    server.server.backups.add_recipient("test", fmt.format_public(public), "")
    keyfile = tmp_path / "recovery.key"
    keyfile.write_text(fmt.recovery_key_file(private))
    wrong = tmp_path / "other.key"
    wrong.write_text(fmt.recovery_key_file(fmt.new_recovery_key()[0]))
    app = make_app()
    async with app.run_test(size=(120, 34)) as pilot:
        await wait_until(pilot, lambda: app.connection.ok is True, what="connected")
        await pilot.press("7")
        await wait_until(pilot, lambda: isinstance(app.screen, BackupsScreen) and app.screen.loaded.is_set())
        screen = app.screen
        await pilot.press("b")
        await wait_until(pilot, lambda: screen.last_job is not None, timeout=60, what="backup made")
        table = screen.query_one("#backups", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        table.focus()
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Restore outpost-" in app.screen.question and "server restarts" in app.screen.question
        await pilot.press("y")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RestoreScreen")
        dialog = app.screen
        dialog.query_one("#keyfile").value = str(tmp_path / "missing.key")
        await pilot.press("enter")
        await wait_text(pilot, app, "No such file")
        dialog.query_one("#keyfile").value = str(wrong)
        await pilot.press("enter")
        await wait_text(pilot, app, "not sealed to recovery key")  # the server refused; nothing pending
        assert server.server.backups.pending_restore() is None
        dialog.query_one("#keyfile").value = str(keyfile)
        await pilot.press("enter")
        await notified(pilot, app, "the server is restarting")
        assert server.server.backups.pending_restore() is not None
        await wait_until(pilot, lambda: server.server.exit_code == 75, what="restart requested")
