"""The Outpost console: a Textual app for tty1, talking only to the admin API.

Small on purpose: screens live in `screens/`, widgets in `widgets/`, the API
client in `client.py`. The app owns three things every screen shares:

* `client`: the async admin API client;
* `connection`: the link state, refreshed by a monitor worker every
  `poll_interval` seconds (the status bar, title and dashboard follow it;
  screens reload when the server comes back);
* the console lock: a passphrase screen on start, on Ctrl+L and when idle.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive

from .client import ApiError, AsyncAdminClient, ServerUnreachable
from .connection import Connection
from .lock import ConsoleLock
from .screens.audit import AuditScreen
from .screens.backups import BackupsScreen
from .screens.bundles import BundlesScreen
from .screens.certs import CertsScreen
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.keys import KeysScreen
from .screens.lock import LockScreen
from .screens.nodes import NodesScreen
from .screens.policy import PolicyScreen
from .screens.upcoming import UPCOMING, UpcomingScreen
from .screens.users import UsersScreen
from .screens.wizard import WizardScreen
from .theme import CONSOLE_THEME, THEME_NAME, apply_console_glyphs
from .widgets.nav_bar import NAV_ITEMS

DEFAULT_POLL_S = 2.0
HIDDEN_IN_HELP = frozenset({"screen.copy_text", "app.copy_text", "copy_text"})
DEFAULT_IDLE_LOCK_S = 600.0


class OutpostConsole(App[None]):
    # The console-wide sheet is *default* CSS (like a widget's DEFAULT_CSS), so
    # the more specific rules in screens and widgets override it.
    DEFAULT_CSS = (Path(__file__).parent / "outpost.tcss").read_text()
    TITLE = "Outpost console"
    ENABLE_COMMAND_PALETTE = False  # it would offer actions around the lock
    DEFAULT_MODE = "dashboard"
    MODES: dict[str, Any] = {
        "dashboard": DashboardScreen,
        "nodes": NodesScreen,
        "users": UsersScreen,
        "keys": KeysScreen,
        "backups": BackupsScreen,
        "bundles": BundlesScreen,
        "policy": PolicyScreen,
        "audit": AuditScreen,
        "certificates": CertsScreen,
        **{mode: partial(UpcomingScreen, mode) for mode in UPCOMING},
    }
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help"),
        Binding("ctrl+l", "lock", "Lock"),
        *(
            Binding(key, f"switch_mode('{mode}')", label, show=False)
            for key, mode, label in NAV_ITEMS
        ),
    ]

    connection: reactive[Connection] = reactive(Connection, always_update=True)

    def __init__(
        self,
        client: AsyncAdminClient,
        lock: ConsoleLock | None,
        *,
        poll_interval: float = DEFAULT_POLL_S,
        idle_lock_s: float = DEFAULT_IDLE_LOCK_S,
        setup_wizard: bool = True,
    ) -> None:
        apply_console_glyphs()
        super().__init__()
        self.client = client
        self.lock = lock
        self.poll_interval = poll_interval
        self.idle_lock_s = idle_lock_s
        self.locked = False
        self._last_input = time.monotonic()
        self.setup_wizard = setup_wizard

    def on_mount(self) -> None:
        self.register_theme(CONSOLE_THEME)
        self.theme = THEME_NAME
        self.set_interval(self.poll_interval, self.poll_status)
        self.poll_status()
        if self.lock is not None:
            self.action_lock()
            self.set_interval(min(15.0, self.idle_lock_s), self._check_idle)
        else:
            self.offer_setup()

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # ----------------------------------------------------- connection monitor
    @work(exclusive=True, group="status", exit_on_error=False)
    async def poll_status(self) -> None:
        before = self.connection
        now = datetime.now()
        try:
            status = await self.client.status()
        except ServerUnreachable as exc:
            new = Connection(False, exc.message, before.status, now, self.poll_interval)
        except ApiError as exc:  # it answered, but not with a status
            new = Connection(
                False, f"status refused: {exc.message}", before.status, now, self.poll_interval
            )
        else:
            new = Connection(True, "", status, now, self.poll_interval)
        if new.ok and before.ok and new.status == before.status:
            return  # nothing changed: spare every screen's watchers a redraw
        self.connection = new
        if new.ok and before.ok is False:
            self.notify("The server is reachable again.", title="Reconnected")
        elif new.ok is False and before.ok is not False:
            self.notify(
                f"{new.error}. The console keeps retrying.",
                title="Server unreachable",
                severity="error",
            )

    # ------------------------------------------------------------------ lock
    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown):
            self._last_input = time.monotonic()
        await super().on_event(event)

    def _check_idle(self) -> None:
        if not self.locked and time.monotonic() - self._last_input > self.idle_lock_s:
            self.action_lock()

    def action_lock(self) -> None:
        if self.lock is None or self.locked:
            return
        self.locked = True
        self.push_screen(LockScreen(self.lock))

    def unlock(self) -> None:
        self.locked = False
        self._last_input = time.monotonic()
        if isinstance(self.screen, LockScreen):
            self.pop_screen()
        self.notify("Console unlocked. Ctrl+L locks it again.")
        self.offer_setup()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_mode" and any(isinstance(s, WizardScreen) for s in self.screen_stack):
            return False  # finish or leave (F10) setup first, also from its help panel
        return not (self.locked and action in ("switch_mode", "lock"))

    # ------------------------------------------------------- first-boot setup
    @work(exclusive=True, group="setup", exit_on_error=False)
    async def offer_setup(self) -> None:
        """Open the first-boot wizard while the server says setup is not complete."""
        if not self.setup_wizard or any(isinstance(s, WizardScreen) for s in self.screen_stack):
            return
        for _ in range(30):  # the server may still be starting (console and server boot together)
            try:
                site = await self.client.site()
                break
            except ServerUnreachable:
                await asyncio.sleep(2.0)
            except ApiError:
                return  # a server without /v1/site: nothing to set up here
        else:
            return
        if site.get("setup_complete") or self.locked:
            return
        if not any(isinstance(s, WizardScreen) for s in self.screen_stack):
            self.push_screen(WizardScreen())

    # ------------------------------------------------------------ navigation
    def focus_pending(self) -> None:
        if isinstance(self.screen, NodesScreen):
            self.screen.focus_pending()

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            screen.dismiss(None)
            return
        by_action: dict[str, tuple[list[str], str]] = {}
        for key, active in screen.active_bindings.items():
            b = active.binding
            # The screen's own keys; widget-level ones (table cursor keys and
            # the like) are standard and would drown them.
            if active.node is not screen or not b.description or b.action in HIDDEN_IN_HELP:
                continue
            shown, _ = by_action.setdefault(b.action, ([], b.description))
            shown.append(self.get_key_display(Binding(key, b.action)))
        keys = [(", ".join(shown), what) for shown, what in by_action.values()]
        title = getattr(screen, "TITLE_TEXT", "") or type(screen).__name__
        about = getattr(screen, "HELP", "") or "No help for this screen."
        self.push_screen(HelpScreen(title, about, keys))
