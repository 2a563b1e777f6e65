"""The lock screen: unlock with the console passphrase, or set it on first start.

It covers everything; while it is up the app refuses screen switches. Wrong
passphrases slow down (after 3 failures, a growing wait). The check runs in a
thread: scrypt is deliberately slow.
"""

from __future__ import annotations

import asyncio
import time

from textual import work
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Input, Label, Static

from ..lock import ConsoleLock, PassphraseRejected
from ..widgets.safe import SafeInput

FREE_TRIES = 3
MAX_WAIT_S = 60


class LockScreen(Screen[None]):
    TITLE_TEXT = "Locked"

    DEFAULT_CSS = """
    LockScreen {
        align: center middle;
        background: ansi_black;
    }
    LockScreen #lock-box {
        width: 64;
        max-width: 100%;
        height: auto;
        border: double ansi_cyan;
        border-title-color: ansi_bright_white;
        border-title-style: bold;
        padding: 0 2;
    }
    LockScreen #lock-error {
        color: ansi_bright_red;
        text-style: bold;
        height: auto;
        margin-top: 1;
    }
    LockScreen .hint {
        color: ansi_white;
        margin-top: 1;
    }
    LockScreen Label {
        margin-top: 1;
    }
    """

    def __init__(self, lock: ConsoleLock) -> None:
        super().__init__()
        self.lock = lock
        self.setting = not lock.is_set
        self.failures = 0
        self.wait_until = 0.0
        self.HELP = (
            "The console is locked so that walking up to the appliance is not enough "
            "to change it. Type the console passphrase and press Enter.\n\n"
            "On the very first start there is no passphrase yet: choose one (at least "
            "6 characters) and type it twice. It is stored as a salted scrypt hash in "
            "the data directory (console-lock.json); deleting that file, which needs "
            "access to the data directory, resets it.\n\n"
            "After 3 wrong passphrases each further try makes you wait longer. "
            "Ctrl+L locks the console again at any time; it also locks itself when idle."
        )

    def compose(self) -> ComposeResult:
        with Center(), Vertical(id="lock-box") as box:
            if self.setting:
                box.border_title = "OUTPOST CONSOLE: set a passphrase"
                yield Static(
                    "No console passphrase is set yet. Choose one now; it will be asked "
                    "for whenever the console is locked.",
                    classes="hint",
                )
                yield Label("New passphrase")
                yield SafeInput(password=True, id="pass1")
                yield Label("Again")
                yield SafeInput(password=True, id="pass2")
            else:
                box.border_title = "OUTPOST CONSOLE: locked"
                yield Label("Passphrase")
                yield SafeInput(password=True, id="pass1")
            yield Static("", id="lock-error")
            yield Static("Enter to continue, F1 for help.", classes="hint")

    def on_mount(self) -> None:
        # A lock screen pushed as the console shuts down (an idle lock racing
        # the exit) may be mounted without its children: nothing to focus then.
        for field in self.query("#pass1").results(Input):
            field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.setting and event.input.id == "pass1":
            self.query_one("#pass2", Input).focus()
            return
        self.check()

    def _error(self, text: str) -> None:
        self.query_one("#lock-error", Static).update(text)

    @work(exclusive=True, group="lock")
    async def check(self) -> None:
        pass1 = self.query_one("#pass1", Input)
        if self.setting:
            pass2 = self.query_one("#pass2", Input)
            try:
                ConsoleLock.check_new(pass1.value, pass2.value)
            except PassphraseRejected as exc:
                self._error(f"Not set: {exc}.")
                pass1.value = pass2.value = ""
                pass1.focus()
                return
            await asyncio.to_thread(self.lock.set, pass1.value)
            self.app.unlock()  # type: ignore[attr-defined]
            return
        wait = self.wait_until - time.monotonic()
        if wait > 0:
            self._error(f"Too many wrong passphrases: wait {wait:.0f}s.")
            return
        attempt, pass1.value = pass1.value, ""
        if await asyncio.to_thread(self.lock.verify, attempt):
            self.app.unlock()  # type: ignore[attr-defined]
            return
        self.failures += 1
        msg = "Wrong passphrase."
        if self.failures >= FREE_TRIES:
            delay = min(MAX_WAIT_S, 2 ** (self.failures - FREE_TRIES + 1))
            self.wait_until = time.monotonic() + delay
            msg += f" Wait {delay}s before the next try."
        self._error(msg)
