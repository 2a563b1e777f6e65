"""STUN binding requests from Tailscale clients and our replies, sans-IO.

Theory of operation
-------------------
netcheck sends a 40-byte RFC 5389 Binding Request (TS:net/stun/stun.go `Request`):
a 20-byte header (type 0x0001, length, magic cookie 0x2112A442, 12-byte
transaction ID), a SOFTWARE attribute "tailnode" and a FINGERPRINT attribute
last (CRC-32 of everything before it, XOR 0x5354554E). Like derper's STUN server
(TS:net/stunserver, `stun.ParseBindingRequest`) we answer only requests that
carry SOFTWARE "tailnode" and end in a correct FINGERPRINT; everything else is
dropped silently and counted by reason. Parsing never raises: a datagram from
anyone on the network is either a `BindingRequest` or a `StunReject` reason.

The reply is a Binding Success (0x0101) with one XOR-MAPPED-ADDRESS attribute
(0x0020): 32 bytes for IPv4, 44 for IPv6. A v4-mapped IPv6 source (dual-stack
socket) is unmapped first and answered as family 1, like derper's test server.
No SOFTWARE or FINGERPRINT in the reply, as derper.

We are slightly stricter than derper in one place: the header's length field
must equal the bytes that follow it (RFC 5389 §6). Official clients always
send a consistent length.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

HEADER_BYTES: Final = 20
TXID_BYTES: Final = 12
MAGIC_COOKIE: Final = 0x2112A442
MAGIC_COOKIE_BYTES: Final = MAGIC_COOKIE.to_bytes(4, "big")
FINGERPRINT_XOR: Final = 0x5354554E
BINDING_REQUEST: Final = 0x0001
BINDING_SUCCESS: Final = 0x0101
ATTR_SOFTWARE: Final = 0x8022
ATTR_FINGERPRINT: Final = 0x8028
ATTR_XOR_MAPPED_ADDRESS: Final = 0x0020
FINGERPRINT_ATTR_BYTES: Final = 8  # 2 type + 2 length + 4 CRC
TAILSCALE_SOFTWARE: Final = b"tailnode"
FAMILY_IPV4: Final = 1
FAMILY_IPV6: Final = 2
TAILSCALE_REQUEST_BYTES: Final = 40  # what netcheck sends
# Largest datagram we even look at: a Tailscale request is 40 B; 1280 B is the IPv6
# minimum MTU, far above any binding request a client sends.
MAX_STUN_REQUEST_BYTES: Final = 1280
# Receive buffer size for the socket adapter (anything longer is truncated by recvfrom
# and then rejected as TOO_LONG / BAD_LENGTH).
MAX_STUN_DATAGRAM_BYTES: Final = 2048


class StunReject(enum.StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    NOT_STUN = "not_stun"  # top bits set or no magic cookie
    NOT_BINDING_REQUEST = "not_binding_request"
    BAD_LENGTH = "bad_length"  # header length field disagrees with the datagram
    MALFORMED_ATTRIBUTES = "malformed_attributes"
    WRONG_SOFTWARE = "wrong_software"
    NO_FINGERPRINT = "no_fingerprint"  # FINGERPRINT missing or not last
    BAD_FINGERPRINT = "bad_fingerprint"
    BAD_SOURCE = "bad_source"  # source address we cannot encode


@dataclass(frozen=True, slots=True)
class BindingRequest:
    txid: bytes


def fingerprint(data: bytes) -> int:
    """RFC 5389 §15.5 FINGERPRINT value over `data`."""
    return (zlib.crc32(data) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def parse_binding_request(data: bytes) -> BindingRequest | StunReject:
    n = len(data)
    if n < HEADER_BYTES:
        return StunReject.TOO_SHORT
    if n > MAX_STUN_REQUEST_BYTES:
        return StunReject.TOO_LONG
    if data[0] & 0xC0 or data[4:8] != MAGIC_COOKIE_BYTES:
        return StunReject.NOT_STUN
    msg_type, msg_len = struct.unpack_from(">HH", data, 0)
    if msg_type != BINDING_REQUEST:
        return StunReject.NOT_BINDING_REQUEST
    if msg_len != n - HEADER_BYTES:
        return StunReject.BAD_LENGTH
    software_ok = False
    last_type: int | None = None
    last_start = 0
    fp_value: bytes | None = None
    pos = HEADER_BYTES
    while pos < n:
        if n - pos < 4:
            return StunReject.MALFORMED_ATTRIBUTES
        attr_type, attr_len = struct.unpack_from(">HH", data, pos)
        padded = (attr_len + 3) & ~3
        value_start = pos + 4
        if padded > n - value_start:
            return StunReject.MALFORMED_ATTRIBUTES
        value = data[value_start : value_start + attr_len]
        if attr_type == ATTR_SOFTWARE and value == TAILSCALE_SOFTWARE:
            software_ok = True
        last_type, last_start = attr_type, pos
        fp_value = value if attr_type == ATTR_FINGERPRINT else None
        pos = value_start + padded
    if not software_ok:
        return StunReject.WRONG_SOFTWARE
    if last_type != ATTR_FINGERPRINT or fp_value is None:
        return StunReject.NO_FINGERPRINT
    if len(fp_value) != 4 or last_start != n - FINGERPRINT_ATTR_BYTES:
        return StunReject.BAD_FINGERPRINT
    if int.from_bytes(fp_value, "big") != fingerprint(data[:last_start]):
        return StunReject.BAD_FINGERPRINT
    return BindingRequest(bytes(data[8:HEADER_BYTES]))


def build_binding_request(txid: bytes) -> bytes:
    """A request byte-identical in layout to netcheck's (used by tests and probes)."""
    if len(txid) != TXID_BYTES:
        raise ValueError("transaction ID must be 12 bytes")
    software = struct.pack(">HH", ATTR_SOFTWARE, len(TAILSCALE_SOFTWARE)) + TAILSCALE_SOFTWARE
    body_len = len(software) + FINGERPRINT_ATTR_BYTES
    head = struct.pack(">HH", BINDING_REQUEST, body_len) + MAGIC_COOKIE_BYTES + txid
    prefix = head + software
    return prefix + struct.pack(">HHI", ATTR_FINGERPRINT, 4, fingerprint(prefix))


