"""Backup settings and run history: small JSON files in the data directory, written atomically.

`backup-settings.json` is site configuration (recovery public keys, schedule,
retention) and travels in backups; `backup-status.json` is this box's run
history and does not. Only the server writes either (single writer); the
scheduler and the console read them through the admin API.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nacl import pwhash

from ..durable import write_atomic
from .format import (
    PASSPHRASE_MEMLIMIT,
    PASSPHRASE_OPSLIMIT,
    BackupError,
    PassphraseKek,
    derive_kek,
    format_public,
    key_id,
    parse_public,
)
from .retention import Retention

SETTINGS_NAME = "backup-settings.json"
STATUS_NAME = "backup-status.json"
MAX_LABEL_CHARS = 64
STATUS_HISTORY = 50  # runs remembered for the console and `outpost backup status`
DEFAULT_TIME = "02:30"  # UTC; quiet hours on most sites, after midnight log rotation
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Recipient:
    public: str  # opr1:…
    id: str
    label: str
    added: int


@dataclass(frozen=True, slots=True)
class Schedule:
    enabled: bool = True
    time: str = DEFAULT_TIME  # HH:MM, UTC, daily

    def __post_init__(self) -> None:
        if not isinstance(self.time, str) or not _TIME_RE.fullmatch(self.time):
            raise BackupError(f"schedule time must be HH:MM (24-hour, UTC), got {self.time!r}")

    @property
    def hour(self) -> int:
        return int(self.time[:2])

    @property
    def minute(self) -> int:
        return int(self.time[3:])


@dataclass(frozen=True, slots=True)
class BackupSettings:
    recipients: tuple[Recipient, ...] = ()
    passphrase: dict[str, Any] | None = field(default=None, repr=False)  # salt/ops/mem/key, hex
    schedule: Schedule = Schedule()
    retention: Retention = Retention()
    include_ca: bool = True

    def recipient_keys(self) -> list[bytes]:
        return [parse_public(r.public) for r in self.recipients]

    def kek(self) -> PassphraseKek | None:
        p = self.passphrase
        if p is None:
            return None
        return PassphraseKek(bytes.fromhex(p["key"]), bytes.fromhex(p["salt"]), int(p["ops"]), int(p["mem"]))

    def public_view(self) -> dict[str, Any]:
        return {
            "recipients": [asdict(r) for r in self.recipients],
            "passphrase": self.passphrase is not None,
            "schedule": asdict(self.schedule),
            "retention": asdict(self.retention),
            "include_ca": self.include_ca,
            "ready": bool(self.recipients) or self.passphrase is not None,
        }

    # ---------------------------------------------------------------- changes
    def with_recipient(self, public: str, label: str, now: int) -> BackupSettings:
        raw = parse_public(public)
        kid = key_id(raw)
        if any(r.id == kid for r in self.recipients):
            raise BackupError(f"recovery key {kid} is already configured")
        if len(label) > MAX_LABEL_CHARS:
            raise BackupError(f"label longer than {MAX_LABEL_CHARS} characters")
        return replace(self, recipients=(*self.recipients, Recipient(format_public(raw), kid, label, now)))

    def without_recipient(self, kid: str) -> BackupSettings:
        left = tuple(r for r in self.recipients if r.id != kid)
        if len(left) == len(self.recipients):
            raise BackupError(f"no recovery key with id {kid}")
        return replace(self, recipients=left)

    def with_passphrase(self, passphrase: str, opslimit: int = PASSPHRASE_OPSLIMIT, memlimit: int = PASSPHRASE_MEMLIMIT) -> BackupSettings:
        kek = derive_kek(passphrase, secrets.token_bytes(pwhash.argon2id.SALTBYTES), opslimit, memlimit)
        doc = {"salt": kek.salt.hex(), "ops": kek.opslimit, "mem": kek.memlimit, "key": kek.key.hex()}
        return replace(self, passphrase=doc)

    # ---------------------------------------------------------------- files
    def to_json(self) -> dict[str, Any]:
        return {
            "recipients": [asdict(r) for r in self.recipients],
            "passphrase": self.passphrase,
            "schedule": asdict(self.schedule),
            "retention": asdict(self.retention),
            "include_ca": self.include_ca,
        }

    @classmethod
    def from_json(cls, doc: object) -> BackupSettings:
        if not isinstance(doc, dict):
            raise BackupError(f"{SETTINGS_NAME} is malformed: not a JSON object")
        _check_passphrase(doc.get("passphrase"))
        try:
            return cls(
                recipients=tuple(Recipient(**r) for r in doc.get("recipients", [])),
                passphrase=doc.get("passphrase"),
                schedule=Schedule(**doc.get("schedule", {})),
                retention=Retention(**doc.get("retention", {})),
                include_ca=bool(doc.get("include_ca", True)),
            )
        except (TypeError, ValueError) as exc:
            raise BackupError(f"{SETTINGS_NAME} is malformed: {exc}") from None


def _check_passphrase(p: object) -> None:
    if p is None:
        return
    ok = (
        isinstance(p, dict)
        and all(isinstance(p.get(k), str) for k in ("salt", "key"))
        and all(isinstance(p.get(k), int) and not isinstance(p.get(k), bool) for k in ("ops", "mem"))
    )
    if ok:
        try:
            ok = len(bytes.fromhex(p["salt"])) == pwhash.argon2id.SALTBYTES and len(bytes.fromhex(p["key"])) == 32
        except ValueError:
            ok = False
    if not ok:
        raise BackupError(f"{SETTINGS_NAME} is malformed: the passphrase entry is damaged; set the passphrase again")


def load_settings(data_dir: Path) -> BackupSettings:
    path = data_dir / SETTINGS_NAME
    if not path.exists():
        return BackupSettings()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot read backup settings: {exc}") from None
    return BackupSettings.from_json(doc)


def write_json_atomic(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode(), 0o600)


def save_settings(data_dir: Path, settings: BackupSettings) -> None:
    write_json_atomic(data_dir / SETTINGS_NAME, settings.to_json())


def load_status(data_dir: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads((data_dir / STATUS_NAME).read_text())
        return list(doc.get("runs", []))[-STATUS_HISTORY:]
    except (OSError, ValueError, AttributeError):
        return []


def save_status(data_dir: Path, runs: list[dict[str, Any]]) -> None:
    write_json_atomic(data_dir / STATUS_NAME, {"runs": runs[-STATUS_HISTORY:]})
