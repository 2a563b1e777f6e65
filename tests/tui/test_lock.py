"""The console passphrase: first start, lock, unlock, wrong tries."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from outpost_tui.lock import ConsoleLock
from outpost_tui.screens.dashboard import DashboardScreen
from outpost_tui.screens.lock import LockScreen

from .conftest import Server, wait_text, wait_until


def test_lock_file_holds_only_a_salted_scrypt_hash(tmp_path: Path) -> None:
    lock = ConsoleLock(tmp_path / "console-lock.json")
    assert not lock.is_set
    lock.set("correct horse")
    record = json.loads(lock.path.read_text())
    assert record["kdf"] == "scrypt" and "correct horse" not in lock.path.read_text()
    assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
    assert lock.verify("correct horse") and not lock.verify("wrong horse")
    other = ConsoleLock(tmp_path / "other.json")
    other.set("correct horse")
    assert json.loads(other.path.read_text())["hash"] != record["hash"]  # salted


async def test_first_start_sets_passphrase_then_lock_and_unlock(
    server: Server, make_app: Any
) -> None:
    lock = ConsoleLock(server.data_dir / "console-lock.json")
    app = make_app(lock=lock)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LockScreen))
        await wait_text(pilot, app, "No console passphrase is set yet")
        # too short, then mismatched
        await pilot.press(*"abc", "enter", *"abc", "enter")
        await wait_text(pilot, app, "at least 6 characters")
        await pilot.press(*"secret1", "enter", *"secret2", "enter")
        await wait_text(pilot, app, "the two entries differ")
        assert not lock.is_set
        await pilot.press(*"secret1", "enter", *"secret1", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="unlocked")
        assert lock.is_set and lock.verify("secret1")
        # Ctrl+L locks; while locked the number keys do not switch screens
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, LockScreen))
        await wait_text(pilot, app, "OUTPOST CONSOLE: locked")
        await pilot.press("escape", "2")
        await pilot.pause()
        assert isinstance(app.screen, LockScreen)
        # help works on the lock screen too
        await pilot.press("f1")
        await wait_text(pilot, app, "scrypt")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, LockScreen))
        # the password field shows no glyph the console lacks
        await pilot.press(*"nope")
        await wait_text(pilot, app, "****")
        await pilot.press("enter")
        await wait_text(pilot, app, "Wrong passphrase")
        await pilot.press(*"secret1", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))


async def test_wrong_tries_slow_down(server: Server, make_app: Any) -> None:
    lock = ConsoleLock(server.data_dir / "console-lock.json")
    lock.set("secret1")
    app = make_app(lock=lock)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LockScreen))
        for _ in range(3):
            await pilot.press(*"bad", "enter")
            await wait_until(pilot, lambda: not app.screen.query_one("#pass1").value)
            await pilot.pause(0.1)
        await wait_text(pilot, app, "before the next try")
        await pilot.press(*"secret1", "enter")  # right, but during the wait
        await wait_text(pilot, app, "Too many wrong passphrases")
        assert isinstance(app.screen, LockScreen)


async def test_idle_console_locks_itself(server: Server, make_app: Any) -> None:
    lock = ConsoleLock(server.data_dir / "console-lock.json")
    lock.set("secret1")
    app = make_app(lock=lock, idle_lock_s=2.0)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LockScreen))
        await pilot.press(*"secret1", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await wait_until(
            pilot, lambda: isinstance(app.screen, LockScreen), timeout=5, what="idle lock"
        )
