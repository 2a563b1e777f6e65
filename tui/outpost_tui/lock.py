"""The console passphrase: set on first start, stored as an scrypt hash.

Why a file in the data directory and not an environment variable: the console
runs from a systemd unit on tty1, and a secret in the unit's environment sits in
plain text in the unit file and in /proc/PID/environ. A salted scrypt hash in
`DATA_DIR/console-lock.json` (mode 0600, owned by the service user) holds no
secret, survives reboots and image updates with the rest of the state, and can
be reset by whoever can write the data directory (delete the file: the next
start asks for a new passphrase). scrypt is in the standard library (hashlib),
so there is no extra dependency; argon2 would need one.

`OUTPOST_CONSOLE_LOCK_FILE` points somewhere else (tests, or a read-only data
directory).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

LOCK_FILE_NAME = "console-lock.json"
MIN_PASSPHRASE_LEN = 6
# scrypt cost: ~50 ms on the appliance's CPU, 16 MiB of memory.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


class PassphraseRejected(ValueError):
    """A new passphrase does not meet the rules."""


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )


class ConsoleLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> ConsoleLock:
        override = os.environ.get("OUTPOST_CONSOLE_LOCK_FILE")
        return cls(Path(override) if override else data_dir / LOCK_FILE_NAME)

    @property
    def is_set(self) -> bool:
        return self.path.is_file()

    @staticmethod
    def check_new(passphrase: str, again: str) -> None:
        if len(passphrase) < MIN_PASSPHRASE_LEN:
            raise PassphraseRejected(f"use at least {MIN_PASSPHRASE_LEN} characters")
        if passphrase != again:
            raise PassphraseRejected("the two entries differ")

    def set(self, passphrase: str) -> None:
        salt = secrets.token_bytes(16)
        record = {
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(
                _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            ).decode(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, self.path)

    def verify(self, passphrase: str) -> bool:
        try:
            record = json.loads(self.path.read_text())
            salt = base64.b64decode(record["salt"])
            want = base64.b64decode(record["hash"])
            got = _derive(passphrase, salt, int(record["n"]), int(record["r"]), int(record["p"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return hmac.compare_digest(got, want)
