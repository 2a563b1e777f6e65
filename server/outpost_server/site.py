"""Site settings the operator confirms at first boot: name, login URL, addresses.

Theory of operation
-------------------
Before the first-boot wizard, everything a client sees of the appliance's
identity came from the command line of `outpost serve` (`--site-name`,
`--server-url`), which on the appliance is a systemd unit nobody can edit
from the console. The wizard writes `DATA_DIR/site.json` through the admin
API instead, and `outpost serve` reads it at start for every option its
command line does not set (the command line always wins, so a test harness or
`serve.env` stays authoritative; the API says when that hides a saved value).

What takes effect when:

* `addresses` (extra names clients dial: IP literals or DNS names) go into
  the server's TLS certificate at once: saving updates the names the
  certificate service wants, and `POST /v1/certs/renew` (the wizard's CA
  step) or the hourly check reissues the leaf for them.
* `site_name` and `server_url` are read at start (DERP region name,
  registration URLs, the DERP host in the map): saving reports them under
  `restart_required` until the server runs with them.

`setup_completed_at` marks the end of the wizard (audited). A data directory
without `site.json` that already has users was set up before the wizard
existed and counts as set up.

The file is written atomically (temporary file, fsync, rename, fsync of the
directory), mode 0600, and validated on every read: a hand-edited file with a
mistake stops `outpost serve` with the file name and the field, rather than
serving a URL nobody chose.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .ca.names import parse_name
from .durable import write_atomic
from .errors import InvalidInput

SITE_FILE = "site.json"
SITE_VERSION = 1
MAX_SITE_FILE_BYTES = 64 * 1024  # a few names; anything larger is not ours
MAX_ADDRESSES = 16  # names clients dial; far below the certificate's own bound of 100
MAX_URL_CHARS = 255
# The CA's subject and the DERP region code are built from it (certs.SITE_MAX_CHARS = 32).
SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


def check_site_name(text: str) -> str:
    name = text.strip()
    if not SITE_NAME_RE.match(name):
        raise InvalidInput(
            f"site name {text!r}: use 1-32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_server_url(text: str) -> str:
    """A login URL clients can use: http(s)://HOST[:PORT], HOST an IP literal or DNS name."""
    url = text.strip().rstrip("/")
    if not url:
        raise InvalidInput("login URL is empty: give e.g. http://10.1.2.3")
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"login URL longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"login URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"login URL {text!r} must start with http:// or https://")
    if not parts.hostname:
        raise InvalidInput(f"login URL {text!r} has no host")
    if parts.username or parts.password or parts.path or parts.query or parts.fragment:
        raise InvalidInput(
            f"login URL {text!r}: only scheme, host and port (no path, user or query)"
        )
    try:
        parse_name(parts.hostname)
    except InvalidInput as exc:
        raise InvalidInput(f"login URL {text!r}: {exc}") from None
    if port == 0:
        raise InvalidInput(f"login URL {text!r}: port 0")
    return url


