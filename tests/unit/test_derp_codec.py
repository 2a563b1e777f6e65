"""DERP frame codec: layouts, incremental decoding, limits, round trips."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import Box
from nacl.public import PrivateKey as NaclPrivateKey
from nacl.public import PublicKey as NaclPublicKey

from outpost_server.errors import FramingError, LocalProtocolError, ProtocolError
from outpost_server.keys import NodePublic, PrivateKey
from outpost_server.proto import derp
from outpost_server.proto.derp import FrameType, PeerGoneReason, PeerPresentFlags

keys32 = st.binary(min_size=32, max_size=32)
node_keys = keys32.map(NodePublic)
packets = st.binary(max_size=2048)


def not_v4_mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None


def decode_all(data: bytes, limit: derp.LimitFn = derp.client_read_limit) -> list[derp.Frame]:
    dec = derp.FrameDecoder(limit)
    dec.feed(data)
    out: list[derp.Frame] = []
    while (f := dec.next_frame()) is not None:
        assert isinstance(f, derp.Frame)
        out.append(f)
    return out


def single(data: bytes) -> derp.Frame:
    (f,) = decode_all(data)
    return f


# --- exact layouts ----------------------------------------------------------------------------


def test_server_key_frame_is_magic_then_key_40_bytes() -> None:
    key = NodePublic(bytes(range(32)))
    raw = derp.encode_server_key(key)
    assert raw[:5] == b"\x01\x00\x00\x00\x28"
    assert raw[5:13] == bytes.fromhex("44455250f09f9491")
    assert raw[13:] == key.raw
    assert len(raw) == 45


def test_keep_alive_is_an_empty_type_6_frame() -> None:
    assert derp.encode_keep_alive() == b"\x06\x00\x00\x00\x00"


def test_recv_packet_is_source_key_then_payload() -> None:
    src = NodePublic(b"\xaa" * 32)
    assert derp.encode_recv_packet(src, b"hi") == b"\x05\x00\x00\x00\x22" + b"\xaa" * 32 + b"hi"


def test_peer_gone_carries_reason_byte() -> None:
    peer = NodePublic(b"\x01" * 32)
    raw = derp.encode_peer_gone(peer, PeerGoneReason.NOT_HERE)
    assert raw == b"\x08\x00\x00\x00\x21" + b"\x01" * 32 + b"\x01"


def test_peer_present_is_51_bytes_with_v4_mapped_address() -> None:
    raw = derp.encode_peer_present(
        NodePublic(b"\x02" * 32),
        ipaddress.IPv4Address("192.0.2.7"),
        41641,
        PeerPresentFlags.IS_REGULAR,
    )
    payload = raw[5:]
    assert len(payload) == derp.PEER_PRESENT_BYTES == 51
    assert payload[32:48] == bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])
    assert payload[48:50] == struct.pack(">H", 41641)
    assert payload[50] == 1


def test_restarting_is_two_big_endian_u32_milliseconds() -> None:
    assert derp.encode_restarting(1500, 60000)[5:] == struct.pack(">II", 1500, 60000)


def test_server_info_opens_with_pynacl_to_version_2() -> None:
    server = PrivateKey.generate()
    client = NaclPrivateKey.generate()
    raw = derp.encode_server_info(
        server, NodePublic(bytes(client.public_key)), derp.ServerInfo(), b"\x07" * 24
    )
    f = single(raw)
    assert f.type == FrameType.SERVER_INFO
    assert f.payload[:24] == b"\x07" * 24
    plain = Box(client, NaclPublicKey(server.public_raw)).decrypt(f.payload[24:], f.payload[:24])
    assert json.loads(plain) == {"version": 2}


def test_old_32_byte_peer_gone_parses_as_disconnected() -> None:
    key, reason = derp.parse_peer_gone(b"\x05" * 32)
    assert key.raw == b"\x05" * 32
    assert reason is PeerGoneReason.DISCONNECTED


def test_encoders_refuse_oversized_packets() -> None:
    with pytest.raises(LocalProtocolError):
        derp.encode_recv_packet(NodePublic(bytes(32)), bytes(derp.MAX_PACKET_BYTES + 1))
    with pytest.raises(LocalProtocolError):
        derp.encode_pong(b"short")


# --- decoder behaviour ------------------------------------------------------------------------


def test_truncated_frame_waits_for_more_bytes() -> None:
    raw = derp.encode_recv_packet(NodePublic(bytes(32)), b"payload")
    dec = derp.FrameDecoder(derp.client_read_limit)
    dec.feed(raw[:3])
    assert dec.next_frame() is None
    dec.feed(raw[3:-1])
    assert dec.next_frame() is None
    dec.feed(raw[-1:])
    f = dec.next_frame()
    assert isinstance(f, derp.Frame)
    assert f.payload == bytes(32) + b"payload"
    assert dec.next_frame() is None


def test_oversized_length_raises_naming_type_and_length_before_payload() -> None:
    def limit(t: int) -> int:
        return 100

    dec = derp.FrameDecoder(limit)
    dec.feed(struct.pack(">BI", FrameType.SEND_PACKET, 101))
    with pytest.raises(FramingError, match=r"SEND_PACKET.*101"):
        dec.next_frame()


def test_unknown_frames_are_skipped_without_buffering() -> None:
    def limit(t: int) -> int | None:
        return None if t == 0x42 else 10

    dec = derp.FrameDecoder(limit)
    dec.feed(struct.pack(">BI", 0x42, 60000) + bytes(1000))
    f = dec.next_frame()
    assert f == derp.SkippedFrame(0x42, 60000)
    assert dec.buffered == 0
    for _ in range(59):
        dec.feed(bytes(1000))
        assert dec.next_frame() is None
        assert dec.buffered == 0
    dec.feed(struct.pack(">BI", 0x07, 1) + b"\x01")
    assert dec.next_frame() == derp.Frame(0x07, b"\x01")


def test_unknown_frame_above_cap_is_refused() -> None:
    dec = derp.FrameDecoder(lambda t: None)
    dec.feed(struct.pack(">BI", 0x42, derp.MAX_UNKNOWN_FRAME_BYTES + 1))
    with pytest.raises(FramingError, match="0x42"):
        dec.next_frame()


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8), st.data())
def test_any_chunking_yields_the_same_frames(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(derp.encode_frame(t, p) for t, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = derp.FrameDecoder(derp.client_read_limit)
    got: list[tuple[int, bytes]] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        dec.feed(stream[prev:cut])
        prev = cut
        while (f := dec.next_frame()) is not None:
            assert isinstance(f, derp.Frame)
            got.append((f.type, f.payload))
    assert got == frames


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_only_raise_framing_error(blob: bytes) -> None:
    dec = derp.FrameDecoder(lambda t: 64 if t < 0x20 else None, unknown_limit=128)
    with contextlib.suppress(FramingError):
        dec.feed(blob)
        while dec.next_frame() is not None:
            pass


# --- round trips ------------------------------------------------------------------------------


@given(node_keys, packets)
def test_recv_packet_round_trip(src: NodePublic, payload: bytes) -> None:
    assert derp.parse_recv_packet(single(derp.encode_recv_packet(src, payload)).payload) == (
        src,
        payload,
    )


@given(node_keys, st.sampled_from([PeerGoneReason.DISCONNECTED, PeerGoneReason.NOT_HERE]))
def test_peer_gone_round_trip(peer: NodePublic, reason: PeerGoneReason) -> None:
    assert derp.parse_peer_gone(single(derp.encode_peer_gone(peer, reason)).payload) == (
        peer,
        reason,
    )


@given(
    node_keys,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6).filter(not_v4_mapped)),
    st.integers(0, 65535),
    st.integers(1, 15).map(PeerPresentFlags),
)
def test_peer_present_round_trip(
    peer: NodePublic,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    flags: PeerPresentFlags,
) -> None:
    raw = derp.encode_peer_present(peer, ip, port, flags)
    assert derp.parse_peer_present(single(raw).payload) == (peer, ip, port, flags)


@given(st.binary(min_size=8, max_size=8))
def test_pong_round_trip(data: bytes) -> None:
    f = single(derp.encode_pong(data))
    assert (f.type, f.payload) == (FrameType.PONG, data)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_restarting_round_trip(a: int, b: int) -> None:
    assert derp.parse_restarting(single(derp.encode_restarting(a, b)).payload) == (a, b)


@given(st.text(max_size=200))
def test_health_round_trip(text: str) -> None:
    assert single(derp.encode_health(text)).payload.decode() == text


@given(st.integers(0, 2**31), st.integers(0, 2**31), st.binary(min_size=24, max_size=24))
def test_server_info_round_trip(rate: int, burst: int, nonce: bytes) -> None:
    server, client = PrivateKey.generate(), PrivateKey.generate()
    info = derp.ServerInfo(2, rate, burst)
    raw = derp.encode_server_info(server, NodePublic(client.public_raw), info, nonce)
    got = derp.open_server_info(client, NodePublic(server.public_raw), single(raw).payload)
    assert got == info


@given(
    st.builds(
        derp.ClientInfo,
        version=st.integers(0, 100),
        can_ack_pings=st.booleans(),
        mesh_key=st.one_of(st.none(), keys32.filter(any)),
        is_prober=st.booleans(),
        app_name=st.text(max_size=20),
    ),
    st.binary(min_size=24, max_size=24),
)
def test_client_info_round_trip(info: derp.ClientInfo, nonce: bytes) -> None:
    server, client = PrivateKey.generate(), PrivateKey.generate()
    raw = derp.encode_client_info(client, NodePublic(server.public_raw), info, nonce)
    f = single(raw)
    key, got = derp.open_client_info(server, f.payload)
    assert key == NodePublic(client.public_raw)
    assert got == info


@given(st.binary(max_size=200))
def test_server_side_payload_parsers_only_raise_protocol_errors(blob: bytes) -> None:
    server = PrivateKey.generate()
    for parse in (
        derp.parse_server_key,
        derp.parse_recv_packet,
        derp.parse_peer_gone,
        derp.parse_peer_present,
        derp.parse_restarting,
        lambda b: derp.open_client_info(server, b),
        lambda b: derp.open_server_info(server, NodePublic(bytes(32)), b),
    ):
        with contextlib.suppress(ProtocolError):
            parse(blob)


@given(node_keys, packets)
def test_recv_packet_prefix_plus_payload_is_the_recv_packet_frame(
    src: NodePublic, payload: bytes
) -> None:
    assert derp.recv_packet_prefix(src, len(payload)) + payload == derp.encode_recv_packet(
        src, payload
    )
    assert len(derp.recv_packet_prefix(src, 0)) == derp.RECV_PACKET_PREFIX_BYTES
