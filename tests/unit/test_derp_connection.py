"""Server-side DERP connection state machine: handshake rules and steady-state events."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import Box
from nacl.public import PrivateKey as NaclPrivateKey
from nacl.public import PublicKey as NaclPublicKey

from outpost_server.errors import FramingError, LocalProtocolError, ProtocolError
from outpost_server.keys import NodePublic, PrivateKey
from outpost_server.proto import derp
from outpost_server.proto.derp import ConnState, ServerConnection

SERVER = PrivateKey(bytes(range(1, 33)))
CLIENT = NaclPrivateKey(bytes(range(101, 133)))
CLIENT_PUB = bytes(CLIENT.public_key)
MESH_KEY = bytes(range(200, 232))


def frame(t: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BI", t, len(payload)) + payload


def client_info_frame(
    doc: object = None, *, plaintext: bytes | None = None, client: NaclPrivateKey = CLIENT
) -> bytes:
    if plaintext is None:
        plaintext = json.dumps(
            doc if doc is not None else {"version": 2, "CanAckPings": True}
        ).encode()
    sealed = Box(client, NaclPublicKey(SERVER.public_raw)).encrypt(plaintext)
    return frame(0x02, bytes(client.public_key) + bytes(sealed))


def established(mesh: bool = False) -> ServerConnection:
    conn = ServerConnection(SERVER, mesh_key=MESH_KEY)
    doc: dict[str, object] = {"version": 2, "CanAckPings": True}
    if mesh:
        doc["meshKey"] = MESH_KEY.hex()
    (hello,) = conn.receive_data(client_info_frame(doc))
    assert isinstance(hello, derp.ClientHello)
    conn.accept(bytes(24))
    return conn


# --- handshake --------------------------------------------------------------------------------


def test_first_frame_is_server_key_with_our_public_key() -> None:
    raw = ServerConnection(SERVER).server_key_frame()
    assert raw[:5] == b"\x01\x00\x00\x00\x28"
    assert raw[5:13] == derp.MAGIC
    assert raw[13:45] == SERVER.public_raw


def test_valid_client_info_yields_hello_with_client_key_and_info() -> None:
    conn = ServerConnection(SERVER)
    (hello,) = conn.receive_data(client_info_frame())
    assert hello == derp.ClientHello(
        NodePublic(CLIENT_PUB), derp.ClientInfo(version=2, can_ack_pings=True), False
    )
    assert conn.state is ConnState.AWAIT_ADMISSION


def test_accept_returns_server_info_sealed_to_the_client() -> None:
    conn = ServerConnection(SERVER)
    conn.receive_data(client_info_frame())
    raw = conn.accept(b"\x01" * 24)
    assert raw[0] == 0x03
    (length,) = struct.unpack(">I", raw[1:5])
    body = raw[5:]
    assert len(body) == length
    plain = Box(CLIENT, NaclPublicKey(SERVER.public_raw)).decrypt(body[24:], body[:24])
    assert json.loads(plain) == {"version": 2}
    assert conn.state is ConnState.ESTABLISHED


def test_client_info_split_across_reads_is_reassembled() -> None:
    conn = ServerConnection(SERVER)
    raw = client_info_frame()
    events = []
    for i in range(len(raw)):
        events += conn.receive_data(raw[i : i + 1])
    assert len(events) == 1
    assert isinstance(events[0], derp.ClientHello)


def test_frames_after_client_info_in_same_read_are_returned_in_order() -> None:
    conn = ServerConnection(SERVER)
    dst = b"\x09" * 32
    events = conn.receive_data(
        client_info_frame() + frame(0x04, dst + b"pkt") + frame(0x12, b"12345678")
    )
    assert [type(e) for e in events] == [derp.ClientHello, derp.SendPacket, derp.Ping]


@pytest.mark.parametrize(
    "first",
    [
        frame(0x04, bytes(32) + b"x"),  # SendPacket
        frame(0x12, bytes(8)),  # Ping
        frame(0x07, b"\x01"),  # NotePreferred
        frame(0x42, b""),  # unknown type
        frame(0x01, derp.MAGIC + bytes(32)),  # a ServerKey echoed back
    ],
)
def test_any_frame_before_client_info_is_a_framing_error(first: bytes) -> None:
    conn = ServerConnection(SERVER)
    with pytest.raises(FramingError, match="ClientInfo first"):
        conn.receive_data(first)
    assert conn.state is ConnState.CLOSED


def test_refused_frame_type_is_detected_from_the_header_alone() -> None:
    conn = ServerConnection(SERVER)
    with pytest.raises(FramingError):
        conn.receive_data(struct.pack(">BI", 0x04, 1000))  # payload never sent


def test_short_client_info_is_refused() -> None:
    conn = ServerConnection(SERVER)
    with pytest.raises(FramingError, match="short ClientInfo"):
        conn.receive_data(frame(0x02, bytes(55)))


def test_oversized_client_info_is_refused_before_its_payload() -> None:
    conn = ServerConnection(SERVER)
    with pytest.raises(FramingError, match=r"CLIENT_INFO.*262145"):
        conn.receive_data(struct.pack(">BI", 0x02, derp.MAX_CLIENT_INFO_BYTES + 1))


@pytest.mark.parametrize(
    "payload",
    [
        CLIENT_PUB + bytes(24),  # exactly 56 bytes: box without room for a tag
        CLIENT_PUB + bytes(100),  # garbage box
        bytes(32) + bytes(100),  # all-zero (low-order) client key
    ],
)
def test_garbage_client_info_box_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        ServerConnection(SERVER).receive_data(frame(0x02, payload))


def test_client_info_sealed_to_another_server_is_refused() -> None:
    other = NaclPrivateKey.generate()
    sealed = Box(CLIENT, other.public_key).encrypt(b'{"version":2}')
    with pytest.raises(ProtocolError, match="cannot open"):
        ServerConnection(SERVER).receive_data(frame(0x02, CLIENT_PUB + bytes(sealed)))


@pytest.mark.parametrize(
    "plaintext",
    [
        b"not json",
        b"\xff\xfe",
        b"[1,2]",
        b'"str"',
        b'{"version":"2"}',
        b'{"version":true}',
        b'{"CanAckPings":1}',
        b'{"meshKey":"abc"}',
        b'{"meshKey":"' + b"zz" * 32 + b'"}',
        b'{"AppName":7}',
        b"[" * 100000,
        b'{"version":' + b"9" * 5000 + b"}",
    ],
)
def test_bad_client_info_json_is_a_protocol_error(plaintext: bytes) -> None:
    with pytest.raises(ProtocolError):
        ServerConnection(SERVER).receive_data(client_info_frame(plaintext=plaintext))


def test_client_info_keys_match_case_insensitively_like_go() -> None:
    (hello,) = ServerConnection(SERVER).receive_data(
        client_info_frame({"Version": 2, "canackpings": True, "extra": [1]})
    )
    assert isinstance(hello, derp.ClientHello)
    assert hello.info == derp.ClientInfo(version=2, can_ack_pings=True)


def test_matching_mesh_key_marks_mesh_peer_and_wrong_one_does_not() -> None:
    good = ServerConnection(SERVER, mesh_key=MESH_KEY)
    (hello,) = good.receive_data(client_info_frame({"meshKey": MESH_KEY.hex()}))
    assert isinstance(hello, derp.ClientHello) and hello.is_mesh_peer
    bad = ServerConnection(SERVER, mesh_key=MESH_KEY)
    (hello,) = bad.receive_data(client_info_frame({"meshKey": "00" * 31 + "01"}))
    assert isinstance(hello, derp.ClientHello) and not hello.is_mesh_peer
    unset = ServerConnection(SERVER)
    (hello,) = unset.receive_data(client_info_frame({"meshKey": MESH_KEY.hex()}))
    assert isinstance(hello, derp.ClientHello) and not hello.is_mesh_peer


def test_accept_without_client_info_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        ServerConnection(SERVER).accept(bytes(24))


def test_closed_connection_refuses_more_input() -> None:
    conn = ServerConnection(SERVER)
    with pytest.raises(FramingError):
        conn.receive_data(frame(0x04, bytes(40)))
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"")


# --- steady state -----------------------------------------------------------------------------


def test_send_packet_yields_destination_and_payload() -> None:
    (ev,) = established().receive_data(frame(0x04, b"\x05" * 32 + b"data"))
    assert ev == derp.SendPacket(NodePublic(b"\x05" * 32), b"data")


def test_max_size_packet_is_accepted_and_one_more_byte_is_not() -> None:
    conn = established()
    (ev,) = conn.receive_data(frame(0x04, bytes(32) + bytes(derp.MAX_PACKET_BYTES)))
    assert isinstance(ev, derp.SendPacket) and len(ev.payload) == derp.MAX_PACKET_BYTES
    with pytest.raises(FramingError, match=r"SEND_PACKET.*65569"):
        conn.receive_data(struct.pack(">BI", 0x04, 32 + derp.MAX_PACKET_BYTES + 1))


def test_short_send_packet_is_a_framing_error() -> None:
    with pytest.raises(FramingError, match="short SendPacket"):
        established().receive_data(frame(0x04, bytes(31)))


def test_ping_echoes_first_eight_bytes_and_allows_padding() -> None:
    conn = established()
    assert conn.receive_data(frame(0x12, b"ABCDEFGH")) == [derp.Ping(b"ABCDEFGH")]
    assert conn.receive_data(frame(0x12, b"ABCDEFGH" + bytes(992))) == [derp.Ping(b"ABCDEFGH")]


@pytest.mark.parametrize("length", [0, 7, 1001])
def test_ping_of_bad_length_is_a_framing_error(length: int) -> None:
    with pytest.raises(FramingError):
        established().receive_data(frame(0x12, bytes(length)))


def test_note_preferred_reports_the_flag() -> None:
    conn = established()
    assert conn.receive_data(frame(0x07, b"\x01")) == [derp.NotePreferred(True)]
    assert conn.receive_data(frame(0x07, b"\x00")) == [derp.NotePreferred(False)]


@pytest.mark.parametrize("payload", [b"", b"\x01\x01"])
def test_note_preferred_must_be_one_byte(payload: bytes) -> None:
    with pytest.raises(FramingError):
        established().receive_data(frame(0x07, payload))


def test_unknown_frames_and_client_pongs_are_reported_and_skipped() -> None:
    conn = established()
    events = conn.receive_data(frame(0x42, b"whatever") + frame(0x13, bytes(8)) + frame(0x02, b""))
    assert events == [
        derp.UnknownFrame(0x42, 8),
        derp.UnknownFrame(0x13, 8),
        derp.UnknownFrame(0x02, 0),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        frame(0x0A, bytes(64) + b"pkt"),  # ForwardPacket
        frame(0x10),  # WatchConns
        frame(0x11, bytes(32)),  # ClosePeer
    ],
)
def test_mesh_only_frames_are_refused_without_mesh_key(raw: bytes) -> None:
    with pytest.raises(FramingError, match="mesh"):
        established().receive_data(raw)


def test_mesh_peer_gets_mesh_events() -> None:
    conn = established(mesh=True)
    events = conn.receive_data(
        frame(0x0A, b"\x01" * 32 + b"\x02" * 32 + b"pkt") + frame(0x10) + frame(0x11, b"\x03" * 32)
    )
    assert events == [
        derp.ForwardPacket(NodePublic(b"\x01" * 32), NodePublic(b"\x02" * 32), b"pkt"),
        derp.WatchConns(),
        derp.ClosePeer(NodePublic(b"\x03" * 32)),
    ]


def test_mesh_frames_of_wrong_size_are_refused_even_for_mesh_peers() -> None:
    with pytest.raises(FramingError):
        established(mesh=True).receive_data(frame(0x10, b"x"))
    with pytest.raises(FramingError):
        established(mesh=True).receive_data(frame(0x11, bytes(31)))


# --- fuzz -------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_before_handshake_only_raise_protocol_errors(blob: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        ServerConnection(SERVER).receive_data(blob)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=600), max_size=6))
def test_arbitrary_bytes_after_handshake_only_raise_protocol_errors(chunks: list[bytes]) -> None:
    conn = established(mesh=True)
    with contextlib.suppress(ProtocolError):
        for c in chunks:
            conn.receive_data(c)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 0x20), st.binary(max_size=80)), max_size=10))
def test_well_framed_random_frames_only_raise_protocol_errors(
    frames: list[tuple[int, bytes]],
) -> None:
    conn = established()
    with contextlib.suppress(ProtocolError):
        conn.receive_data(b"".join(frame(t, p) for t, p in frames))


# --- receive_batch: the relay's per-read path -------------------------------------------------


def expand(events: list[derp.DerpEvent | derp.SendPackets]) -> list[derp.DerpEvent]:
    """receive_batch output in receive_data's terms: runs become SendPacket events."""
    out: list[derp.DerpEvent] = []
    for ev in events:
        out += ev.packets() if isinstance(ev, derp.SendPackets) else [ev]
    return out