def check_addresses(items: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInput(f"address #{i + 1} must be text")
        if not text.strip():
            continue
        try:
            name = str(parse_name(text))
        except InvalidInput as exc:
            raise InvalidInput(f"address #{i + 1} ({text.strip()!r}): {exc}") from None
        if name not in out:
            out.append(name)
    if len(out) > MAX_ADDRESSES:
        raise InvalidInput(f"at most {MAX_ADDRESSES} addresses")
    return tuple(out)


def url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


@dataclass(frozen=True)
class SiteSettings:
    site_name: str | None = None
    server_url: str | None = None
    addresses: tuple[str, ...] = ()
    setup_completed_at: str | None = None
    setup_completed_by: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None

    @property
    def setup_complete(self) -> bool:
        return self.setup_completed_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SITE_VERSION,
            "site_name": self.site_name,
            "server_url": self.server_url,
            "addresses": list(self.addresses),
            "setup_completed_at": self.setup_completed_at,
            "setup_completed_by": self.setup_completed_by,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> SiteSettings:
        if not isinstance(doc, dict):
            raise InvalidInput(f"{where}: not a JSON object")
        if doc.get("version", SITE_VERSION) != SITE_VERSION:
            raise InvalidInput(f"{where}: unknown version {doc.get('version')!r}")

        def opt_text(key: str) -> str | None:
            v = doc.get(key)
            if v is not None and not isinstance(v, str):
                raise InvalidInput(f"{where}: {key!r} must be text")
            return v

        try:
            name = opt_text("site_name")
            url = opt_text("server_url")
            addresses = doc.get("addresses") or []
            if not isinstance(addresses, list):
                raise InvalidInput("'addresses' must be a list")
            return cls(
                site_name=check_site_name(name) if name is not None else None,
                server_url=check_server_url(url) if url is not None else None,
                addresses=check_addresses(addresses),
                setup_completed_at=opt_text("setup_completed_at"),
                setup_completed_by=opt_text("setup_completed_by"),
                updated_at=opt_text("updated_at"),
                updated_by=opt_text("updated_by"),
            )
        except InvalidInput as exc:
            msg = str(exc)
            raise InvalidInput(msg if msg.startswith(where) else f"{where}: {msg}") from None


def site_path(data_dir: Path) -> Path:
    return data_dir / SITE_FILE


def load_site(data_dir: Path) -> SiteSettings | None:
    """The saved settings, None if there is no file; InvalidInput naming the file if it is bad."""
    path = site_path(data_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SITE_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SITE_FILE_BYTES:
        raise InvalidInput(f"{path}: larger than {MAX_SITE_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from None
    return SiteSettings.from_json(doc, str(path))


def save_site(data_dir: Path, settings: SiteSettings) -> None:
    data = (json.dumps(settings.to_json(), indent=1, sort_keys=True) + "\n").encode()
    write_atomic(site_path(data_dir), data, 0o600)


@dataclass(frozen=True)
class StartSettings:
    """What `outpost serve` runs with, and which of it the command line fixed."""

    site_name: str
    server_url: str
    addresses: tuple[str, ...]
    from_command_line: tuple[str, ...] = field(default=())


def resolve_start(
    data_dir: Path,
    *,
    site_name: str | None,
    server_url: str | None,
    default_site_name: str = "outpost",
    default_server_url: str = "",
) -> StartSettings:
    """Command line first, then site.json, then the defaults (see module docstring)."""
    saved = load_site(data_dir) or SiteSettings()
    from_cli = tuple(k for k, v in (("site_name", site_name), ("server_url", server_url)) if v)
    return StartSettings(
        site_name=site_name or saved.site_name or default_site_name,
        server_url=server_url or saved.server_url or default_server_url,
        addresses=saved.addresses,
        from_command_line=from_cli,
    )


def updated(current: SiteSettings, doc: dict[str, Any], actor: str, now: str) -> SiteSettings:
    """The settings after a PUT: every field given is validated; absent fields stay."""
    allowed = {"site_name", "server_url", "addresses"}
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    new = current
    if "site_name" in doc:
        v = doc["site_name"]
        if not isinstance(v, str):
            raise InvalidInput("'site_name' must be text")
        new = replace(new, site_name=check_site_name(v))
    if "server_url" in doc:
        v = doc["server_url"]
        if not isinstance(v, str):
            raise InvalidInput("'server_url' must be text")
        new = replace(new, server_url=check_server_url(v))
    if "addresses" in doc:
        v = doc["addresses"]
        if isinstance(v, str):
            v = [a for a in re.split(r"[,\s]+", v) if a]
        if not isinstance(v, list):
            raise InvalidInput("'addresses' must be a list of IP addresses or DNS names")
        new = replace(new, addresses=check_addresses(v))
    return replace(new, updated_at=now, updated_by=actor)


RESTART_FIELDS = ("site_name", "server_url")  # read once at start (module docstring)


class SiteService:
    """The running server's side: what is saved, what runs, what a restart would change."""

    def __init__(
        self,
        data_dir: Path,
        *,
        running_site_name: str,
        running_server_url: str,
        listen_names: list[str],
        from_command_line: tuple[str, ...] = (),
        certs: Any = None,  # ca.service.ServerCertificates
        has_users: Any = lambda: False,  # Callable[[], bool]
    ) -> None:
        self.data_dir = data_dir
        self.running = {
            "site_name": running_site_name,
            "server_url": running_server_url.rstrip("/"),
        }
        self.listen_names = listen_names
        self.from_command_line = from_command_line
        self.certs = certs
        self.has_users = has_users
        self.file_exists = site_path(data_dir).exists()
        self.settings = load_site(data_dir) or SiteSettings()

    def effective(self, name: str) -> str:
        saved = getattr(self.settings, name)
        return str(saved or self.running[name])

    def setup_complete(self) -> bool:
        if self.settings.setup_complete:
            return True
        # Set up by hand before the wizard existed: keep it out of the operator's way.
        return not self.file_exists and bool(self.has_users())

    def tls_names(self, settings: SiteSettings | None = None) -> list[str]:
        s = settings or self.settings
        url = s.server_url or self.running["server_url"]
        names = {
            url_host(url),
            url_host(self.running["server_url"]),
            *self.listen_names,
            *s.addresses,
        }
        return sorted(n for n in names if n)

    def view(self) -> dict[str, Any]:
        restart: list[dict[str, str]] = []
        overridden: list[dict[str, str]] = []
        for name in RESTART_FIELDS:
            saved = getattr(self.settings, name)
            if saved is None or saved == self.running[name]:
                continue
            entry = {"field": name, "saved": saved, "running": self.running[name]}
            (overridden if name in self.from_command_line else restart).append(entry)
        leaf: dict[str, Any] = {}
        if self.certs is not None:
            try:
                wanted = self.certs.leaf_names()
                current = list(self.certs.status().leaf_names)
                leaf = {"wanted": wanted, "current": current, "covers": set(wanted) <= set(current)}
            except Exception as exc:  # a CA that cannot be read is shown, not a failed call
                leaf = {"error": str(exc) or type(exc).__name__}
        return {
            "site_name": self.effective("site_name"),
            "server_url": self.effective("server_url"),
            "addresses": list(self.settings.addresses),
            "saved": self.settings.to_json() if self.file_exists else None,
            "running": dict(self.running),
            "from_command_line": list(self.from_command_line),
            "restart_required": restart,
            "overridden_by_command_line": overridden,
            "certificate": leaf,
            "setup_complete": self.setup_complete(),
            "setup_completed_at": self.settings.setup_completed_at,
            "setup_completed_by": self.settings.setup_completed_by,
        }

    def update(
        self, doc: dict[str, Any], actor: str, now: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validate, check the names against the CA, save; returns (view, audit details)."""
        new = updated(self.settings, doc, actor, now)
        if self.certs is not None:
            self.certs.set_names(self.tls_names(new))  # refuses names clients would reject
        save_site(self.data_dir, new)
        old, self.settings, self.file_exists = self.settings, new, True
        changes = {
            k: {"from": _plain(getattr(old, k)), "to": _plain(getattr(new, k))}
            for k in ("site_name", "server_url", "addresses")
            if getattr(old, k) != getattr(new, k)
        }
        return self.view(), changes

    def complete(self, actor: str, now: str) -> dict[str, Any]:
        new = replace(
            self.settings,
            site_name=self.settings.site_name or self.running["site_name"],
            server_url=self.settings.server_url or self.running["server_url"],
            setup_completed_at=now,
            setup_completed_by=actor,
        )
        save_site(self.data_dir, new)
        self.settings, self.file_exists = new, True
        return self.view()


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
