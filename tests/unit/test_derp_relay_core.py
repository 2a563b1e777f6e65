"""Relay core without any protocol bytes: registry, dup rule, routing, queues, counters."""

from __future__ import annotations

import pytest

from outpost_server.errors import LocalProtocolError
from outpost_server.keys import NodePublic, PrivateKey
from outpost_server.proto import derp
from outpost_server.proto.derp import PeerGoneReason
from outpost_server.relay import DropReason, Relay, router
from outpost_server.relay.client import ClientConn, looks_like_disco
from outpost_server.relay.limiter import TokenBucket

DISCO = "TS💬".encode() + bytes(56)  # exactly 62 bytes
A = NodePublic(b"\xaa" * 32)
B = NodePublic(b"\xbb" * 32)
C = NodePublic(b"\xcc" * 32)


class Conn:
    """Records what the relay asks of one connection."""

    def __init__(self, relay: Relay, key: NodePublic, *, mesh: bool = False) -> None:
        self.relay = relay
        self.wakes = 0
        self.closed = False
        hello = derp.ClientHello(key, derp.ClientInfo(version=2, can_ack_pings=True), mesh)
        self.conn = relay.register(hello, wake=self._wake, close=self._close)

    def _wake(self) -> None:
        self.wakes += 1

    def _close(self) -> None:
        self.closed = True

    def send(self, dst: NodePublic, payload: bytes, now: float = 0.0) -> None:
        self.relay.handle(self.conn, derp.SendPacket(dst, payload), now)

    def frames(self) -> list[tuple[int, bytes]]:
        out = []
        for raw in self.relay.take_frames(self.conn):
            out.append((raw[0], raw[5:]))
        return out

    def packets(self) -> list[tuple[NodePublic, bytes]]:
        return [derp.parse_recv_packet(p) for t, p in self.frames() if t == 0x05]


def relay(**kw: object) -> Relay:
    return Relay(PrivateKey(bytes(range(32))), admission=lambda k: True, **kw)  # type: ignore[arg-type]


def test_disco_detection_needs_magic_and_62_bytes() -> None:
    assert looks_like_disco(DISCO)
    assert not looks_like_disco(DISCO[:61])
    assert not looks_like_disco(b"X" + DISCO[1:])