def send(dst: int, payload: bytes) -> bytes:
    return frame(0x04, bytes([dst]) * 32 + payload)


def test_batch_returns_consecutive_send_packets_as_one_run_in_place() -> None:
    raw = send(1, b"one") + send(2, b"two") + send(3, b"three")
    (run,) = established().receive_batch(raw)
    assert isinstance(run, derp.SendPackets)
    assert run.data is raw  # offsets into the read, nothing copied
    assert len(run) == 3
    assert run.packets() == [
        derp.SendPacket(NodePublic(bytes([i]) * 32), p)
        for i, p in ((1, b"one"), (2, b"two"), (3, b"three"))
    ]


def test_batch_keeps_other_frames_in_order_between_runs() -> None:
    raw = send(1, b"a") + frame(0x12, b"ABCDEFGH") + send(2, b"b") + send(3, b"c")
    events = established().receive_batch(raw)
    assert [type(e) for e in events] == [derp.SendPackets, derp.Ping, derp.SendPackets]
    assert [len(e) for e in events if isinstance(e, derp.SendPackets)] == [1, 2]


def test_batch_reassembles_a_packet_split_at_every_byte() -> None:
    raw = send(1, b"first") + send(2, bytes(range(200))) + send(3, b"last")
    want = established().receive_data(raw)
    for cut in range(1, len(raw)):
        conn = established()
        got = expand(conn.receive_batch(raw[:cut])) + expand(conn.receive_batch(raw[cut:]))
        assert got == want, cut


