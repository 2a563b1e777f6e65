"""Typed Curve25519 keys as the Tailscale wire protocol names them.

Public keys travel as `<prefix><64 lowercase hex>` (TS:types/key/*.go). An
all-zero key is how Go marshals an unset key; it means "absent" and is never
sent back to a client as an empty string (the client's UnmarshalText rejects
""). Private keys redact themselves in `repr` so they cannot leak into logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Self

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import InvalidInput

KEY_BYTES = 32  # Curve25519 key length


@dataclass(frozen=True, slots=True)
class _PublicKey:
    raw: bytes
    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_BYTES:
            raise InvalidInput(f"{self.PREFIX or 'key'} must be {KEY_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> Self:
        if not isinstance(text, str) or not text.startswith(cls.PREFIX):
            raise InvalidInput(f"expected a key starting with {cls.PREFIX!r}")
        body = text[len(cls.PREFIX) :]
        if len(body) != 2 * KEY_BYTES:
            raise InvalidInput(f"{cls.PREFIX} key must have {2 * KEY_BYTES} hex digits")
        try:
            return cls(bytes.fromhex(body))
        except ValueError:
            raise InvalidInput(f"{cls.PREFIX} key is not hex") from None

    @classmethod
    def parse_optional(cls, text: str | None) -> Self | None:
        """Parse a key that may be absent: None, "" or the all-zero key -> None."""
        if text is None or text == "":
            return None
        key = cls.parse(text)
        return None if key.is_zero() else key

    def is_zero(self) -> bool:
        return self.raw == bytes(KEY_BYTES)

    def text(self) -> str:
        return self.PREFIX + self.raw.hex()

    def short(self) -> str:
        """Short form for logs and tables (like Tailscale's ShortString)."""
        return f"[{self.raw.hex()[:8]}]"

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True, slots=True)
class MachinePublic(_PublicKey):
    PREFIX: ClassVar[str] = "mkey:"


@dataclass(frozen=True, slots=True)
class NodePublic(_PublicKey):
    PREFIX: ClassVar[str] = "nodekey:"


@dataclass(frozen=True, slots=True)
class DiscoPublic(_PublicKey):
    PREFIX: ClassVar[str] = "discokey:"


@dataclass(frozen=True, slots=True)
class TKAPublic(_PublicKey):
    PREFIX: ClassVar[str] = "nlpub:"


def clamp(raw: bytes) -> bytes:
    """Curve25519 private-key clamping, as controlbase and wireguard do it."""
    if len(raw) != KEY_BYTES:
        raise InvalidInput("private key must be 32 bytes")
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


class PrivateKey:
    """A Curve25519 private key. `repr` never shows the secret."""

    __slots__ = ("_pub", "_raw", "kind")

    def __init__(self, raw: bytes, kind: str = "private") -> None:
        self._raw = clamp(raw)
        self.kind = kind
        self._pub = X25519PrivateKey.from_private_bytes(self._raw).public_key().public_bytes_raw()

    @classmethod
    def generate(cls, kind: str = "private") -> PrivateKey:
        return cls(os.urandom(KEY_BYTES), kind)

    @property
    def public_raw(self) -> bytes:
        return self._pub

    def secret_bytes(self) -> bytes:
        """The raw secret, for persistence and DH only."""
        return self._raw

    def dh(self, peer_public: bytes) -> bytes:
        """X25519; raises on an all-zero shared secret (low-order peer point)."""
        priv = X25519PrivateKey.from_private_bytes(self._raw)
        return priv.exchange(X25519PublicKey.from_public_bytes(peer_public))

    def __repr__(self) -> str:
        return f"PrivateKey({self.kind}, public={self._pub.hex()[:8]}…, secret=<redacted>)"

    __str__ = __repr__
