"""The five steps of the first-boot wizard (the screen itself is wizard.py).

Each step is a widget with the same small protocol: `load()` fetches what the
step shows (called whenever the step is entered), `apply()` does the step's
work through the admin API and raises `StepRefused` (input the console can
judge itself) or `ApiError` (the server's reason) when it cannot, and
`PRIMARY` names what Enter does. The screen shows errors, moves between
steps and keeps whatever was typed.

Files (a trust store, a recovery public key) are given by path and read by
the console, which runs on the same box as the server, exactly as the Policy
screen reads policy files: the console never needs the server to read paths
for it, and the server keeps receiving documents, not file names. The
signers step also lists first-trust files the root USB watcher found on a
stick (`GET /v1/media` -> candidates, unverified by nature) and installs one
after a confirmation showing its fingerprints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Static

from ..client import ApiError
from ..local_files import LocalFileError, read_text_file
from ..widgets.safe import SafeCheckbox, SafeInput
from .confirm import ConfirmScreen
from .key_form import DURATION_RE

if TYPE_CHECKING:
    from .wizard import WizardScreen

# The console reads these files itself; a trust store or a key is a few KiB.
MAX_TRUST_FILE_BYTES = 256 * 1024
MAX_KEY_FILE_BYTES = 16 * 1024
RECOVERY_PREFIX = "opr1:"
USER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$", re.IGNORECASE)


class StepRefused(ValueError):
    """The step cannot go ahead; the message says what and where."""


def read_small_file(path_text: str, what: str, limit: int) -> tuple[Path, str]:
    """A file's path and text, or StepRefused saying plainly what is wrong."""
    try:
        return read_text_file(path_text, what, limit)
    except LocalFileError as exc:
        raise StepRefused(str(exc)) from None


def recovery_key_from(text: str) -> tuple[str, str]:
    """(the opr1: key, where it came from) from a pasted key or a key file's path."""
    given = text.strip()
    if given.startswith(RECOVERY_PREFIX):
        return given, "the key typed in"
    if not given.startswith(("/", "~", ".")):
        raise StepRefused(
            f"Recovery key {given[:40]!r}: give the path of the public key file or the key "
            f"itself, which starts with {RECOVERY_PREFIX} (made by `outpost backup keygen`)."
        )
    path, body = read_small_file(given, "recovery public key", MAX_KEY_FILE_BYTES)
    keys = [ln.strip() for ln in body.splitlines() if ln.strip().startswith(RECOVERY_PREFIX)]
    if "OUTPOST-BACKUP-RECOVERY-KEY" in body:
        raise StepRefused(
            f"{path} is a recovery SECRET key. It must never be on the appliance: remove it "
            f"and give the public key ({RECOVERY_PREFIX}...) instead."
        )
    if len(keys) != 1:
        raise StepRefused(
            f"{path} holds {'no' if not keys else len(keys)} recovery public key"
            f"{'s' if len(keys) > 1 else ''}: expected one line starting with {RECOVERY_PREFIX}."
        )
    return keys[0], str(path)


class WizardStep(Vertical):
    SHORT = ""  # in the list of steps under the title
    TITLE = ""
    HELP = ""
    PRIMARY = "Next"

    DEFAULT_CSS = """
    WizardStep {
        height: auto;
    }
    WizardStep .hint {
        color: ansi_white;
        height: auto;
    }
    WizardStep .info {
        color: ansi_bright_white;
        height: auto;
    }
    WizardStep .done {
        color: ansi_bright_green;
        height: auto;
    }
    WizardStep .warn {
        color: ansi_bright_yellow;
        height: auto;
    }
    """

    @property
    def wizard(self) -> WizardScreen:
        return self.screen  # type: ignore[return-value]

    @property
    def client(self) -> Any:
        return self.app.client  # type: ignore[attr-defined]

    async def load(self) -> None:
        """Fetch what the step shows (may raise ApiError; the screen reports it)."""

    async def apply(self) -> str:
        """Do the step; returns a line for the screen's notice."""
        return ""

    def first_focus(self) -> None:
        inputs = [i for i in self.query(SafeInput) if not i.disabled]
        if inputs:
            inputs[0].focus()
        else:  # nothing to type (the CA step): Enter presses the main button
            self.screen.query_one("#primary").focus()

    def value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", SafeInput).value.strip()


