"""Compatibility entry point for the server: `ensure_tls(directory, site, names)`.

The CA itself is `authority.OfflineCA` in DATA_DIR/ca/ (`directory` is
DATA_DIR/tls, as the server has always passed; its parent is DATA_DIR).

- No CA yet: one is created unattended - the root key signs the issuing CA
  and is then discarded, because the server has no passphrase to protect it
  with. Run `outpost ca init` before the first start to keep the root key
  (encrypted) instead.
- Then the server leaf is renewed if due or if `names` changed.

Clients verify DERP by IP literal with an empty DNS name (reference
derp-stun-offline.md §3.3), so the chain must verify against the root, and Go
also checks every IP SAN against the issuing CA's name constraints: names the
constraints do not permit are left out of the certificate (with a warning)
rather than making every client reject it. Addresses the server only listens
on (0.0.0.0, ::) are not names clients dial and are skipped.

A copy of the root certificate is kept at DIRECTORY/root.pem, where tools and
the interop harness have always looked for it.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from ..errors import InvalidInput
from .authority import CAEvent, OfflineCA, TLSFiles
from .names import NameConstraints, parse_ip, parse_names

log = logging.getLogger(__name__)

__all__ = ["TLSFiles", "ca_directory", "ensure_tls", "usable_names"]


def ca_directory(tls_directory: Path) -> Path:
    return tls_directory.parent / "ca"


def usable_names(names: list[str], constraints: NameConstraints | None = None) -> list[str]:
    """Names worth putting in the server certificate (see module docstring)."""
    out: list[str] = []
    for n in names:
        ip = parse_ip(n)
        if ip is not None and ip.is_unspecified:
            continue
        if constraints is not None and not constraints.permits(parse_names([n])[0]):
            log.warning("TLS name %s is outside the CA's name constraints and is left out", n)
            continue
        out.append(n)
    return out


def ensure_tls(
    directory: Path, site: str, names: list[str], now: dt.datetime | None = None
) -> TLSFiles:
    """Open (or create unattended) the CA, renew the leaf if due, return its files."""
    files, _ = ensure_tls_events(directory, site, names, now or dt.datetime.now(dt.UTC))
    return files


def ensure_tls_events(
    directory: Path, site: str, names: list[str], now: dt.datetime
) -> tuple[TLSFiles, list[CAEvent]]:
    """`ensure_tls` returning the audit events too."""
    ca_dir = ca_directory(directory)
    wanted = usable_names(names) or ["localhost"]
    if OfflineCA.exists(ca_dir):
        ca = OfflineCA.open(ca_dir)
        constraints = NameConstraints.from_json(ca._load_state()["constraints"])
        wanted = usable_names(wanted, constraints)
        if not wanted:
            raise InvalidInput(
                f"none of the server names {names} fits the CA's name constraints "
                f"({constraints.describe()})"
            )
        events = ca.renew_if_due(now, wanted, actor="server")
    else:
        ca, events = OfflineCA.init(
            ca_dir,
            site=site[:32] or "outpost",
            names=wanted,
            passphrase=None,
            now=now,
            actor="server",
        )
    files = ca.current_leaf()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root_copy = directory / "root.pem"
    data = files.root_cert.read_bytes()
    if not root_copy.exists() or root_copy.read_bytes() != data:
        tmp = root_copy.with_suffix(".pem.tmp")
        tmp.write_bytes(data)
        tmp.replace(root_copy)
    return files, events
