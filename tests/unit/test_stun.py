"""STUN binding request parsing and Binding Success building.

Vectors are built by hand here (struct + binascii.crc32, independent of the
module under test) or taken from RFC 5769 "Test Vectors for STUN" §2.1-2.3.
"""

from __future__ import annotations

import binascii
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outpost_server.proto import stun
from outpost_server.proto.stun import BindingRequest, StunReject

TXID = bytes.fromhex("0102030405060708090a0b0c")


def fp(data: bytes) -> int:
    return binascii.crc32(data) ^ 0x5354554E


def request(
    txid: bytes = TXID,
    *,
    msg_type: int = 0x0001,
    software: bytes = b"tailnode",
    cookie: bytes = b"\x21\x12\xa4\x42",
    extra_after_fp: bytes = b"",
    fp_xor: int = 0,
) -> bytes:
    """A Tailscale-style request: header, SOFTWARE, FINGERPRINT."""
    soft = struct.pack(">HH", 0x8022, len(software)) + software
    soft += bytes(-len(software) % 4)
    length = len(soft) + 8 + len(extra_after_fp)
    head = struct.pack(">HH", msg_type, length) + cookie + txid
    body = head + soft
    return body + struct.pack(">HHI", 0x8028, 4, fp(body) ^ fp_xor) + extra_after_fp


TAILSCALE_REQUEST = bytes.fromhex(
    "00010014"  # Binding Request, 20 bytes of attributes
    "2112a442"  # magic cookie
    "0102030405060708090a0b0c"  # transaction ID
    "80220008"
    "7461696c6e6f6465"  # SOFTWARE "tailnode"
    "80280004"  # FINGERPRINT header; value appended below
)
TAILSCALE_REQUEST += struct.pack(">I", fp(TAILSCALE_REQUEST[:-4]))


def test_hand_built_tailscale_request_is_40_bytes_and_parses() -> None:
    assert len(TAILSCALE_REQUEST) == 40
    assert request() == TAILSCALE_REQUEST
    assert stun.parse_binding_request(TAILSCALE_REQUEST) == BindingRequest(TXID)


def test_build_binding_request_matches_hand_built_bytes() -> None:
    assert stun.build_binding_request(TXID) == TAILSCALE_REQUEST


# RFC 5769 §2.1 sample request (SOFTWARE "STUN test client", FINGERPRINT e57a3bcf).
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e20746573742063"
    "6c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)


def test_fingerprint_matches_rfc5769_sample_request() -> None:
    assert len(RFC5769_REQUEST) == 108
    assert stun.fingerprint(RFC5769_REQUEST[:-8]) == 0xE57A3BCF


def test_rfc5769_request_is_ignored_for_its_software() -> None:
    assert stun.parse_binding_request(RFC5769_REQUEST) is StunReject.WRONG_SOFTWARE


def test_ipv4_success_response_matches_rfc5769_xor_mapped_address() -> None:
    txid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    reply = stun.build_binding_success(txid, ipaddress.ip_address("192.0.2.1"), 32853)
    assert len(reply) == 32
    assert reply[:20] == bytes.fromhex("0101000c2112a442") + txid
    assert reply[20:] == bytes.fromhex("002000080001a147e112a643")


def test_ipv6_success_response_matches_rfc5769_xor_mapped_address() -> None:
    txid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    ip = ipaddress.ip_address("2001:db8:1234:5678:11:2233:4455:6677")
    reply = stun.build_binding_success(txid, ip, 32853)
    assert len(reply) == 44
    assert reply[:4] == bytes.fromhex("01010018")
    assert reply[20:] == bytes.fromhex("002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9")


