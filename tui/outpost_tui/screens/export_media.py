"""Export to a USB stick: pick a medium the root watcher holds, confirm, follow the write.

The console cannot write to removable media (it runs unprivileged), so it asks
the server for an export request (`POST /v1/media/exports`); the server builds
the signed bundle as for the CLI and the root watcher (`outpost bundles watch`)
writes it, reads it back, verifies it and reports. This dialog lists the media
the watcher reports, says plainly when there is no watcher or no medium, asks
for a confirmation naming the medium, then shows queued -> writing -> verified
(or failed with the watcher's reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..client import ApiError, ServerUnreachable
from ..widgets.safe import SafeInput
from .confirm import ConfirmScreen
from .form import InvalidForm
from .modal import Dialog

MEDIA_REFRESH_S = 1.0  # the watcher reports every 2 s; a stick appears without a key press
PROGRESS_POLL_S = 0.5
STATE_WORDS = {
    "queued": "Queued: waiting for the USB watcher to take it...",
    "writing": "Writing to the medium, then reading it back and verifying...",
}


@dataclass(frozen=True)
class ExportField:
    id: str
    label: str
    value: str = ""
    placeholder: str = ""


def size_text(size: int | None) -> str:
    if not size:
        return "size unknown"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


def medium_text(d: dict[str, Any]) -> str:
    return f"{d['device']}  {d.get('label') or '(no label)'}  {d.get('fstype') or '?'}  {size_text(d.get('size'))}"


class ExportToMediaScreen(Dialog[dict[str, Any] | None]):
    HELP = (
        "Write a signed export to a USB stick. The console cannot write to removable media "
        "itself: the server builds the export and the USB watcher (outpost bundles watch, "
        "running as root) writes it, reads it back from the medium and verifies it. Choose "
        "the medium (arrow keys), fill in the fields, press Write and confirm. The dialog "
        "shows the progress; Escape closes it (a request already queued is still written)."
    )

    DEFAULT_CSS = """
    ExportToMediaScreen #media-list {
        height: 5;
        border: solid ansi_white;
    }
    ExportToMediaScreen #media-list:focus {
        border: solid ansi_bright_cyan;
    }
    /* The stock highlight is grey on grey in the console's 16 colours: the
       chosen stick must stay readable whether or not the list has focus. */
    ExportToMediaScreen #media-list > .option-list--option-highlighted {
        background: ansi_blue;
        color: ansi_bright_white;
        text-style: bold;
    }
    ExportToMediaScreen #export-progress {
        height: auto;
        color: ansi_bright_yellow;
    }
    ExportToMediaScreen #export-progress.-verified {
        color: ansi_bright_green;
        text-style: bold;
    }
    ExportToMediaScreen #export-progress.-failed {
        color: ansi_bright_red;
        text-style: bold;
    }
    """

    def __init__(
        self,
        title: str,
        kind: str,
        what: str,
        fields: tuple[ExportField, ...] = (),
        *,
        build: Callable[[dict[str, str]], dict[str, Any]] = lambda _v: {},
        note: str = "",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.kind = kind
        self.what = what  # for the confirmation: "the audit log entries 1..40"
        self.fields = fields
        self.build = build
        self.note = note
        self.devices: list[dict[str, Any]] = []
        self.request_id: int | None = None
        self.result: dict[str, Any] | None = None
        self.media_state = "Asking the server which media are present..."

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = self.title_text
            if self.note:
                yield Static(self.note, classes="hint", markup=False)
            for f in self.fields:
                yield Label(f.label)
                yield SafeInput(value=f.value, placeholder=f.placeholder, id=f"field-{f.id}")
            yield Label("Write to (media the USB watcher holds)")
            yield OptionList(id="media-list")
            yield Static("Asking the server which media are present...", id="media-state", classes="hint",
                         markup=False)  # fmt: skip
            yield Static("", id="export-progress", markup=False)
            yield Static("", id="form-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Write", id="ok", variant="primary")

    def on_mount(self) -> None:
        inputs = list(self.query(SafeInput))
        (inputs[0] if inputs else self.query_one("#media-list", OptionList)).focus()
        self.load_media()
        self.set_interval(MEDIA_REFRESH_S, self._refresh_media)

    def _refresh_media(self) -> None:
        if self.request_id is None:
            self.load_media()

    def show_error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(text)

    @work(exclusive=True, group="export-media")
    async def load_media(self) -> None:
        try:
            view = await self.app.client.media()  # type: ignore[attr-defined]
        except ApiError as exc:
            self.media_state = f"Cannot ask the server which media are present: {exc.message}"
            self.query_one("#media-state", Static).update(self.media_state)
            return
        devices = list(view.get("devices") or [])
        if not view.get("watcher_running"):
            self.media_state = (
                "No USB watcher is running, so nothing can be written. On the appliance it is "
                "the outpost-usb-watch service (outpost bundles watch, as root)."
            )
        elif not devices:
            self.media_state = "No removable medium is present. Insert a USB stick; it appears here."
        else:
            self.media_state = f"{len(devices)} medium{'s' if len(devices) != 1 else ''} present."
        self.query_one("#media-state", Static).update(self.media_state)
        if [d["device"] for d in devices] == [d["device"] for d in self.devices]:
            self.devices = devices
            return
        listing = self.query_one("#media-list", OptionList)
        keep = self.selected_device()
        self.devices = devices
        listing.clear_options()
        listing.add_options([Option(medium_text(d), id=d["device"]) for d in devices])
        if devices:
            index = next((i for i, d in enumerate(devices) if d["device"] == keep), 0)
            listing.highlighted = index

    def selected_device(self) -> str | None:
        listing = self.query_one("#media-list", OptionList)
        if listing.highlighted is None or not self.devices:
            return None
        option = listing.get_option_at_index(listing.highlighted)
        return option.id

    # ------------------------------------------------------------------ write
    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.submit()

    def on_option_list_option_selected(self, _event: OptionList.OptionSelected) -> None:
        self.submit()  # Enter on a medium writes to it (after the confirmation)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.submit()
        else:
            self.dismiss(self.result)

    def action_cancel(self) -> None:
        self.dismiss(self.result)

    def submit(self) -> None:
        if self.request_id is not None:
            return
        values = {f.id: self.query_one(f"#field-{f.id}", SafeInput).value.strip() for f in self.fields}
        try:
            params = self.build(values)
        except InvalidForm as exc:
            self.show_error(str(exc))
            return
        device = self.selected_device()
        if device is None:
            self.show_error(f"Nothing to write to. {self.media_state}")
            return
        medium = next(d for d in self.devices if d["device"] == device)
        question = (
            f"Write {self.what} to {medium['device']} (label {medium.get('label') or 'none'}, "
            f"{medium.get('fstype') or '?'}, {size_text(medium.get('size'))})? The file is added "
            "to the medium; the USB watcher reads it back and verifies it."
        )

        def decided(ok: bool | None) -> None:
            if ok:
                self.show_error("")
                self.send(device, params)

        self.app.push_screen(ConfirmScreen(self.title_text, question, "Write"), decided)

    @work(exclusive=True, group="export-send")
    async def send(self, device: str, params: dict[str, Any]) -> None:
        ok = self.query_one("#ok", Button)
        ok.disabled = True
        progress = self.query_one("#export-progress", Static)
        try:
            r = await self.app.client.request_export(self.kind, device, params)  # type: ignore[attr-defined]
        except ServerUnreachable as exc:
            self.show_error(f"Server unreachable: {exc.message}. Nothing was queued.")
            ok.disabled = False
            return
        except ApiError as exc:
            self.show_error(f"Refused: {exc.message}")
            ok.disabled = False
            return
        self.request_id = int(r["id"])
        ok.display = False
        self.query_one("#cancel", Button).label = "Close"
        self.query_one("#cancel", Button).refresh(layout=True)
        while r["state"] in STATE_WORDS:
            progress.update(f"Request {r['id']}: {STATE_WORDS[r['state']]}")
            await asyncio.sleep(PROGRESS_POLL_S)
            try:
                r = await self.app.client.export_request(self.request_id)  # type: ignore[attr-defined]
            except ServerUnreachable:
                continue  # the status bar says so; the watcher keeps going
            except ApiError as exc:
                progress.set_class(True, "-failed")
                progress.update(f"Request {self.request_id}: {exc.message}")
                return
        self.result = r
        if r["state"] == "verified":
            progress.set_class(True, "-verified")
            progress.update(f"Written and verified: {r['path']}\nsha256 {r['sha256']}")
        else:
            progress.set_class(True, "-failed")
            progress.update(f"FAILED: {r.get('message') or 'the watcher gave no reason'}")
        self.query_one("#cancel", Button).focus()