def build_binding_success(
    txid: bytes, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> bytes:
    """Binding Success with XOR-MAPPED-ADDRESS for ip:port (v4-mapped IPv6 is unmapped)."""
    if len(txid) != TXID_BYTES:
        raise ValueError("transaction ID must be 12 bytes")
    if not 0 <= port <= 0xFFFF:
        raise ValueError("port out of range")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    family = FAMILY_IPV4 if isinstance(ip, ipaddress.IPv4Address) else FAMILY_IPV6
    key = MAGIC_COOKIE_BYTES + txid
    xaddr = bytes(b ^ k for b, k in zip(ip.packed, key, strict=False))
    value = struct.pack(">BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xaddr
    attr = struct.pack(">HH", ATTR_XOR_MAPPED_ADDRESS, len(value)) + value
    head = struct.pack(">HH", BINDING_SUCCESS, len(attr)) + MAGIC_COOKIE_BYTES + txid
    return head + attr


@dataclass(frozen=True, slots=True)
class StunStats:
    requests_answered: int
    ignored: dict[str, int]


@dataclass(slots=True)
class StunCounters:
    requests_answered: int = 0
    ignored: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> StunStats:
        return StunStats(self.requests_answered, dict(self.ignored))


class StunResponder:
    """Datagram in, optional reply out; counts every outcome."""

    def __init__(self, counters: StunCounters | None = None) -> None:
        self.counters = counters if counters is not None else StunCounters()

    def handle(self, data: bytes, source_ip: str, source_port: int) -> bytes | None:
        parsed = parse_binding_request(data)
        if isinstance(parsed, StunReject):
            self.counters.ignored[parsed.value] += 1
            return None
        try:
            ip = ipaddress.ip_address(source_ip.split("%", 1)[0])  # drop an IPv6 zone
            reply = build_binding_success(parsed.txid, ip, source_port)
        except ValueError:
            self.counters.ignored[StunReject.BAD_SOURCE.value] += 1
            return None
        self.counters.requests_answered += 1
        return reply