def test_v4_mapped_source_is_answered_as_ipv4() -> None:
    mapped = stun.build_binding_success(TXID, ipaddress.ip_address("::ffff:192.0.2.1"), 1)
    plain = stun.build_binding_success(TXID, ipaddress.ip_address("192.0.2.1"), 1)
    assert mapped == plain
    assert mapped[25] == 1


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", StunReject.TOO_SHORT),
        (TAILSCALE_REQUEST[:19], StunReject.TOO_SHORT),
        (TAILSCALE_REQUEST + bytes(2000), StunReject.TOO_LONG),
        (b"\x40" + TAILSCALE_REQUEST[1:], StunReject.NOT_STUN),
        (request(cookie=b"\x21\x12\xa4\x43"), StunReject.NOT_STUN),
        (request(msg_type=0x0101), StunReject.NOT_BINDING_REQUEST),
        (request(msg_type=0x0011), StunReject.NOT_BINDING_REQUEST),
        (TAILSCALE_REQUEST[:20], StunReject.BAD_LENGTH),  # header says 20 more bytes
        (TAILSCALE_REQUEST[:-1], StunReject.BAD_LENGTH),
        (TAILSCALE_REQUEST + b"\x00", StunReject.BAD_LENGTH),
        (request(software=b"toversok"), StunReject.WRONG_SOFTWARE),
        (request(software=b"tailnod"), StunReject.WRONG_SOFTWARE),
        (request(fp_xor=1), StunReject.BAD_FINGERPRINT),
        (request(extra_after_fp=struct.pack(">HH", 0x8022, 0)), StunReject.NO_FINGERPRINT),
    ],
)
def test_wrong_requests_are_rejected_with_a_reason(packet: bytes, reason: StunReject) -> None:
    assert stun.parse_binding_request(packet) is reason


def test_request_without_fingerprint_is_rejected() -> None:
    soft = struct.pack(">HH", 0x8022, 8) + b"tailnode"
    pkt = struct.pack(">HH", 1, len(soft)) + b"\x21\x12\xa4\x42" + TXID + soft
    assert stun.parse_binding_request(pkt) is StunReject.NO_FINGERPRINT


def test_attribute_running_past_the_end_is_malformed() -> None:
    pkt = bytearray(TAILSCALE_REQUEST)
    pkt[22:24] = struct.pack(">H", 200)  # SOFTWARE claims 200 bytes
    assert stun.parse_binding_request(bytes(pkt)) is StunReject.MALFORMED_ATTRIBUTES


@pytest.mark.parametrize("length", range(41))
def test_every_prefix_of_a_valid_request_except_the_whole_is_rejected(length: int) -> None:
    result = stun.parse_binding_request(TAILSCALE_REQUEST[:length])
    assert isinstance(result, BindingRequest) == (length == 40)


def test_responder_answers_and_counts() -> None:
    counters = stun.StunCounters()
    r = stun.StunResponder(counters)
    reply = r.handle(TAILSCALE_REQUEST, "127.0.0.1", 41641)
    assert reply == stun.build_binding_success(TXID, ipaddress.ip_address("127.0.0.1"), 41641)
    assert r.handle(b"junk", "127.0.0.1", 1) is None
    assert r.handle(TAILSCALE_REQUEST, "not-an-ip", 1) is None
    assert counters.snapshot() == stun.StunStats(
        1, {"too_short": 1, StunReject.BAD_SOURCE.value: 1}
    )


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(blob: bytes) -> None:
    result = stun.parse_binding_request(blob)
    assert isinstance(result, BindingRequest | StunReject)


@given(st.binary(min_size=40, max_size=40))
def test_random_40_byte_datagrams_are_rejected(blob: bytes) -> None:
    # A valid one needs the right cookie, SOFTWARE and a matching CRC: ~2^-200 by chance.
    assert isinstance(stun.parse_binding_request(blob), StunReject)


@given(st.binary(min_size=12, max_size=12))
def test_request_round_trip_through_builder(txid: bytes) -> None:
    assert stun.parse_binding_request(stun.build_binding_request(txid)) == BindingRequest(txid)


@given(
    st.binary(min_size=12, max_size=12),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 65535),
)
def test_success_response_decodes_back_to_the_source(
    txid: bytes, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    reply = stun.build_binding_success(txid, ip, port)
    assert reply[8:20] == txid
    attr_type, attr_len, family, xport = struct.unpack_from(">HHxBH", reply, 20)
    assert attr_type == 0x0020
    key = b"\x21\x12\xa4\x42" + txid
    raw = bytes(b ^ k for b, k in zip(reply[28:], key, strict=False))
    got = ipaddress.ip_address(raw)
    want = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    assert (got, xport ^ 0x2112) == (want, port)
    assert family == (1 if want.version == 4 else 2)
    assert attr_len == len(reply) - 24
