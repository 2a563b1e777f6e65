"""The running server's side of the CA: its TLS leaf, renewal, reload, revocation.

`OfflineCA` (authority.py) is files and locks; this is the glue the server
needs around it. One object owns "which leaf generation is the TLS listener
serving", so the hourly maintenance check and an admin's "renew now" (or a
revocation of the server's own leaf, which replaces it) reload the listener
through the same `_adopt()` path.

CA operations take a blocking file lock that `outpost ca ...` on the command
line may hold, and generate keys: they run in a worker thread. Loading the new
chain into the SSL context happens back on the event loop, which is where the
listener uses that context.

Revocation needs only the issuing CA's key, which lives on the box; nothing
here ever needs or sees the root key's passphrase.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import InvalidInput
from .authority import CAEvent, CAStatus, OfflineCA, TLSFiles
from .local import ca_directory, ensure_tls_events, usable_names
from .material import CheckedIntermediate, parse_material
from .names import NameConstraints, parse_name

log = logging.getLogger(__name__)

# /v1/status asks for the brief every poll (the console polls every 2 s); the
# figures it shows are days, so a short cache keyed on the CA's state file is plenty.
BRIEF_CACHE_S = 60.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_utc(t: dt.datetime | None) -> str | None:
    """As the admin API writes times: 2030-01-31T12:00:00Z."""
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ServerCertificates:
    def __init__(
        self,
        tls_directory: Path,
        site: str,
        names: list[str],
        files: TLSFiles,
        ssl_context: ssl.SSLContext | None,
        *,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.tls_directory = tls_directory
        self.ca_dir = ca_directory(tls_directory)
        self.site = site
        self.names = names
        self.files = files
        self.ssl_context = ssl_context
        self.clock = clock
        self._brief: tuple[tuple[int, int], dict[str, object]] | None = None

    def _ca(self) -> OfflineCA:
        return OfflineCA.open(self.ca_dir)

    def _adopt(self, files: TLSFiles) -> bool:
        """Serve `files` if they are a newer generation; True if they were taken.

        Generations only grow. An hourly check that read the files just before an
        admin's renewal finishes after it must not bring the older leaf back.
        """
        if files.generation <= self.files.generation:
            return False
        if self.ssl_context is not None:
            self.ssl_context.load_cert_chain(str(files.leaf_chain), str(files.leaf_key))
            log.info("TLS certificate reloaded (generation %s)", files.generation)
        self.files = files
        self._brief = None
        return True

    # --------------------------------------------------------------- names
    def constraints(self) -> NameConstraints:
        return NameConstraints.from_json(self._ca()._load_state()["constraints"])

    def set_names(self, names: list[str]) -> list[str]:
        """The names the server leaf should carry from now on (site settings changed).

        Nothing is issued here: `renew()` (an admin's "renew now") or the hourly
        `maintain()` issues the leaf for them. Names outside the issuing CA's
        constraints are refused with the list of what is permitted, because
        clients would reject a certificate carrying them.
        """
        constraints = self.constraints()
        dialled = usable_names(names)  # drops 0.0.0.0 / ::, which nobody dials
        outside = [n for n in dialled if not constraints.permits(parse_name(n))]
        if outside:
            raise InvalidInput(
                f"{', '.join(outside)}: outside the CA's name constraints "
                f"({constraints.describe()}); clients would reject a certificate for "
                "it. Use an address in a private range or a name under a permitted domain."
            )
        self.names = list(names)
        self._brief = None
        return self.leaf_names()

    def leaf_names(self) -> list[str]:
        """What a renewal now would put in the leaf (as `ensure_tls` chooses them)."""
        wanted = usable_names(self.names) or ["localhost"]
        return usable_names(wanted, self.constraints())

    # ------------------------------------------------------------- actions
    async def maintain(self) -> list[CAEvent]:
        """The hourly check: renew the leaf (and CRL) if due, reload if it changed."""
        files, events = await asyncio.to_thread(
            ensure_tls_events, self.tls_directory, self.site, self.names, self.clock()
        )
        self._adopt(files)
        if events:
            self._brief = None
        return events

    async def renew(self, actor: str) -> tuple[list[CAEvent], bool]:
        """A fresh server leaf now for the wanted names (usually the same as before,
        new ones after the site settings changed); returns (events, reloaded)."""

        def work() -> tuple[list[CAEvent], TLSFiles]:
            ca = self._ca()
            events = ca.renew(self.clock(), self.leaf_names(), actor=actor)
            return events, ca.current_leaf()

        events, files = await asyncio.to_thread(work)
        return events, self._adopt(files)

    async def revoke(self, serial: str, reason: str, actor: str) -> tuple[list[CAEvent], bool]:
        """Put a certificate on the CRL; the server's own leaf is replaced at once."""

        def work() -> tuple[list[CAEvent], TLSFiles]:
            ca = self._ca()
            events = ca.revoke(serial, reason, self.clock(), actor=actor)
            return events, ca.current_leaf()

        events, files = await asyncio.to_thread(work)
        self._brief = None
        return events, self._adopt(files)

    # ------------------------------------------- issuing CA signed offline
    async def request_intermediate(self, actor: str) -> tuple[bytes, list[CAEvent]]:
        """A pending issuing-CA key on the box and the PKCS#10 request (PEM) for it."""
        out = await asyncio.to_thread(lambda: self._ca().request_intermediate(self.clock(), actor))
        self._brief = None
        return out

    def check_intermediate(self, payloads: Mapping[str, bytes]) -> CheckedIntermediate:
        """A ca-material bundle's payloads checked against this CA; changes nothing."""
        return self._ca().check_import(parse_material(payloads), self.clock())

    def install_intermediate(
        self, payloads: Mapping[str, bytes], actor: str
    ) -> tuple[CheckedIntermediate, list[CAEvent], bool]:
        """Install the issuing CA a ca-material bundle carries and serve the new leaf now.

        Synchronous: bundle approval runs on the event loop thread (like a
        policy compile), and the listener's SSL context is reloaded on that
        thread anyway. The CA's lock is held for milliseconds, or a few seconds
        while a CLI `ca renew --intermediate` decrypts the root key; an
        approval then waits that long.
        Returns (checked, events, reloaded).
        """
        ca = self._ca()
        checked, events = ca.import_intermediate(parse_material(payloads), self.clock(), actor)
        reloaded = self._adopt(ca.current_leaf())
        self._brief = None
        return checked, events, reloaded

    # --------------------------------------------------------------- reading
    def status(self) -> CAStatus:
        return self._ca().status(self.clock())

    def issued(self) -> list[dict[str, object]]:
        return self._ca().issued()

    def root_pem(self) -> str:
        return (self.ca_dir / "root.pem").read_text()

    def brief(self) -> dict[str, object]:
        """Days left on the leaf and the root, for the dashboard; cached (see BRIEF_CACHE_S)."""
        try:
            mtime = (self.ca_dir / "state.json").stat().st_mtime_ns
        except OSError:
            mtime = 0
        key = (mtime, int(self.clock().timestamp() // BRIEF_CACHE_S))
        if self._brief is not None and self._brief[0] == key:
            return self._brief[1]
        st = self.status()
        value: dict[str, object] = {
            "leaf_days_left": st.leaf.days_left if st.leaf else None,
            "leaf_not_after": iso_utc(st.leaf.not_after) if st.leaf else None,
            "root_days_left": st.root.days_left,
            "intermediate_days_left": st.intermediate.days_left,
            "renew_due_at": iso_utc(st.renew_due_at),
            "warnings": len(st.warnings),
        }
        self._brief = (key, value)
        return value
