"""What inbound bundle payloads contain, parsed only after the bundle verified (SPEC.md §9).

Sans-IO: bytes in, frozen values or `PayloadError` out. The messages name the
payload and the entry, because an administrator reads them on the console to
fix the file on the signing station.

    enrolment-keys  exactly `keys.json`       (format outpost-enrolment-keys-v1)
    policy          exactly `policy.hujson`   (the same text `outpost policy set` takes)
    trust-store     exactly `trust-store.json` (trust.py, SPEC.md §7)
    ca-material     `intermediate.pem` [+ `intermediate-key.pem`] [+ `root.pem`]: parsed and
                    checked against the site's CA in ca/material.py

An enrolment key travels as its prefix and the SHA-256 of its secret; the
secret itself stays with whoever made the bundle (they hand `opk-<prefix>-<secret>`
to the clients), so a lost USB stick carries no usable key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput

KEYS_PAYLOAD = "keys.json"
KEYS_FORMAT = "outpost-enrolment-keys-v1"
POLICY_PAYLOAD = "policy.hujson"
MAX_KEYS_PER_BUNDLE = 1000  # a site's batch of devices; bounds the one apply transaction
MAX_POLICY_BYTES = 1024 * 1024  # far above any real policy; the engine has its own limits
MAX_DESCRIPTION_CHARS = 255  # the enrolment_keys column
PREFIX_RE = re.compile(r"[0-9a-f]{12}")  # what the appliance itself issues: token_hex(6)
_KEY_FIELDS = frozenset(
    {"prefix", "secret_sha256", "user", "tags", "reusable", "ephemeral", "expires", "description"}
)
KEY_TEXT_PREFIX = "opk"  # as state/store.py: "opk-<prefix>-<secret>"


class PayloadError(InvalidInput):
    """A verified bundle's payload does not say something the appliance can apply."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    prefix: str
    secret_sha256: bytes
    user: str | None
    tags: tuple[str, ...]
    reusable: bool
    ephemeral: bool
    expires: int | None  # unix seconds
    description: str


def exactly(payloads: dict[str, bytes], name: str, kind: str) -> bytes:
    if set(payloads) != {name}:
        raise PayloadError(
            f"a {kind} bundle carries exactly one payload, {name} (found {sorted(payloads)})"
        )
    return payloads[name]


def parse_policy(payloads: dict[str, bytes]) -> str:
    raw = exactly(payloads, POLICY_PAYLOAD, "policy")
    if len(raw) > MAX_POLICY_BYTES:
        raise PayloadError(f"{POLICY_PAYLOAD} is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(f"{POLICY_PAYLOAD} is not UTF-8 text") from None


def parse_keys(payloads: dict[str, bytes]) -> tuple[KeyEntry, ...]:
    raw = exactly(payloads, KEYS_PAYLOAD, "enrolment-keys")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError(f"{KEYS_PAYLOAD} is not JSON") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != KEYS_FORMAT
        or set(doc)
        != {
            "format",
            "keys",
        }
    ):
        raise PayloadError(f"{KEYS_PAYLOAD} must be an object {{format: {KEYS_FORMAT!r}, keys}}")
    items = doc["keys"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_KEYS_PER_BUNDLE:
        raise PayloadError(f"{KEYS_PAYLOAD}: keys must be a list of 1..{MAX_KEYS_PER_BUNDLE}")
    out: list[KeyEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(items, 1):
        entry = _key_entry(i, item)
        if entry.prefix in seen:
            raise PayloadError(f"{KEYS_PAYLOAD}: key {i}: prefix {entry.prefix} appears twice")
        seen.add(entry.prefix)
        out.append(entry)
    return tuple(out)


def _key_entry(i: int, item: Any) -> KeyEntry:
    where = f"{KEYS_PAYLOAD}: key {i}"
    if not isinstance(item, dict) or not {"prefix", "secret_sha256"} <= set(item) <= _KEY_FIELDS:
        raise PayloadError(
            f"{where}: must be an object with prefix and secret_sha256, and only "
            f"{', '.join(sorted(_KEY_FIELDS))}"
        )
    prefix = item["prefix"]
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise PayloadError(f"{where}: prefix must be 12 lowercase hex digits")
    try:
        digest = bytes.fromhex(str(item["secret_sha256"]))
    except ValueError:
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise PayloadError(f"{where}: secret_sha256 must be 64 hex digits")
    user = item.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        raise PayloadError(f"{where}: user must be a user name or null")
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise PayloadError(f"{where}: tags must be a list of strings")
    flags = {f: item.get(f, False) for f in ("reusable", "ephemeral")}
    for f, v in flags.items():
        if not isinstance(v, bool):
            raise PayloadError(f"{where}: {f} must be true or false")
    expires = item.get("expires")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int) or expires <= 0
    ):
        raise PayloadError(f"{where}: expires must be unix seconds or null")
    description = item.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise PayloadError(f"{where}: description must be text of at most 255 characters")
    return KeyEntry(
        prefix,
        digest,
        user,
        tuple(tags),
        flags["reusable"],
        flags["ephemeral"],
        expires,
        description,
    )


def new_key(  # noqa: PLR0917 - mirrors the keys.json fields
    user: str | None,
    tags: list[str],
    reusable: bool,
    ephemeral: bool,
    expires: int | None,
    description: str = "",
) -> tuple[dict[str, Any], str]:
    """A fresh key for keys.json and its text `opk-<prefix>-<secret>` (shown once by the tool)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    entry: dict[str, Any] = {
        "prefix": prefix,
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "user": user,
        "tags": tags,
        "reusable": reusable,
        "ephemeral": ephemeral,
        "expires": expires,
        "description": description,
    }
    _key_entry(1, entry)  # never write an entry the appliance would refuse
    return entry, f"{KEY_TEXT_PREFIX}-{prefix}-{secret}"