def test_token_bucket_allows_burst_then_one_per_second() -> None:
    tb = TokenBucket(1.0, 3)
    assert [tb.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert not tb.allow(0.5)
    assert tb.allow(1.0)
    assert not tb.allow(1.0)
    assert [tb.allow(100.0) for _ in range(4)] == [True, True, True, False]


def test_packet_is_delivered_with_sender_as_source_and_counted() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    a.send(B, b"hello")
    assert b.wakes >= 1
    assert b.packets() == [(A, b"hello")]
    s = r.stats()
    assert (s.packets_received, s.bytes_received) == (1, 5)
    assert (s.packets_relayed, s.bytes_relayed) == (1, 5)
    assert a.frames() == []


def test_full_data_queue_drops_the_oldest_packet() -> None:
    r = relay(queue_depth=4)
    a, b = Conn(r, A), Conn(r, B)
    for i in range(6):
        a.send(B, bytes([i]))
    assert [p for _, p in b.packets()] == [bytes([i]) for i in range(2, 6)]
    assert r.stats().drops == {DropReason.QUEUE_HEAD.value: 2}


def test_disco_has_its_own_queue_and_is_written_first() -> None:
    r = relay(queue_depth=2)
    a, b = Conn(r, A), Conn(r, B)
    for i in range(3):
        a.send(B, bytes([i]))
    a.send(B, DISCO)
    assert [p for _, p in b.packets()] == [DISCO, b"\x01", b"\x02"]


def test_unknown_destination_drops_and_answers_disco_with_not_here_rate_limited() -> None:
    r = relay()
    a = Conn(r, A)
    a.send(C, b"not disco")
    assert a.frames() == []
    for _ in range(5):
        a.send(C, DISCO, now=10.0)
    gone = [derp.parse_peer_gone(p) for t, p in a.frames() if t == 0x08]
    assert gone == [(C, PeerGoneReason.NOT_HERE)] * 3
    a.send(C, DISCO, now=11.0)
    assert [t for t, _ in a.frames()] == [0x08]
    assert r.stats().drops == {DropReason.UNKNOWN_DEST.value: 7}


def test_peer_gone_disconnected_goes_to_receivers_when_last_connection_leaves() -> None:
    r = relay()
    a, b, c = Conn(r, A), Conn(r, B), Conn(r, C)
    a.send(B, b"x")
    b.frames()
    a2 = Conn(r, A)  # second connection for A
    r.unregister(a.conn)
    assert b.frames() == []  # A still has a connection
    r.unregister(a2.conn)
    assert [derp.parse_peer_gone(p) for t, p in b.frames()] == [(A, PeerGoneReason.DISCONNECTED)]
    assert c.frames() == []  # C never received from A


def test_peer_gone_skips_a_receiver_that_reconnected_since() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    a.send(B, b"x")
    r.unregister(b.conn)
    b2 = Conn(r, B)
    r.unregister(a.conn)
    assert b2.frames() == []


def test_newest_duplicate_is_active_then_last_writer_wins() -> None:
    r = relay()
    a = Conn(r, A)
    b1 = Conn(r, B)
    b2 = Conn(r, B)
    a.send(B, b"1")
    assert (b1.packets(), b2.packets()) == ([], [(A, b"1")])
    r.handle(b1.conn, derp.NotePreferred(True), 0.0)  # any frame makes b1 the writer
    a.send(B, b"2")
    assert (b1.packets(), b2.packets()) == ([(A, b"2")], [])
    assert not b1.closed and not b2.closed  # duplicates are kept open


def test_active_duplicate_leaving_with_two_left_drops_until_one_speaks() -> None:
    r = relay()
    a = Conn(r, A)
    b1, b2, b3 = Conn(r, B), Conn(r, B), Conn(r, B)
    r.unregister(b3.conn)
    a.send(B, b"x")
    assert r.stats().drops == {DropReason.DUP_CLIENT.value: 1}
    r.handle(b1.conn, derp.Ping(bytes(8)), 0.0)
    a.send(B, b"y")
    assert b1.packets() == [(A, b"y")]
    r.unregister(b1.conn)  # back to one connection: it is active again
    a.send(B, b"z")
    assert b2.packets() == [(A, b"z")]


def test_ping_queues_one_pong_at_a_time() -> None:
    r = relay()
    a = Conn(r, A)
    r.handle(a.conn, derp.Ping(b"11111111"), 0.0)
    r.handle(a.conn, derp.Ping(b"22222222"), 0.0)
    assert a.frames() == [(0x13, b"11111111")]
    s = r.stats()
    assert (s.pings_received, s.pongs_queued) == (2, 1)


def test_admission_hook_decides_and_failures_refuse() -> None:
    r = Relay(PrivateKey.generate())
    info = derp.ClientInfo()
    assert not r.admit(derp.ClientHello(A, info, False))  # no hook: fail closed
    r.set_admission(lambda k: k == A)
    assert r.admit(derp.ClientHello(A, info, False))
    assert not r.admit(derp.ClientHello(B, info, False))

    def broken(k: NodePublic) -> bool:
        raise RuntimeError("db down")

    r.set_admission(broken)
    assert not r.admit(derp.ClientHello(A, info, False))
    assert r.admit(derp.ClientHello(B, info, True))  # mesh peers bypass the hook
    s = r.stats()
    assert (s.connections_refused, s.admission_errors) == (3, 1)


def test_disconnect_key_closes_and_unregisters_every_connection() -> None:
    r = relay()
    a, b1, b2 = Conn(r, A), Conn(r, B), Conn(r, B)
    a.send(B, b"queued")
    assert r.disconnect_key(B) == 2
    assert b1.closed and b2.closed
    assert not r.is_connected(B)
    a.send(B, b"late")
    s = r.stats()
    assert s.drops[DropReason.UNKNOWN_DEST.value] == 1
    assert s.drops[DropReason.GONE_DISCONNECTED.value] == 1
    assert s.keys_disconnected == 2
    assert [derp.parse_peer_gone(p)[0] for t, p in a.frames()] == []  # B never sent to A
    assert r.disconnect_key(C) == 0


def test_events_from_a_closed_connection_are_ignored() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    r.disconnect_key(A)
    a.send(B, b"x")
    assert b.packets() == []


def test_forward_packet_from_mesh_peer_is_delivered_with_original_source() -> None:
    r = relay()
    mesh, b = Conn(r, C, mesh=True), Conn(r, B)
    r.handle(mesh.conn, derp.ForwardPacket(A, B, b"fwd"), 0.0)
    assert b.packets() == [(A, b"fwd")]
    r.handle(mesh.conn, derp.ForwardPacket(A, NodePublic(bytes(32)), DISCO), 0.0)
    assert r.stats().drops == {DropReason.UNKNOWN_DEST_ON_FWD.value: 1}
    assert [t for t, _ in mesh.frames()] == [0x08]


def test_close_peer_from_mesh_peer_disconnects_target() -> None:
    r = relay()
    mesh, b = Conn(r, C, mesh=True), Conn(r, B)
    r.handle(mesh.conn, derp.ClosePeer(B), 0.0)
    assert b.closed and not r.is_connected(B)


def test_stats_count_connections_keys_home_and_unknown_frames() -> None:
    r = relay()
    a, _b1, _b2 = Conn(r, A), Conn(r, B), Conn(r, B)
    r.handle(a.conn, derp.NotePreferred(True), 0.0)
    r.handle(a.conn, derp.UnknownFrame(0x42, 3), 0.0)
    s = r.stats()
    assert (s.connections_current, s.keys_current, s.home_connections) == (3, 2, 1)
    assert (s.connections_accepted, s.unknown_frames) == (3, 1)


def test_client_hello_is_not_an_event_for_handle() -> None:
    r = relay()
    a = Conn(r, A)
    with pytest.raises(LocalProtocolError):
        r.handle(a.conn, derp.ClientHello(A, derp.ClientInfo(), False), 0.0)


def test_take_frames_batches_but_always_makes_progress() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    for _ in range(3):
        a.send(B, bytes(60000))
    assert len(r.take_frames(b.conn, max_bytes=1)) == 1
    assert len(r.take_frames(b.conn)) == 2
    assert isinstance(b.conn, ClientConn) and not b.conn.has_pending()


# --- meshing ------------------------------------------------------------------------------------


class Link:
    """An outbound mesh link as the relay core sees it."""

    def __init__(self, name: str, room: int = 10) -> None:
        self.name = name
        self.room = room
        self.sent: list[tuple[NodePublic, NodePublic, bytes]] = []

    def forward(self, src: NodePublic, dst: NodePublic, payload: bytes) -> bool:
        if len(self.sent) >= self.room:
            return False
        self.sent.append((src, dst, payload))
        return True


def present_keys(frames: list[tuple[int, bytes]]) -> list[NodePublic]:
    return [derp.parse_peer_present(p)[0] for t, p in frames if t == 0x09]


def test_watcher_gets_a_flood_then_changes_but_never_mesh_peers() -> None:
    r = relay()
    a = Conn(r, A)
    watcher = Conn(r, C, mesh=True)
    r.handle(watcher.conn, derp.WatchConns(), 0.0)
    assert present_keys(watcher.frames()) == [A]  # the flood: regular clients only
    b = Conn(r, B)
    assert present_keys(watcher.frames()) == [B]
    r.unregister(b.conn)
    assert [(t, derp.parse_peer_gone(p)) for t, p in watcher.frames()] == [
        (0x08, (B, PeerGoneReason.DISCONNECTED))
    ]
    assert r.stats().watchers == 1
    r.unregister(a.conn)
    r.unregister(watcher.conn)
    assert r.stats().watchers == 0


def test_a_server_watching_itself_is_ignored() -> None:
    r = relay()
    me = Conn(r, r.public_key, mesh=True)
    Conn(r, A)
    r.handle(me.conn, derp.WatchConns(), 0.0)
    assert r.stats().watchers == 0 and me.frames() == []


def test_packets_for_meshed_keys_go_to_the_oldest_link_and_never_bounce() -> None:
    r = relay()
    a = Conn(r, A)
    first, second = Link("first"), Link("second", room=0)
    r.mesh_peer_present(first, B)
    r.mesh_peer_present(second, B)
    a.send(B, b"hi")
    assert first.sent == [(A, B, b"hi")]
    assert r.stats().packets_forwarded_out == 1
    r.mesh_peer_gone(first, B)  # now only the full link has B
    a.send(B, b"dropped")
    assert r.stats().drops[DropReason.MESH_QUEUE_FULL.value] == 1
    mesh = Conn(r, C, mesh=True)
    # forwarded packets are not re-forwarded
    r.handle(mesh.conn, derp.ForwardPacket(A, B, DISCO), 0.0)
    assert second.sent == [] and r.stats().drops[DropReason.UNKNOWN_DEST_ON_FWD.value] == 1


def test_link_down_forgets_its_keys_and_receivers_hear_peer_gone() -> None:
    r = relay()
    a = Conn(r, A)
    link = Link("peer")
    r.mesh_peer_present(link, B)
    mesh = Conn(r, C, mesh=True)
    r.handle(mesh.conn, derp.ForwardPacket(B, A, b"from b"), 0.0)  # A received from B
    assert a.packets() == [(B, b"from b")]
    assert r.mesh_link_down(link) == 1
    assert r.mesh_keys() == 0
    assert [derp.parse_peer_gone(p) for t, p in a.frames() if t == 0x08] == [
        (B, PeerGoneReason.DISCONNECTED)
    ]


def test_local_departure_of_a_key_still_on_a_peer_is_not_peer_gone() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    b.send(A, b"x")
    a.packets()
    r.mesh_peer_present(Link("peer"), B)  # B is also connected to the other relay
    r.unregister(b.conn)
    assert [t for t, _ in a.frames()] == []  # still reachable in the region


def test_watcher_that_cannot_keep_up_is_disconnected() -> None:
    r = relay()
    watcher = Conn(r, C, mesh=True)
    r.handle(watcher.conn, derp.WatchConns(), 0.0)
    watcher.conn.control_limit = 2
    for i in range(3):
        Conn(r, NodePublic(bytes([i + 1]) * 32))
    assert watcher.closed and r.stats().watchers == 0


def test_announce_restart_queues_health_then_restarting_for_everyone() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    assert r.announce_restart(2000, 60000, "going down") == 2
    for c in (a, b):
        frames = c.frames()
        assert [t for t, _ in frames] == [0x14, 0x15]
        assert frames[0][1] == b"going down"
        assert derp.parse_restarting(frames[1][1]) == (2000, 60000)


# --- runs of SendPackets (one read's worth, the hot path) --------------------------------------


def run(*packets: tuple[NodePublic, bytes]) -> derp.SendPackets:
    """The run a ServerConnection would report for these SendPacket frames in one read."""
    data, starts, ends = b"", [], []
    for dst, payload in packets:
        starts.append(len(data))
        data += derp.encode_send_packet(dst, payload)
        ends.append(len(data))
    return derp.SendPackets(data, starts, ends)


class WritableConn(Conn):
    """A destination whose socket takes everything: waking it writes its queues at once."""

    def __init__(self, relay: Relay, key: NodePublic) -> None:
        self.written: list[tuple[int, bytes]] = []
        super().__init__(relay, key)

    def _wake(self) -> None:
        self.wakes += 1
        self.written += [(raw[0], raw[5:]) for raw in self.relay.take_frames(self.conn)]


def test_run_is_routed_like_single_packets_and_counted_once() -> None:
    r = relay()
    a, b, c = Conn(r, A), Conn(r, B), Conn(r, C)
    r.handle(a.conn, run((B, b"x"), (C, b"y"), (B, b"z"), (B, DISCO)), 0.0)
    assert b.packets() == [(A, DISCO), (A, b"x"), (A, b"z")]  # disco queue first
    assert c.packets() == [(A, b"y")]
    assert (b.wakes, c.wakes) == (1, 1)  # one wake per destination per run
    s = r.stats()
    assert (s.packets_received, s.bytes_received, s.disco_packets_received) == (4, 3 + 62, 1)
    assert (s.packets_relayed, s.bytes_relayed) == (4, 3 + 62)


def test_run_into_a_full_queue_drops_the_oldest() -> None:
    r = relay(queue_depth=4)
    a, b = Conn(r, A), Conn(r, B)
    r.handle(a.conn, run(*((B, bytes([i])) for i in range(6))), 0.0)
    assert [p for _, p in b.packets()] == [bytes([i]) for i in range(2, 6)]
    assert r.stats().drops == {DropReason.QUEUE_HEAD.value: 2}


def test_run_offers_a_full_queue_to_a_writable_destination_before_dropping() -> None:
    r = relay(queue_depth=4)
    a, b = Conn(r, A), WritableConn(r, B)
    r.handle(a.conn, run(*((B, bytes([i])) for i in range(10))), 0.0)
    assert [derp.parse_recv_packet(p)[1] for _, p in b.written] == [bytes([i]) for i in range(10)]
    assert r.stats().drops == {}


def test_run_to_unknown_destination_counts_drops_and_answers_disco_with_not_here() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    r.handle(a.conn, run((C, b"not disco"), (B, b"ok"), (C, DISCO)), 5.0)
    assert b.packets() == [(A, b"ok")]
    assert [derp.parse_peer_gone(p) for t, p in a.frames() if t == 0x08] == [
        (C, PeerGoneReason.NOT_HERE)
    ]
    assert r.stats().drops == {DropReason.UNKNOWN_DEST.value: 2}
    assert r.stats().packets_received == 3


def test_run_to_a_duplicated_key_with_none_active_drops_as_dup_client() -> None:
    r = relay()
    a = Conn(r, A)
    b1, b2, b3 = Conn(r, B), Conn(r, B), Conn(r, B)
    r.unregister(b3.conn)  # the active one leaves, two remain: none active
    r.handle(a.conn, run((B, b"lost")), 0.0)
    assert b1.packets() == [] and b2.packets() == []
    assert r.stats().drops == {DropReason.DUP_CLIENT.value: 1}


def test_run_for_a_meshed_key_is_forwarded() -> None:
    r = relay()
    a = Conn(r, A)
    link = Link("peer")
    r.mesh_peer_present(link, B)
    r.handle(a.conn, run((B, b"over there")), 0.0)
    assert link.sent == [(A, B, b"over there")]


def test_run_senders_departure_tells_its_receivers_even_past_the_cache_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router, "MAX_SENT_TO_CACHE", 2)
    r = relay()
    a = Conn(r, A)
    dsts = [NodePublic(bytes([i]) * 32) for i in range(1, 6)]
    receivers = [Conn(r, k) for k in dsts]
    for _ in range(2):
        r.handle(a.conn, run(*((k, b"p") for k in dsts)), 0.0)
    for rc in receivers:
        rc.frames()
    assert len(a.conn.sent_to_cache) <= 2
    r.unregister(a.conn)
    for rc in receivers:
        assert [derp.parse_peer_gone(p) for t, p in rc.frames() if t == 0x08] == [
            (A, PeerGoneReason.DISCONNECTED)
        ]


def test_run_to_a_reconnected_receiver_updates_who_hears_peer_gone() -> None:
    r = relay()
    a, b = Conn(r, A), Conn(r, B)
    r.handle(a.conn, run((B, b"1")), 0.0)
    r.unregister(b.conn)
    b2 = Conn(r, B)
    r.handle(a.conn, run((B, b"2")), 0.0)
    assert b2.packets() == [(A, b"2")]
    r.unregister(a.conn)
    assert [derp.parse_peer_gone(p) for t, p in b2.frames() if t == 0x08] == [
        (A, PeerGoneReason.DISCONNECTED)
    ]
