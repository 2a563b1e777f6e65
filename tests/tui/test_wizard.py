"""The first-boot wizard against a real server: each step, its refusals, the server going away."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from outpost_server.backup.format import format_public, new_recovery_key, recovery_key_file
from outpost_server.sim.client import SimNode
from outpost_tui.lock import ConsoleLock
from outpost_tui.screens.dashboard import DashboardScreen
from outpost_tui.screens.help import HelpScreen
from outpost_tui.screens.lock import LockScreen
from outpost_tui.screens.wizard import WizardScreen
from tests.bundle_env import trust_doc

from .conftest import Server, screen_text, wait_text, wait_until

LINE_RE = re.compile(r"tailscale up --login-server=(\S+)[\s│]+--authkey=(\S+)")


def field(app: Any, wid: str) -> Any:
    return app.screen.query_one(f"#{wid}")


async def at_step(pilot: Any, app: Any, n: int) -> None:
    await wait_until(
        pilot,
        lambda: isinstance(app.screen, WizardScreen) and app.screen.index == n - 1,
        what=f"wizard step {n}",
    )


async def wait_flat(pilot: Any, app: Any, *needles: str) -> str:
    """Like wait_text, for messages the screen may wrap: spaces and line ends are one space."""
    for _ in range(80):
        flat = " ".join(screen_text(app).replace("│", " ").split())
        if all(n in flat for n in needles):
            return flat
        await pilot.pause(0.1)
    raise AssertionError(f"not on screen: {needles}\n{screen_text(app)}")


async def type_into(pilot: Any, app: Any, wid: str, text: str) -> None:
    widget = field(app, wid)
    widget.value = ""
    widget.focus()
    await pilot.press(*text)


def recovery_public(tmp_path: Path) -> tuple[Path, str]:
    sk, pk = new_recovery_key()
    public = format_public(pk)
    path = tmp_path / "recovery.pub"
    path.write_text(f"# recovery public key\n{public}\n")
    (tmp_path / "recovery.key").write_text(recovery_key_file(sk))
    return path, public


async def test_first_start_goes_from_passphrase_through_setup_to_a_key_that_enrols(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    trust = tmp_path / "trust-store.json"
    trust.write_text(json.dumps(trust_doc()))
    pub_path, public = recovery_public(tmp_path)
    lock = ConsoleLock(tmp_path / "console-lock.json")
    app = make_app(lock=lock, setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LockScreen))
        await pilot.press(*"secret1", "enter", *"secret1", "enter")
        await at_step(pilot, app, 1)
        # step 1: the defaults are what the server runs with
        url = f"http://127.0.0.1:{server.port}"
        await wait_until(pilot, lambda: field(app, "server-url").value == url, what="default URL")
        assert field(app, "site-name").value == "outpost"
        await type_into(pilot, app, "site-name", "plant7")
        await type_into(pilot, app, "addresses", "outpost.plant7.lan, 192.168.7.2")
        await pilot.press("enter")
        await at_step(pilot, app, 2)
        # step 2: the root's fingerprint as the server has it, and the names it lacks
        certs = await app.client.certs()
        text = await wait_text(pilot, app, "Root SHA-256", "Needed for step 1", "Reissue (Enter)")
        fp = certs["root"]["sha256"]
        assert fp[:40] in text and fp[-40:] in text
        await pilot.press("enter")
        await at_step(pilot, app, 3)
        await wait_text(pilot, app, "Server certificate reissued", "No trust store yet")
        leaf = (await app.client.certs())["leaf"]
        assert {"outpost.plant7.lan", "192.168.7.2", "127.0.0.1"} <= set(leaf["names"])
        # step 3: trust store and recovery key from files
        await type_into(pilot, app, "trust-path", str(trust))
        await type_into(pilot, app, "recovery", str(pub_path))
        await pilot.press("enter")
        await at_step(pilot, app, 4)
        text = " ".join((await wait_text(pilot, app, "installed;", "recovery key")).split())
        assert f"trust store from {trust} installed" in text
        assert (await app.client.trust())["installed"] is True
        recipients = (await app.client.backup_status())["settings"]["recipients"]
        assert [r["public"] for r in recipients] == [public]
        # step 4: the first administrator
        await pilot.press("enter")
        await at_step(pilot, app, 5)
        assert [u["name"] for u in await app.client.users()] == ["admin"]
        # step 5: the key, shown once, in the line to run
        assert field(app, "enrol-user").value == "admin"
        await pilot.press("enter")
        text = await wait_text(pilot, app, "SHOWN ONCE", "Finish (Enter)")
        found = LINE_RE.search(text)
        assert found, text
        assert found.group(1) == url
        # the printed key really enrols a device
        node = SimNode("first-laptop")
        await node.connect("127.0.0.1", server.port, server.server_key)
        resp = await node.register(found.group(2))
        await node.close()
        assert not resp.get("Error"), resp
        assert [n["hostname"] for n in await app.client.nodes()] == ["first-laptop"]
        # Finish: setup complete, audited, and the console's usual screens
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        site = await app.client.site()
        assert site["setup_complete"] is True and site["site_name"] == "plant7"
        actions = [e["action"] for e in (await app.client.audit())["entries"]]
        assert {"site.update", "site.setup.complete", "bundles.trust.init"} <= set(actions)


async def test_bad_site_input_is_refused_with_what_and_where(server: Server, make_app: Any) -> None:
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await at_step(pilot, app, 1)
        await wait_until(pilot, lambda: bool(field(app, "server-url").value))
        await type_into(pilot, app, "server-url", "ftp://10.0.0.1")
        await pilot.press("enter")
        await wait_text(pilot, app, "Login URL 'ftp://10.0.0.1': it must start with http://")
        await type_into(pilot, app, "server-url", "http://10.0.0.1")
        await type_into(pilot, app, "addresses", "8.8.8.8")
        await pilot.press("enter")
        text = await wait_text(pilot, app, "Refused by the server: 8.8.8.8: outside the CA")
        assert app.screen.index == 0 and field(app, "addresses").value == "8.8.8.8"  # kept
        await type_into(pilot, app, "site-name", "two words")
        await type_into(pilot, app, "addresses", "")
        await pilot.press("enter")
        await wait_text(pilot, app, "Refused by the server: site name 'two words'")
        assert app.screen.index == 0 and "site.json" not in str(list(server.data_dir.iterdir()))
        del text


async def test_bad_trust_store_and_recovery_key_files_are_refused(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    not_json = tmp_path / "broken.json"
    not_json.write_text("{ not json")
    no_key = tmp_path / "empty.pub"
    no_key.write_text("hello\n")
    pub_path, _ = recovery_public(tmp_path)
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await at_step(pilot, app, 1)
        await pilot.press("f3", "f3")
        await at_step(pilot, app, 3)
        await wait_text(pilot, app, "No trust store yet")
        await pilot.press("enter")
        await wait_flat(pilot, app, "or press F3 to skip this step")
        await type_into(pilot, app, "trust-path", str(tmp_path / "missing.json"))
        await pilot.press("enter")
        await wait_flat(pilot, app, f"No such file: {tmp_path / 'missing.json'}")
        await type_into(pilot, app, "trust-path", str(not_json))
        await pilot.press("enter")
        await wait_flat(
            pilot, app, f"Refused by the server: trust store {not_json}: trust store is not JSON"
        )
        await type_into(pilot, app, "trust-path", "")
        await type_into(pilot, app, "recovery", "ssh-ed25519 AAAA")
        await pilot.press("enter")
        await wait_flat(pilot, app, "starts with opr1:")
        await type_into(pilot, app, "recovery", str(no_key))
        await pilot.press("enter")
        await wait_flat(pilot, app, "holds no recovery public key")
        await type_into(pilot, app, "recovery", str(tmp_path / "recovery.key"))
        await pilot.press("enter")
        await wait_flat(pilot, app, "is a recovery SECRET key")
        await type_into(pilot, app, "recovery", "opr1:1234")
        await pilot.press("enter")
        await wait_flat(
            pilot, app, "Refused by the server: recovery key from the key typed in:", "32 bytes"
        )
        assert app.screen.index == 2
        assert (await app.client.trust())["installed"] is False
        assert (await app.client.backup_status())["settings"]["recipients"] == []
        await type_into(pilot, app, "recovery", str(pub_path))
        await pilot.press("enter")
        await at_step(pilot, app, 4)


async def test_server_down_mid_wizard_keeps_the_input_and_carries_on_when_back(
    server: Server, make_app: Any
) -> None:
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await at_step(pilot, app, 1)
        await pilot.press("f3", "f3", "f3")
        await at_step(pilot, app, 4)
        await type_into(pilot, app, "admin-name", "ops")
        await server.stop()
        await pilot.press("enter")
        await wait_text(pilot, app, "Server unreachable:", "Nothing was lost")
        assert app.screen.index == 3 and field(app, "admin-name").value == "ops"
        await wait_text(pilot, app, "SERVER UNREACHABLE")  # the status line says so too
        await server.start()
        await pilot.press("enter")
        await at_step(pilot, app, 5)
        assert "ops" in [u["name"] for u in await app.client.users()]


async def test_back_skip_help_and_leaving_setup_unfinished(server: Server, make_app: Any) -> None:
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await at_step(pilot, app, 1)
        await pilot.press("f3")
        await at_step(pilot, app, 2)
        await wait_text(pilot, app, "Skipped: Site name and addresses", "carries every address")
        await pilot.press("f2")
        await at_step(pilot, app, 1)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = await wait_text(pilot, app, "First-boot setup", "--login-server")
        assert "F10" in text
        await pilot.press("escape")
        await at_step(pilot, app, 1)
        await pilot.press("2")  # the number keys do not leave the wizard (they type)
        await at_step(pilot, app, 1)
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert (await app.client.site())["setup_complete"] is False
        assert "OUTPOST FIRST-BOOT SETUP" not in screen_text(app)


async def test_no_wizard_once_setup_is_complete(server: Server, make_app: Any) -> None:
    server.store.create_user("alice")  # set up by hand before the wizard existed
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_text(pilot, app, "Connected")
        await pilot.pause(0.5)
        assert isinstance(app.screen, DashboardScreen)


async def test_signers_step_lists_first_trust_files_from_a_stick_and_installs_one_confirmed(
    server: Server, make_app: Any, tmp_path: Path
) -> None:
    from outpost_appliance.apiclient import AdminClient
    from outpost_appliance.media_agent import MediaAgent
    from outpost_server.backup.format import key_id
    from outpost_server.bundles.watcher import MediaInserted
    from outpost_tui.screens.confirm import ConfirmScreen
    from tests.bundle_env import KID

    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "trust-store.json").write_text(json.dumps(trust_doc()))
    _, pk = new_recovery_key()
    (stick / "recovery.pub").write_text(format_public(pk) + "\n")
    agent = MediaAgent(AdminClient(server.socket_path, acting_as="usb-watcher"), lambda _s: None)
    said: list[str] = []
    agent.say = said.append
    await asyncio.to_thread(agent.inserted, MediaInserted(str(stick), "vfat", "SIGNING", ""))
    assert any("2 first-trust file(s) offered" in s for s in said), said
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await at_step(pilot, app, 1)
        await pilot.press("f3", "f3")
        await at_step(pilot, app, 3)
        flat = await wait_flat(pilot, app, "UNVERIFIED", "trust-store.json on SIGNING", "recovery.pub on SIGNING")
        assert f"key id {key_id(pk)}" in flat and "3 signers" in flat
        table = field(app, "candidates")
        assert app.screen.focused is table  # nothing typed: the stick's files have the focus
        assert [str(table.get_row_at(i)[0]) for i in range(2)] == ["recovery key", "trust store"]
        await pilot.press("down", "enter")  # the trust store
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        question = app.screen.question
        assert "FIRST trust store" in question and all(KID[n] in question for n in "ABC")
        await pilot.press("n")  # cancelled: nothing installed
        await wait_until(pilot, lambda: isinstance(app.screen, WizardScreen))
        assert not (await app.client.trust())["installed"]
        table.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_flat(pilot, app, "Installed the trust store trust-store.json from SIGNING",
                        "A trust store is installed (3 signers)")  # fmt: skip
        trust = await app.client.trust()
        assert trust["installed"] and sorted(s["key_id"] for s in trust["store"]["signers"]) == sorted(KID[n] for n in "ABC")
        # once a store is installed the stick's files are no longer offered; typed paths stay
        await wait_until(pilot, lambda: not app.screen.step.has_class("-candidates"), what="list hidden")
        assert field(app, "trust-path").disabled
    log = server.server.audit_log  # type: ignore[union-attr]
    acts = [e.action for e in log.entries(1, log.last_seq)]
    assert "media.trust.candidate.install" in acts and "bundles.trust.init" in acts


async def test_the_wizard_reopens_from_the_dashboard_with_steps_done_and_leaves_back(
    server: Server, make_app: Any
) -> None:
    app = make_app(setup_wizard=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await at_step(pilot, app, 1)
        await app.client.complete_setup()
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert "w Setup wizard" in screen_text(app)
        await pilot.press("w")
        await at_step(pilot, app, 1)
        flat = await wait_flat(pilot, app, "[1 Site] (done)", "2 CA (done)", "5 First client (done)",
                               "Setup was completed")  # fmt: skip
        assert "3 Signers (done)" not in flat  # skipped at setup: no trust store yet
        await pilot.press("f3", "f3")
        await at_step(pilot, app, 3)
        await wait_flat(pilot, app, "No trust store yet")
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        assert not any(isinstance(s, WizardScreen) for s in app.screen_stack)
        await pilot.press("2")  # the console's own keys work again
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NodesScreen", what="nodes")