def test_batch_rejects_an_oversized_send_packet_from_its_header() -> None:
    conn = established()
    header = struct.pack(">BI", 0x04, 32 + derp.MAX_PACKET_BYTES + 1)
    with pytest.raises(FramingError, match=r"SEND_PACKET of 65569 bytes exceeds 65568"):
        conn.receive_batch(send(1, b"ok") + header)
    assert conn.state is ConnState.CLOSED


def test_batch_rejects_an_oversized_header_split_across_reads() -> None:
    conn = established()
    header = struct.pack(">BI", 0x04, 32 + derp.MAX_PACKET_BYTES + 1)
    assert conn.receive_batch(header[:3]) == []
    with pytest.raises(FramingError, match="exceeds"):
        conn.receive_batch(header[3:])


def test_batch_rejects_a_short_send_packet() -> None:
    with pytest.raises(FramingError, match="short SendPacket"):
        established().receive_batch(send(1, b"ok") + frame(0x04, bytes(31)))


def test_batch_skips_unknown_frames_even_when_they_span_reads() -> None:
    conn = established()
    raw = send(1, b"a") + frame(0x42, bytes(100)) + send(2, b"b")
    first = conn.receive_batch(raw[:60])
    assert expand(first) == [
        derp.SendPacket(NodePublic(b"\x01" * 32), b"a"),
        derp.UnknownFrame(0x42, 100),
    ]
    assert expand(conn.receive_batch(raw[60:])) == [derp.SendPacket(NodePublic(b"\x02" * 32), b"b")]