class SiteStep(WizardStep):
    SHORT = "Site"
    TITLE = "Site name and addresses"
    HELP = (
        "The site name labels this appliance's relay region and its backups. The login URL "
        "is what every client is given as --login-server: http://ADDRESS (or https://) of "
        "this box as the clients reach it, an IP address or a DNS name. It is filled in with "
        "the address the server uses now. Other addresses: further IP addresses or DNS names "
        "clients may use to reach the box (comma separated); they go into the server's TLS "
        "certificate in the next step. Saved in DATA_DIR/site.json; a new site name or login "
        "URL takes effect when the server restarts (the step says so)."
    )

    def compose(self) -> ComposeResult:
        yield Label("Site name (letters, digits, . _ -)")
        yield SafeInput(placeholder="plant7", id="site-name")
        yield Label("Login URL for clients")
        yield SafeInput(placeholder="http://10.1.2.3", id="server-url")
        yield Label("Other addresses of this box (optional, comma separated)")
        yield SafeInput(placeholder="outpost.plant7.lan, 192.168.7.2", id="addresses")
        yield Static("", id="site-note", classes="hint", markup=False)

    async def load(self) -> None:
        site = await self.client.site()
        for wid, val in (
            ("site-name", site["site_name"]),
            ("server-url", site["server_url"]),
            ("addresses", ", ".join(site["addresses"])),
        ):
            field = self.query_one(f"#{wid}", SafeInput)
            if not field.value:
                field.value = val
        self.query_one("#site-note", Static).update(
            f"Now running as site {site['running']['site_name']!r} at "
            f"{site['running']['server_url']}."
        )

    async def apply(self) -> str:
        name, url = self.value("site-name"), self.value("server-url")
        if not name:
            raise StepRefused("Site name: give one, e.g. plant7.")
        if not url.startswith(("http://", "https://")):
            raise StepRefused(
                f"Login URL {url!r}: it must start with http:// or https://, e.g. http://10.1.2.3"
            )
        site = await self.client.set_site(
            site_name=name, server_url=url, addresses=self.value("addresses")
        )
        self.wizard.site = site
        notes = [f"Saved: site {site['site_name']}, login URL {site['server_url']}."]
        if site["restart_required"]:
            fields = " and ".join(r["field"].replace("_", " ") for r in site["restart_required"])
            verb = "takes" if len(site["restart_required"]) == 1 else "take"
            notes.append(f"The new {fields} {verb} effect when the server restarts.")
        for o in site["overridden_by_command_line"]:
            notes.append(
                f"The server's command line sets {o['field'].replace('_', ' ')} to "
                f"{o['running']}; that wins over the saved value (serve.env)."
            )
        return " ".join(notes)


class CertificateStep(WizardStep):
    SHORT = "CA"
    TITLE = "Certificate authority"
    HELP = (
        "The server made its own certificate authority (CA) on its first start. Clients "
        "that use the relay over TLS must trust its root certificate: compare the SHA-256 "
        "below with what you install on them (the Certificates screen, key 9, shows the "
        "root as PEM). The server certificate must carry every address clients use; if it "
        "does not yet, Enter reissues it for the names of step 1 (new connections get it at "
        "once). The CA's own site name was fixed when it was made."
    )

    def compose(self) -> ComposeResult:
        yield Static("Loading the CA...", id="ca-info", classes="info", markup=False)
        yield Static("", id="ca-names", classes="hint", markup=False)

    async def load(self) -> None:
        certs = await self.client.certs()
        site = await self.client.site()
        self.wizard.site = site
        root, leaf = certs["root"], certs.get("leaf") or {}
        fp = root["sha256"]
        half = len(fp) // 2 + 1 if len(fp) > 60 else len(fp)
        self.query_one("#ca-info", Static).update(
            f"CA of site {certs['site']!r}: {root['subject']}\n"
            f"Root valid until {root['not_after']}; root key: {certs['root_key']['state']}\n"
            f"Root SHA-256: {fp[:half]}\n              {fp[half:]}"
        )
        cert = site.get("certificate") or {}
        wanted = ", ".join(cert.get("wanted") or [])
        current = ", ".join(leaf.get("names") or [])
        names = self.query_one("#ca-names", Static)
        if cert.get("error"):
            names.update(f"The CA cannot be read: {cert['error']}")
        elif cert.get("covers"):
            names.set_classes("done")
            names.update(f"The server certificate carries every address: {current}.")
            self.PRIMARY = "Next"
        else:
            names.set_classes("warn")
            names.update(
                f"Server certificate now: {current}.\nNeeded for step 1: {wanted}.\n"
                "Enter reissues it for these names."
            )
            self.PRIMARY = "Reissue"
        self.wizard.refresh_buttons()

    async def apply(self) -> str:
        cert = (self.wizard.site or {}).get("certificate") or {}
        if cert.get("covers"):
            return ""
        result = await self.client.renew_leaf()
        return f"Server certificate reissued (serial {result['serial'][:16]}...)."


