"""The admitted-key feed between the relays of one site, sans-IO.

A second Outpost appliance that only relays (`--admission-from https://A`)
has no node database of its own; it must still admit only node keys the
control appliance has registered. It fetches them from A's
`GET /derp/mesh/keys`, proving knowledge of the site's mesh key with an HMAC
over a fresh nonce (no clocks involved: air-gapped boxes drift). The answer is
public keys only, versioned with an ETag so an unchanged set costs a 304.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Final

from ..errors import ProtocolError
from ..keys import NodePublic

MESH_KEYS_PATH: Final = "/derp/mesh/keys"
NONCE_HEADER: Final = "outpost-mesh-nonce"
MAC_HEADER: Final = "outpost-mesh-auth"
MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = 64
MAX_FEED_KEYS: Final = 200_000  # far beyond a site; bounds what a peer can make us parse
MAX_FEED_BYTES: Final = MAX_FEED_KEYS * 70 + 4096  # 64 hex + quotes and comma per key


def mac(mesh_key: bytes, nonce: bytes) -> str:
    return hmac.new(mesh_key, b"outpost-mesh-keys\x00" + nonce, hashlib.sha256).hexdigest()


def check(mesh_key: bytes | None, nonce_hex: str | None, mac_hex: str | None) -> bool:
    """True if the request proves the mesh key; False for anything malformed."""
    if mesh_key is None or not nonce_hex or not mac_hex:
        return False
    try:
        nonce = bytes.fromhex(nonce_hex)
    except ValueError:
        return False
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        return False
    return hmac.compare_digest(mac(mesh_key, nonce), mac_hex.strip().lower())


def encode(keys: Iterable[NodePublic]) -> tuple[str, bytes]:
    """(etag, body) for a key set; the etag is a digest of the sorted set."""
    hexes = sorted(k.raw.hex() for k in keys)
    body = json.dumps({"keys": hexes}, separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest()[:32], body


def decode(body: bytes) -> frozenset[NodePublic]:
    if len(body) > MAX_FEED_BYTES:
        raise ProtocolError(f"key feed of {len(body)} bytes exceeds {MAX_FEED_BYTES}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise ProtocolError("key feed is not JSON") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or len(keys) > MAX_FEED_KEYS:
        raise ProtocolError("key feed has no key list, or too many keys")
    out = set()
    for k in keys:
        try:
            raw = bytes.fromhex(k) if isinstance(k, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ProtocolError("key feed holds something that is not a 32-byte key")
        out.add(NodePublic(raw))
    return frozenset(out)