def test_batch_before_the_handshake_is_the_plain_path() -> None:
    conn = ServerConnection(SERVER)
    (hello,) = conn.receive_batch(client_info_frame())
    assert isinstance(hello, derp.ClientHello)


def test_batch_refuses_mesh_frames_from_regular_clients() -> None:
    with pytest.raises(FramingError, match="mesh"):
        established().receive_batch(send(1, b"a") + frame(0x10))


_FRAMES = st.one_of(
    st.builds(send, st.integers(0, 3), st.binary(max_size=300)),
    st.builds(lambda d: frame(0x12, d), st.binary(min_size=8, max_size=20)),
    st.builds(lambda d: frame(0x07, d), st.sampled_from([b"\x00", b"\x01"])),
    st.builds(lambda d: frame(0x42, d), st.binary(max_size=50)),
)


@settings(max_examples=300)
@given(st.lists(_FRAMES, max_size=12), st.lists(st.integers(0, 4000), max_size=6))
def test_batch_equals_receive_data_for_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(frames)
    want = established().receive_data(raw)
    conn = established()
    got: list[derp.DerpEvent] = []
    bounds = [0, *sorted(min(c, len(raw)) for c in cuts), len(raw)]
    for a, b in itertools.pairwise(bounds):
        got += expand(conn.receive_batch(raw[a:b]))
    assert got == want


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=600), max_size=6))
def test_batch_arbitrary_bytes_only_raise_protocol_errors(chunks: list[bytes]) -> None:
    conn = established(mesh=True)
    with contextlib.suppress(ProtocolError):
        for c in chunks:
            conn.receive_batch(c)


def test_batch_hands_back_the_frames_before_a_bad_one() -> None:
    conn = established()
    out: list[derp.DerpEvent | derp.SendPackets] = []
    bad = struct.pack(">BI", 0x04, 32 + derp.MAX_PACKET_BYTES + 1)
    with pytest.raises(FramingError, match="exceeds"):
        conn.receive_batch(send(1, b"a") + frame(0x12, b"ABCDEFGH") + send(2, b"b") + bad, out)
    assert expand(out) == [
        derp.SendPacket(NodePublic(b"\x01" * 32), b"a"),
        derp.Ping(b"ABCDEFGH"),
        derp.SendPacket(NodePublic(b"\x02" * 32), b"b"),
    ]
    with pytest.raises(LocalProtocolError):
        conn.receive_batch(send(1, b"more"))
