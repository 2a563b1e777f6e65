"""The independent test DERP client talking to the server state machine + relay in memory.

Bytes go client codec -> ServerConnection -> Relay -> take_frames -> client codec,
with no sockets and no clock (time is passed in).
"""

from __future__ import annotations

import os

import pytest
from nacl.public import PrivateKey as NaclPrivateKey

from outpost_server.errors import ProtocolError
from outpost_server.keys import NodePublic, PrivateKey
from outpost_server.proto import derp
from outpost_server.relay import DropReason, Relay
from outpost_server.relay.client import ClientConn
from tests.derp_client_double import (
    DerpClientCodec,
    Message,
    PeerGone,
    Pong,
    Received,
    ServerInfoMsg,
    ServerKey,
    disco_payload,
    frame,
)


class Peer:
    def __init__(self, codec: DerpClientCodec) -> None:
        self.codec = codec
        self.session: derp.ServerConnection | None = None
        self.conn: ClientConn | None = None
        self.closed = False
        self.inbox: list[Message] = []

    @property
    def key(self) -> bytes:
        return self.codec.public


class Harness:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.peers: list[Peer] = []

    def connect(
        self, private: NaclPrivateKey | None = None, doc: dict[str, object] | None = None
    ) -> Peer:
        peer = Peer(DerpClientCodec(private))
        peer.session = self.relay.new_session()
        (msg,) = peer.codec.feed(peer.session.server_key_frame())
        assert msg == ServerKey(self.relay.public_key.raw)
        events = peer.session.receive_data(peer.codec.client_info(doc=doc))
        hello = events[0]
        assert isinstance(hello, derp.ClientHello)
        if not self.relay.admit(hello):
            peer.session.refuse()
            peer.closed = True
            return peer

        def close() -> None:
            peer.closed = True

        peer.conn = self.relay.register(hello, wake=lambda: None, close=close)
        peer.inbox += peer.codec.feed(peer.session.accept(os.urandom(24)))
        self.peers.append(peer)
        return peer

    def send(self, peer: Peer, data: bytes, now: float = 0.0) -> None:
        assert peer.session is not None and peer.conn is not None
        for ev in peer.session.receive_data(data):
            self.relay.handle(peer.conn, ev, now)

    def pump(self) -> None:
        for p in self.peers:
            if p.conn is not None:
                p.inbox += p.codec.feed(b"".join(self.relay.take_frames(p.conn)))

    def drain(self, peer: Peer) -> list[Message]:
        self.pump()
        out, peer.inbox = peer.inbox, []
        return out

    def disconnect(self, peer: Peer) -> None:
        assert peer.conn is not None
        self.relay.unregister(peer.conn)
        self.peers.remove(peer)


def make(admit: bool = True) -> Harness:
    relay = Relay(PrivateKey.generate())
    relay.set_admission(lambda k: admit)
    return Harness(relay)


def test_login_ends_with_server_info_version_2() -> None:
    h = make()
    a = h.connect()
    assert h.drain(a) == [ServerInfoMsg({"version": 2})]


def test_two_clients_exchange_packets_both_ways() -> None:
    h = make()
    a, b = h.connect(), h.connect()
    h.drain(a), h.drain(b)
    h.send(a, a.codec.send_packet(b.key, b"ping from a"))
    h.send(b, b.codec.send_packet(a.key, b"pong from b"))
    assert h.drain(b) == [Received(a.key, b"ping from a")]
    assert h.drain(a) == [Received(b.key, b"pong from b")]


def test_packet_sent_in_same_bytes_as_client_info_is_relayed_after_server_info() -> None:
    h = make()
    b = h.connect()
    h.drain(b)
    a = Peer(DerpClientCodec())
    a.session = h.relay.new_session()
    a.codec.feed(a.session.server_key_frame())
    events = a.session.receive_data(a.codec.client_info() + a.codec.send_packet(b.key, b"early"))
    hello, rest = events[0], events[1:]
    assert isinstance(hello, derp.ClientHello) and h.relay.admit(hello)
    a.conn = h.relay.register(hello, wake=lambda: None, close=lambda: None)
    assert isinstance(a.codec.feed(a.session.accept(os.urandom(24)))[0], ServerInfoMsg)
    for ev in rest:
        h.relay.handle(a.conn, ev, 0.0)
    assert h.drain(b) == [Received(a.key, b"early")]


def test_ping_gets_pong_with_same_data() -> None:
    h = make()
    a = h.connect()
    h.drain(a)
    h.send(a, a.codec.ping(b"8bytes!!"))
    assert h.drain(a) == [Pong(b"8bytes!!")]


def test_peer_gone_disconnected_after_sender_leaves() -> None:
    h = make()
    a, b = h.connect(), h.connect()
    h.send(a, a.codec.send_packet(b.key, b"x"))
    h.drain(b)
    h.disconnect(a)
    assert h.drain(b) == [PeerGone(a.key, 0)]


