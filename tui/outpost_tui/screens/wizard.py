"""First-boot setup: site, CA, signers and recovery key, first admin, first client.

The app pushes this screen after the console is unlocked while the server
says setup is not complete (`/v1/site` -> `setup_complete`). It covers the
main screens until Finish (which marks setup complete, audited) or until the
operator leaves it (F10); it comes back at the next unlock until setup is
complete. Every step talks to the server only through the admin API; a
refusal or an unreachable server is shown in red under the step with the
server's words, and nothing typed is lost.

After setup, `w` on the dashboard pushes it again (`reopened=True`): the steps
setup went through show as done, F10 simply returns, Finish does not mark
setup complete a second time.

Keys: Enter does the step's main action (shown on the green button), F2 goes
back a step, F3 skips a step, F10 leaves setup for now, F1 is help.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, ContentSwitcher, Footer, Input, Static

from ..client import ApiError, ServerUnreachable
from ..widgets.status_bar import StatusBar
from .wizard_steps import (
    AdminStep,
    CertificateStep,
    EnrolStep,
    SiteStep,
    StepRefused,
    TrustStep,
    WizardStep,
)

STEPS: tuple[type[WizardStep], ...] = (SiteStep, CertificateStep, TrustStep, AdminStep, EnrolStep)

GENERAL_HELP = (
    "First-boot setup of this appliance, in five steps: the site's name and addresses, "
    "the certificate authority, the signers of USB bundles and the backup recovery key, "
    "the first administrator, and the first client's enrolment. Enter does what the green "
    "button says; F2 goes back, F3 skips a step, F10 leaves setup for now (it comes back "
    "at the next unlock until it is finished). The server's answer to every step is shown "
    "under it; nothing typed is lost when it refuses or cannot be reached."
)


class WizardScreen(Screen[None]):
    TITLE_TEXT = "First-boot setup"

    BINDINGS = [
        Binding("f2", "back", "Back"),
        Binding("f3", "skip", "Skip step"),
        Binding("f10", "leave", "Leave setup"),
    ]

    DEFAULT_CSS = """
    WizardScreen {
        background: ansi_black;
    }
    WizardScreen #wizard-head {
        dock: top;
        height: 2;
        padding: 0 1;
        background: ansi_blue;
        color: ansi_bright_white;
        text-style: bold;
    }
    WizardScreen #wizard-bottom {
        dock: bottom;
        height: 2;
    }
    WizardScreen #wizard-body {
        padding: 0 1;
        height: 1fr;
    }
    WizardScreen #wizard-error {
        color: ansi_bright_red;
        text-style: bold;
        height: auto;
    }
    WizardScreen #wizard-notice {
        color: ansi_bright_green;
        height: auto;
    }
    WizardScreen #wizard-buttons {
        height: 1;
        margin-top: 1;
        align-horizontal: right;
    }
    WizardScreen #wizard-buttons Button {
        margin-left: 2;
        width: auto;
    }
    WizardScreen ContentSwitcher {
        height: auto;
    }
    """

    def __init__(self, *, reopened: bool = False) -> None:
        super().__init__()
        self.reopened = reopened  # from the dashboard (w) after setup was completed
        self.index = 0
        self.site: dict[str, Any] | None = None
        self.admin_user = ""
        self.done_steps: set[int] = set()

    # ---------------------------------------------------------------- help
    @property
    def HELP(self) -> str:  # type: ignore[override]  # the app reads screen.HELP
        step = self.step
        return f"{GENERAL_HELP}\n\nThis step, {step.TITLE}: {step.HELP}"

    # --------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Static("", id="wizard-head", markup=False)
        with Vertical(id="wizard-bottom"):
            yield StatusBar()
            yield Footer()
        with VerticalScroll(id="wizard-body"):
            with ContentSwitcher(initial="step-1"):
                for i, cls in enumerate(STEPS, 1):
                    yield cls(id=f"step-{i}")
            yield Static("", id="wizard-notice", markup=False)
            yield Static("", id="wizard-error", markup=False)
            with Horizontal(id="wizard-buttons"):
                yield Button("Back (F2)", id="back")
                yield Button("Skip (F3)", id="skip")
                yield Button("Next (Enter)", id="primary", variant="primary")

    @property
    def step(self) -> WizardStep:
        return self.query_one(f"#step-{self.index + 1}", WizardStep)

    def on_mount(self) -> None:
        self.show_step(0)
        if self.reopened:
            self.mark_completed()

    @work(group="wizard-done")
    async def mark_completed(self) -> None:
        """Reopened after setup: the steps setup went through show as done."""
        try:
            site = await self.app.client.site()  # type: ignore[attr-defined]
            trust = await self.app.client.trust()  # type: ignore[attr-defined]
        except ApiError as exc:
            self.show_error(self._explain(exc))
            return
        if site.get("setup_complete"):
            # a step skipped then is not "done": the signers step is, once a store is installed
            self.done_steps.update(
                i for i, cls in enumerate(STEPS) if cls is not TrustStep or trust.get("installed")
            )
            self.show_notice(
                "Setup was completed; every step can be looked at and done again. "
                "F10 returns to the console."
            )
            self.refresh_buttons()

    def show_step(self, index: int) -> None:
        self.index = index
        self.query_one(ContentSwitcher).current = f"step-{index + 1}"
        self.show_error("")
        self.refresh_buttons()
        self.step.first_focus()
        self.load_step()

    def refresh_buttons(self) -> None:
        marks = "   ".join(
            (f"[{i + 1} {cls.SHORT}]" if i == self.index else f"{i + 1} {cls.SHORT}")
            + (" (done)" if i in self.done_steps else "")
            for i, cls in enumerate(STEPS)
        )
        self.query_one("#wizard-head", Static).update(
            f"OUTPOST FIRST-BOOT SETUP  Step {self.index + 1} of {len(STEPS)}: "
            f"{self.step.TITLE}\n{marks}"
        )
        primary = self.query_one("#primary", Button)
        primary.label = f"{self.step.PRIMARY} (Enter)"
        # Button.label does not re-layout on change: without this an auto-width
        # button keeps the width of its old label and cuts the new one short
        primary.refresh(layout=True)
        # hidden rather than disabled: nothing to press is clearer than a dead button
        shown_key = isinstance(self.step, EnrolStep) and self.step.has_class("-created")
        self.query_one("#back", Button).display = self.index > 0 and not shown_key
        self.query_one("#skip", Button).display = self.index < len(STEPS) - 1

    def show_error(self, text: str) -> None:
        self.query_one("#wizard-error", Static).update(text)

    def show_notice(self, text: str) -> None:
        self.query_one("#wizard-notice", Static).update(text)

    def _explain(self, exc: ApiError) -> str:
        if isinstance(exc, ServerUnreachable):
            self.app.poll_status()  # type: ignore[attr-defined]
            return (
                f"Server unreachable: {exc.message}. Nothing was lost; press Enter to try "
                "again when it is back."
            )
        return f"Refused by the server: {exc.message}"

    # -------------------------------------------------------------- workers
    @work(exclusive=True, group="wizard-load")
    async def load_step(self) -> None:
        try:
            await self.step.load()
        except ApiError as exc:
            self.show_error(self._explain(exc))

    @work(exclusive=True, group="wizard-primary")
    async def primary(self) -> None:
        step = self.step
        finishing = isinstance(step, EnrolStep) and step.has_class("-created")
        button = self.query_one("#primary", Button)
        button.disabled = True
        self.show_error("Working...")
        try:
            if finishing and not self.reopened:
                await self.app.client.complete_setup()  # type: ignore[attr-defined]
            else:
                notice = await step.apply()
        except StepRefused as exc:
            self.show_error(str(exc))
            return
        except ApiError as exc:
            self.show_error(self._explain(exc))
            return
        finally:
            button.disabled = False
        self.show_error("")
        if finishing:
            self.app.notify(
                "Setup complete. These screens are the console from now on; F1 explains each.",
                title="First-boot setup",
            )
            self.dismiss(None)
            return
        self.done_steps.add(self.index)
        if isinstance(step, EnrolStep):
            self.show_notice("")
            self.refresh_buttons()
            self.query_one("#primary", Button).focus()
            return
        self.show_notice(notice)
        self.show_step(self.index + 1)

    # ---------------------------------------------------------------- input
    def on_input_submitted(self, _event: Input.Submitted) -> None:
        """Enter in any field does the step (as in every form of the console; Tab moves)."""
        self.primary()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "primary":
            self.primary()
        elif event.button.id == "back":
            self.action_back()
        elif event.button.id == "skip":
            self.action_skip()

    @work(group="wizard-candidate")
    async def install_candidate(self, c: dict[str, Any]) -> None:
        """Install a first-trust file from a stick (the admin confirmed its fingerprints)."""
        self.show_error("Working...")
        try:
            await self.app.client.install_candidate(int(c["id"]))  # type: ignore[attr-defined]
        except ApiError as exc:
            self.show_error(self._explain(exc))
            return
        self.show_error("")
        what = "trust store" if c["kind"] == "trust-store" else "recovery key"
        self.show_notice(f"Installed the {what} {c['file']} from {c.get('label') or c['device']}.")
        self.load_step()

    def action_back(self) -> None:
        if self.index > 0:
            self.show_notice("")
            self.show_step(self.index - 1)

    def action_skip(self) -> None:
        if self.index < len(STEPS) - 1:
            self.show_notice(f"Skipped: {self.step.TITLE}.")
            self.show_step(self.index + 1)

    def action_leave(self) -> None:
        if self.reopened:
            self.dismiss(None)  # setup was completed before: nothing to warn about
            return
        self.app.notify(
            "Setup is not finished; it opens again at the next unlock.",
            title="First-boot setup",
            severity="warning",
        )
        self.dismiss(None)

    def key_enter(self) -> None:
        """Enter outside a field or button (e.g. on the CA step) does the main action."""
        if not isinstance(self.focused, Input | Button):
            self.primary()