class TrustStep(WizardStep):
    SHORT = "Signers"
    TITLE = "Signers and recovery key"
    HELP = (
        "Two things that only come from outside the box. The trust store (trust-store.json, "
        "made at the signing station: docs/bundles.md) says whose signatures USB bundles "
        "need; it can be installed here only while none is. The recovery public key "
        "(opr1:..., from `outpost backup keygen` on an offline machine) is what backups are "
        "sealed to; its secret half never comes near the appliance. Give each as the full "
        "path of the file (for example on a stick mounted on this box, or copied into the "
        "data directory), or type the opr1: key itself. Either may be left empty; F3 skips "
        "the step.\n\nFrom a USB stick: while no trust store is installed, the USB watcher "
        "lists trust-store.json and recovery keys (*.pub) found at the top of a stick. They "
        "cannot be checked by signature (they ARE the first trust): compare the signer key "
        "ids or the recovery key id shown with the ones printed at the signing station, "
        "then select one and press Enter; a confirmation shows the fingerprints again."
    )

    DEFAULT_CSS = """
    TrustStep #candidates-box {
        height: auto;
        display: none;
    }
    TrustStep.-candidates #candidates-box {
        display: block;
    }
    TrustStep #candidates {
        height: auto;
        max-height: 8;
    }
    """

    candidates: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static("", id="trust-state", classes="hint", markup=False)
        with Vertical(id="candidates-box"):
            yield Static(
                "On a USB stick (UNVERIFIED: compare the fingerprints with the signing "
                "station's printout; Enter installs the selected one after a confirmation):",
                classes="warn", markup=False,
            )  # fmt: skip
            yield DataTable(id="candidates", cursor_type="row")
        yield Label("Trust store file (trust-store.json)")
        yield SafeInput(placeholder="/media/usb/trust-store.json", id="trust-path")
        yield Label("Recovery public key: file path, or the opr1: key itself")
        yield SafeInput(placeholder="/media/usb/recovery.pub or opr1:...", id="recovery")
        yield Static("", id="recovery-state", classes="hint", markup=False)

    async def load(self) -> None:
        trust = await self.client.trust()
        backup = await self.client.backup_status()
        path = self.query_one("#trust-path", SafeInput)
        state = self.query_one("#trust-state", Static)
        if trust.get("installed"):
            signers = len((trust.get("store") or {}).get("signers") or [])
            state.set_classes("done")
            state.update(f"A trust store is installed ({signers} signers); it stays as it is.")
            path.disabled = True
        else:
            state.set_classes("warn")
            state.update("No trust store yet: USB bundles cannot be accepted until one is.")
        await self.load_candidates(installed=bool(trust.get("installed")))
        keys = [r["id"] + (f" ({r['label']})" if r.get("label") else "")
                for r in (backup.get("settings") or {}).get("recipients") or []]  # fmt: skip
        rec = self.query_one("#recovery-state", Static)
        rec.set_classes("done" if keys else "warn")
        rec.update(
            "Backups are sealed to: " + ", ".join(keys)
            if keys
            else "No recovery key yet: backups cannot be made until one (or a passphrase) is set."
        )

    async def load_candidates(self, *, installed: bool) -> None:
        """First-trust files the USB watcher found on a stick (the server lists them only
        while no trust store is installed)."""
        try:
            media = {} if installed else await self.client.media()
        except ApiError:
            media = {}  # an older server without /v1/media: typed paths only
        self.candidates = list(media.get("candidates") or [])
        table = self.query_one("#candidates", DataTable)
        if not table.columns:
            for key, label in (("what", "What"), ("file", "File on"), ("fp", "Fingerprint"),
                               ("note", "Note")):  # fmt: skip
                table.add_column(label, key=key)
        table.clear()
        for c in self.candidates:
            what = "trust store" if c["kind"] == "trust-store" else "recovery key"
            fps = c.get("fingerprints") or []
            fp = (f"{len(fps)} signers: " if c["kind"] == "trust-store" else "key id ") + ", ".join(fps)
            table.add_row(what, f"{c['file']} on {c.get('label') or c['device']}",
                          fp if fps else "-", c.get("problem") or "", key=str(c["id"]))  # fmt: skip
        self.set_class(bool(self.candidates), "-candidates")
        if self.candidates and not self.value("trust-path") and not self.value("recovery"):
            table.focus()  # nothing typed: the stick's files are the likely way in

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a candidate: confirm with its fingerprints, then install it."""
        event.stop()
        c = next((c for c in self.candidates if str(c["id"]) == event.row_key.value), None)
        if c is None:
            return
        if c.get("problem"):
            self.wizard.show_error(f"{c['file']} cannot be installed: {c['problem']}")
            return
        self.app.push_screen(
            ConfirmScreen("Install from USB stick", candidate_question(c), "Install"),
            lambda ok: self.wizard.install_candidate(c) if ok else None,
        )

    async def apply(self) -> str:
        path_field = self.query_one("#trust-path", SafeInput)
        trust_path = "" if path_field.disabled else path_field.value.strip()
        recovery = self.value("recovery")
        if not trust_path and not recovery:
            raise StepRefused(
                "Give a trust store file and/or a recovery key, or press F3 to skip this step."
            )
        done = []
        if trust_path:
            path, text = read_small_file(trust_path, "trust store", MAX_TRUST_FILE_BYTES)
            try:
                await self.client.init_trust(text)
            except ApiError as exc:
                exc.message = f"trust store {path}: {exc.message}"
                raise
            done.append(f"trust store from {path} installed")
            path_field.value = ""
        if recovery:
            key, source = recovery_key_from(recovery)
            try:
                added = await self.client.add_recovery_key(key, "first boot")
            except ApiError as exc:
                exc.message = f"recovery key from {source}: {exc.message}"
                raise
            ids = [r["id"] for r in added.get("recipients") or []]
            done.append(f"recovery key {ids[-1] if ids else ''} added")
            self.query_one("#recovery", SafeInput).value = ""
        return "Done: " + "; ".join(done) + "."


def candidate_question(c: dict[str, Any]) -> str:
    """The confirmation for a first-trust file: every fingerprint, in full, to compare."""
    where = f"{c['file']} on {c['device']} (label {c.get('label') or 'none'})"
    if c["kind"] == "trust-store":
        ids = "\n".join(f"  {k}" for k in c.get("fingerprints") or [])
        return (
            f"Install {where} as this appliance's FIRST trust store? Nothing can verify it: "
            f"install it only if these signer key ids are the ones printed at the signing "
            f"station:\n{ids}\n{c.get('detail') or ''}\nAfterwards it changes only by bundles "
            "its signers sign."
        )
    return (
        f"Add the recovery public key from {where}? Backups will be sealed to it. Check that "
        f"its key id is the one `outpost backup keygen` printed:\n  {(c.get('fingerprints') or ['?'])[0]}"
    )


class AdminStep(WizardStep):
    SHORT = "Admin"
    TITLE = "First administrator"
    HELP = (
        "The first user of the tailnet: the administrator's own devices enrol as this user, "
        "and the first enrolment key (next step) belongs to them. Users are tailnet "
        "identities; access to this console is its passphrase. If the user exists already "
        "it is simply used."
    )

    def compose(self) -> ComposeResult:
        yield Label("User name")
        yield SafeInput(value="admin", id="admin-name")
        yield Label("Display name (optional)")
        yield SafeInput(placeholder="Site administrator", id="admin-display")
        yield Static("", id="admin-state", classes="hint", markup=False)

    async def load(self) -> None:
        users = [u["name"] for u in await self.client.users()]
        self.query_one("#admin-state", Static).update(
            "Users: " + ", ".join(users) if users else "No users yet."
        )

    async def apply(self) -> str:
        name = self.value("admin-name")
        if not USER_NAME_RE.match(name):
            raise StepRefused(
                f"User name {name!r}: use letters, digits, '.', '_' or '-' (at most 63)."
            )
        existing = {u["name"] for u in await self.client.users()}
        self.wizard.admin_user = name
        if name in existing:
            return f"User {name} exists already; the first key will be theirs."
        await self.client.create_user(name, self.value("admin-display") or None)
        return f"User {name} created."


class EnrolStep(WizardStep):
    SHORT = "First client"
    TITLE = "First client"
    PRIMARY = "Create key"
    HELP = (
        "Creates an enrolment key for the first device and shows the exact command to run "
        "on it. The key is SHOWN ONCE: the server keeps only a hash. Lifetime like 30m, "
        "12h, 7d; a single-use key enrols one device. After Finish, the console's usual "
        "screens open; the Keys screen (4) makes more keys."
    )

    DEFAULT_CSS = """
    EnrolStep #enrol-line {
        border: solid ansi_bright_white;
        color: ansi_bright_white;
        text-style: bold;
        padding: 0 1;
        height: auto;
        display: none;
    }
    EnrolStep #enrol-warning {
        background: ansi_yellow;
        color: ansi_black;
        text-style: bold;
        padding: 0 1;
        height: auto;
        display: none;
    }
    EnrolStep.-created #enrol-line, EnrolStep.-created #enrol-warning {
        display: block;
    }
    EnrolStep.-created #enrol-form {
        display: none;
    }
    EnrolStep #enrol-form {
        height: auto;
    }
    EnrolStep .row {
        height: auto;
    }
    EnrolStep SafeCheckbox {
        border: none;
        padding: 0 1;
        width: auto;
    }
    """

    line = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="enrol-form"):
            yield Label("Owner (user name)")
            yield SafeInput(id="enrol-user")
            yield Label("Lifetime of the key")
            yield SafeInput(value="24h", placeholder="30m, 12h, 7d", id="enrol-expires")
            with Horizontal(classes="row"):
                yield SafeCheckbox("Reusable (enrols several devices)", id="enrol-reusable")
        yield Static(
            "SHOWN ONCE: the server keeps only a hash. Run this on the first device now:",
            id="enrol-warning",
        )
        yield Static("", id="enrol-line", markup=False)
        yield Static("", id="enrol-note", classes="hint", markup=False)

    async def load(self) -> None:
        owner = self.query_one("#enrol-user", SafeInput)
        if not owner.value:
            users = [] if self.wizard.admin_user else await self.client.users()
            owner.value = self.wizard.admin_user or (users[0]["name"] if users else "")
        site = self.wizard.site or await self.client.site()
        self.wizard.site = site
        if not self.has_class("-created"):
            self.query_one("#enrol-note", Static).update(
                f"Clients will log in at {site['server_url']}."
            )

    async def apply(self) -> str:
        if self.has_class("-created"):
            return ""  # the screen finishes
        user = self.value("enrol-user")
        expires = self.value("enrol-expires").lower()
        if not user:
            raise StepRefused("Owner: give the user the first device belongs to (step 4).")
        if expires and not DURATION_RE.match(expires):
            raise StepRefused(f"Lifetime {expires!r}: use e.g. 30m, 12h or 7d.")
        key = await self.client.create_key(
            user=user,
            tags=[],
            expires_in=expires or None,
            reusable=self.query_one("#enrol-reusable", SafeCheckbox).value,
            ephemeral=False,
            description="first client (setup wizard)",
        )
        site = self.wizard.site or await self.client.site()
        url = site["server_url"]
        self.line = f"tailscale up --login-server={url} --authkey={key['key']}"
        self.query_one("#enrol-line", Static).update(self.line)
        note = (
            f"Key {key['prefix']} for {user}, "
            f"{'reusable' if key.get('reusable') else 'single use'}, expires "
            f"{(key.get('expires') or 'never').replace('T', ' ')[:16]}."
        )
        if any(r["field"] == "server_url" for r in site.get("restart_required") or []):
            note += f" The server answers at {url} only after it restarts."
        self.query_one("#enrol-note", Static).update(note + " Enter: Finish.")
        self.add_class("-created")
        self.PRIMARY = "Finish"
        self.wizard.refresh_buttons()
        return "created"