def test_disco_to_unknown_key_gets_not_here_three_times_then_one_per_second() -> None:
    h = make()
    a = h.connect()
    h.drain(a)
    stranger = os.urandom(32)
    for _ in range(10):
        h.send(a, a.codec.send_packet(stranger, disco_payload()), now=100.0)
    assert h.drain(a) == [PeerGone(stranger, 1)] * 3
    h.send(a, a.codec.send_packet(stranger, disco_payload()), now=100.5)
    assert h.drain(a) == []
    h.send(a, a.codec.send_packet(stranger, disco_payload()), now=101.5)
    assert h.drain(a) == [PeerGone(stranger, 1)]


def test_non_disco_to_unknown_key_is_dropped_silently() -> None:
    h = make()
    a = h.connect()
    h.drain(a)
    h.send(a, a.codec.send_packet(os.urandom(32), b"wireguard bytes"))
    assert h.drain(a) == []
    assert h.relay.stats().drops == {DropReason.UNKNOWN_DEST.value: 1}


def test_duplicate_key_newest_receives_until_older_speaks() -> None:
    h = make()
    shared = NaclPrivateKey.generate()
    b1 = h.connect(shared)
    b2 = h.connect(shared)
    a = h.connect()
    for p in (a, b1, b2):
        h.drain(p)
    h.send(a, a.codec.send_packet(b1.key, b"one"))
    assert (h.drain(b1), h.drain(b2)) == ([], [Received(a.key, b"one")])
    h.send(b1, b1.codec.note_preferred(True))
    h.send(a, a.codec.send_packet(b1.key, b"two"))
    assert (h.drain(b1), h.drain(b2)) == ([Received(a.key, b"two")], [])
    assert not b1.closed and not b2.closed


def test_refused_client_gets_no_server_info() -> None:
    h = make(admit=False)
    a = h.connect()
    assert a.closed and a.conn is None
    assert a.inbox == []
    assert h.relay.stats().connections_refused == 1


def test_disconnect_key_closes_client_and_peers_see_it_gone() -> None:
    h = make()
    a, b = h.connect(), h.connect()
    h.send(a, a.codec.send_packet(b.key, b"x"))
    h.drain(b)
    assert h.relay.disconnect_key(NodePublic(a.key)) == 1
    assert a.closed
    assert h.drain(b) == [PeerGone(a.key, 0)]


def test_oversized_send_packet_is_a_protocol_error_and_others_keep_working() -> None:
    h = make()
    a, b, c = h.connect(), h.connect(), h.connect()
    for p in (a, b, c):
        h.drain(p)
    with pytest.raises(ProtocolError):
        h.send(a, frame(0x04, b.key + bytes(derp.MAX_PACKET_BYTES + 1)))
    h.disconnect(a)
    h.send(c, c.codec.send_packet(b.key, b"still fine"))
    assert h.drain(b) == [Received(c.key, b"still fine")]


def test_unknown_frame_types_from_a_newer_client_are_ignored() -> None:
    h = make()
    a, b = h.connect(), h.connect()
    h.drain(b)
    h.send(a, frame(0x7E, b"future") + a.codec.send_packet(b.key, b"after"))
    assert h.drain(b) == [Received(a.key, b"after")]
    assert h.relay.stats().unknown_frames == 1


def test_mesh_client_session_logs_in_watches_and_hears_presence() -> None:
    """Our own client state machine against our server state machine, bytes only."""
    from outpost_server.proto.derpclient import ClientSession, Connected, PeerGone as Gone, PeerPresent

    mesh_key = os.urandom(32)
    server_key = PrivateKey(os.urandom(32))
    relay_ = Relay(server_key, admission=lambda k: False, mesh_key=mesh_key)
    other = PrivateKey(os.urandom(32))
    client = ClientSession(
        other, derp.ClientInfo(version=2, can_ack_pings=True, mesh_key=mesh_key), lambda: bytes(24), watch=True
    )
    server = relay_.new_session()
    assert client.feed(server.server_key_frame()) == []
    events = server.receive_data(client.take_output())
    hello = events[0]
    assert isinstance(hello, derp.ClientHello) and hello.is_mesh_peer and relay_.admit(hello)
    conn = relay_.register(hello, wake=lambda: None, close=lambda: None)
    got = client.feed(server.accept(bytes(24), relay_.server_info))
    assert got == [Connected(server.server_public, derp.ServerInfo())]
    for ev in server.receive_data(client.take_output()):  # WatchConns
        relay_.handle(conn, ev, 0.0)
    regular = NaclPrivateKey.generate()
    relay_.register(
        derp.ClientHello(NodePublic(bytes(regular.public_key)), derp.ClientInfo(version=2), False),
        wake=lambda: None, close=lambda: None, remote="10.0.0.7:41641",
    )  # fmt: skip
    seen = client.feed(b"".join(relay_.take_frames(conn)))
    assert [type(e) for e in seen] == [PeerPresent]
    assert seen[0].key == NodePublic(bytes(regular.public_key)) and str(seen[0].ip) == "10.0.0.7"  # type: ignore[union-attr]
    assert not [e for e in seen if isinstance(e, Gone)]


def test_mesh_client_session_refuses_a_server_that_skips_server_key() -> None:
    from outpost_server.proto.derpclient import ClientSession

    client = ClientSession(PrivateKey(os.urandom(32)), derp.ClientInfo(version=2), lambda: bytes(24))
    with pytest.raises(ProtocolError, match="expected ServerKey first"):
        client.feed(derp.encode_keep_alive())
