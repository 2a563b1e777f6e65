"""DERP over real loopback TCP: a test HTTP front hands upgraded streams to serve_derp.

Only 127.0.0.1 is used. The front here is a stand-in for the lead's dispatcher:
it reads the request head, splits off any bytes after it and calls serve_derp.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nacl.public import PrivateKey as NaclPrivateKey

from outpost_server.keys import NodePublic, PrivateKey
from outpost_server.net.derp import DerpTimeouts, serve_derp, upgrade_response
from outpost_server.proto import derp
from outpost_server.relay import Relay
from tests.derp_client_double import (
    AsyncDerpClient,
    DerpClientCodec,
    KeepAlive,
    PeerGone,
    Pong,
    Received,
    ServerInfoMsg,
    ServerKey,
    disco_payload,
    frame,
)

MAX_HEAD_BYTES = 8192  # the test front's cap on a request head
FAST = DerpTimeouts(handshake=1.0, write=0.5, keepalive=60.0, keepalive_jitter=0.0)


class Front:
    """Minimal HTTP/1.1 front for /derp on 127.0.0.1."""

    def __init__(self, relay: Relay, timeouts: DerpTimeouts) -> None:
        self.relay = relay
        self.timeouts = timeouts
        self.tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.finished = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = await reader.read(4096)
                if not chunk or len(buf) > MAX_HEAD_BYTES:
                    writer.close()
                    return
                buf += chunk
            head, _, initial = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:])
            }
            assert lines[0].startswith("GET /derp ")
            assert headers.get("upgrade", "").lower() == "derp"
            await serve_derp(
                self.relay,
                reader,
                writer,
                initial=initial,
                fast_start=headers.get("derp-fast-start") == "1",
                timeouts=self.timeouts,
            )
        except asyncio.CancelledError:
            pass  # test teardown; asyncio 3.11 logs cancelled client_connected_cb tasks
        finally:
            self.finished += 1
            self.tasks.discard(task)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        if self.tasks:
            _, pending = await asyncio.wait(list(self.tasks), timeout=2.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def relay() -> Relay:
    return Relay(PrivateKey.generate(), admission=lambda k: True)


@contextlib.asynccontextmanager
async def running(relay: Relay, timeouts: DerpTimeouts = FAST) -> AsyncIterator[Front]:
    front = Front(relay, timeouts)
    await front.start()
    try:
        yield front
    finally:
        await front.stop()


@contextlib.asynccontextmanager
async def clients(port: int, n: int, **kw: Any) -> AsyncIterator[list[AsyncDerpClient]]:
    cs: list[AsyncDerpClient] = []
    try:
        for _ in range(n):
            c = await AsyncDerpClient.open(port, **kw)
            await c.login()
            cs.append(c)
        yield cs
    finally:
        for c in cs:
            await c.close()


async def eventually(pred: Callable[[], bool], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# --- the happy path ---------------------------------------------------------------------------


async def test_upgrade_head_is_exact_and_two_clients_exchange_packets(relay: Relay) -> None:
    async with running(relay) as front:
        a = await AsyncDerpClient.open(front.port)
        assert a.upgrade_head == upgrade_response(relay.public_key)
        assert a.upgrade_head.endswith(
            f"Derp-Public-Key: {relay.public_key.raw.hex()}\r\n\r\n".encode()
        )
        assert await a.login() == ServerInfoMsg({"version": 2})
        async with clients(front.port, 1) as (b,):
            a.send_packet(b.public, b"hello b")
            b.send_packet(a.public, b"hello a")
            assert await b.recv_kind(Received) == Received(a.public, b"hello b")
            assert await a.recv_kind(Received) == Received(b.public, b"hello a")
            big = os.urandom(derp.MAX_PACKET_BYTES)
            a.send_packet(b.public, big)
            assert await b.recv_kind(Received) == Received(a.public, big)
        await a.close()
        await eventually(lambda: relay.stats().connections_current == 0)
    s = relay.stats()
    assert (s.packets_relayed, s.connections_accepted) == (3, 2)


async def test_fast_start_sends_no_101_and_client_info_may_ride_with_the_head(
    relay: Relay,
) -> None:
    async with running(relay) as front, clients(front.port, 1) as (b,):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        a = AsyncDerpClient(reader, writer, DerpClientCodec())
        a.codec.server_key = relay.public_key.raw  # learned from the meta cert
        writer.write(
            b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
            b"Derp-Fast-Start: 1\r\n\r\n"
            + a.codec.client_info()
            + a.codec.send_packet(b.public, b"first packet")
        )
        first = await a.recv()
        assert first == ServerKey(relay.public_key.raw)  # still sent; clients skip it
        assert await a.recv() == ServerInfoMsg({"version": 2})
        assert await b.recv_kind(Received) == Received(a.public, b"first packet")
        await a.close()


async def test_ping_gets_pong_over_the_wire(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 1) as (a,):
        a.send_raw(a.codec.ping(b"abcdefgh"))
        assert await a.recv_kind(Pong) == Pong(b"abcdefgh")


async def test_keepalive_is_sent_on_the_interval(relay: Relay) -> None:
    quick = DerpTimeouts(handshake=1.0, write=0.5, keepalive=0.2, keepalive_jitter=0.05)
    async with running(relay, quick) as front, clients(front.port, 1) as (a,):
        assert await a.recv(seconds=2.0) == KeepAlive()
        assert await a.recv(seconds=2.0) == KeepAlive()
    assert relay.stats().keepalives_sent >= 2


# --- duplicates, departures, admission ---------------------------------------------------------


async def test_duplicate_connection_newest_is_active_and_older_takes_over_by_writing(
    relay: Relay,
) -> None:
    shared = NaclPrivateKey.generate()
    async with running(relay) as front, clients(front.port, 1) as (a,):
        b1 = await AsyncDerpClient.open(front.port, shared)
        await b1.login()
        b2 = await AsyncDerpClient.open(front.port, shared)
        await b2.login()
        a.send_packet(b1.public, b"to newest")
        assert await b2.recv_kind(Received) == Received(a.public, b"to newest")
        b1.send_raw(b1.codec.note_preferred(True))
        await eventually(lambda: relay.stats().home_connections == 1)
        a.send_packet(b1.public, b"to last writer")
        assert await b1.recv_kind(Received) == Received(a.public, b"to last writer")
        assert relay.stats().connections_current == 3  # nobody was kicked
        await b1.close()
        await b2.close()


async def test_peer_gone_when_senders_last_connection_closes(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 1) as (b,):
        a = await AsyncDerpClient.open(front.port)
        await a.login()
        a.send_packet(b.public, b"x")
        await b.recv_kind(Received)
        await a.close()
        assert await b.recv_kind(PeerGone) == PeerGone(a.public, 0)


async def test_disco_to_unknown_key_gets_peer_gone_not_here(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 1) as (a,):
        stranger = os.urandom(32)
        a.send_packet(stranger, disco_payload())
        assert await a.recv_kind(PeerGone) == PeerGone(stranger, 1)


async def test_admission_refusal_closes_without_server_info_and_others_still_served(
    relay: Relay,
) -> None:
    allowed: set[bytes] = set()
    relay.set_admission(lambda k: k.raw in allowed)
    good = NaclPrivateKey.generate()
    allowed.add(bytes(good.public_key))
    async with running(relay) as front:
        bad = await AsyncDerpClient.open(front.port)
        assert await bad.recv() == ServerKey(relay.public_key.raw)
        bad.send_raw(bad.codec.client_info())
        await bad.expect_closed()
        await bad.close()
        ok = await AsyncDerpClient.open(front.port, good)
        assert await ok.login() == ServerInfoMsg({"version": 2})
        ok.send_raw(ok.codec.ping(b"stillok!"))
        assert await ok.recv_kind(Pong) == Pong(b"stillok!")
        await ok.close()
    assert relay.stats().connections_refused == 1


async def test_disconnect_key_drops_a_live_client(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 2) as (a, b):
        a.send_packet(b.public, b"x")
        await b.recv_kind(Received)
        assert relay.disconnect_key(NodePublic(a.public)) == 1
        await a.expect_closed()
        assert await b.recv_kind(PeerGone) == PeerGone(a.public, 0)


# --- misbehaving clients ----------------------------------------------------------------------


async def served_afterwards(front: Front) -> None:
    async with clients(front.port, 2) as (x, y):
        x.send_packet(y.public, b"after")
        assert await y.recv_kind(Received) == Received(x.public, b"after")


async def test_frame_before_client_info_closes_and_is_counted(relay: Relay) -> None:
    async with running(relay) as front:
        c = await AsyncDerpClient.open(front.port)
        await c.recv()
        c.send_raw(c.codec.send_packet(os.urandom(32), b"too early"))
        await c.expect_closed()
        await c.close()
        await served_afterwards(front)
    assert relay.stats().handshake_failures == 1


async def test_garbage_client_info_box_closes_and_is_counted(relay: Relay) -> None:
    async with running(relay) as front:
        c = await AsyncDerpClient.open(front.port)
        await c.recv()
        c.send_raw(frame(0x02, c.public + os.urandom(80)))
        await c.expect_closed()
        await c.close()
        await served_afterwards(front)
    assert relay.stats().handshake_failures == 1


async def test_oversized_client_info_closes_before_its_body_arrives(relay: Relay) -> None:
    async with running(relay) as front:
        c = await AsyncDerpClient.open(front.port)
        await c.recv()
        c.send_raw(struct.pack(">BI", 0x02, derp.MAX_CLIENT_INFO_BYTES + 1))
        await c.expect_closed()
        await c.close()
        await served_afterwards(front)
    assert relay.stats().handshake_failures == 1


async def test_silent_client_times_out_in_handshake(relay: Relay) -> None:
    async with running(relay) as front:
        c = await AsyncDerpClient.open(front.port)
        await c.recv()
        c.send_raw(struct.pack(">BI", 0x02, 100) + bytes(10))  # truncated ClientInfo
        await c.expect_closed(seconds=5.0)
        await c.close()
        await served_afterwards(front)
    assert relay.stats().handshake_failures == 1


async def test_oversized_packet_closes_sender_and_is_counted(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 1) as (_b,):
        a = await AsyncDerpClient.open(front.port)
        await a.login()
        a.send_raw(struct.pack(">BI", 0x04, 32 + derp.MAX_PACKET_BYTES + 1))
        await a.expect_closed()
        await a.close()
        await served_afterwards(front)
        await eventually(lambda: relay.stats().connections_current == 1)
    assert relay.stats().bad_frames == 1


async def test_truncated_frame_then_hangup_unregisters_cleanly(relay: Relay) -> None:
    async with running(relay) as front:
        a = await AsyncDerpClient.open(front.port)
        await a.login()
        a.send_raw(struct.pack(">BI", 0x04, 1000) + bytes(100))
        await asyncio.sleep(0.05)
        await a.close()
        await eventually(lambda: relay.stats().connections_current == 0)
        await served_afterwards(front)
    s = relay.stats()
    assert (s.bad_frames, s.packets_received) == (0, 1)


async def test_mesh_frame_from_regular_client_closes_it(relay: Relay) -> None:
    async with running(relay) as front:
        a = await AsyncDerpClient.open(front.port)
        await a.login()
        a.send_raw(frame(0x10))  # WatchConns without mesh key
        await a.expect_closed()
        await a.close()
        await served_afterwards(front)
    assert relay.stats().bad_frames == 1


async def test_client_that_stops_reading_is_dropped_without_stalling_others(
    relay: Relay,
) -> None:
    async with running(relay) as front, clients(front.port, 1) as (a,):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", front.port))
        r, w = await asyncio.open_connection(sock=sock)
        slow = AsyncDerpClient(r, w, DerpClientCodec())
        w.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        await r.readuntil(b"\r\n\r\n")
        await slow.login()
        # slow never reads again; a floods it.
        blob = bytes(derp.MAX_PACKET_BYTES)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while relay.stats().slow_clients_dropped == 0:
            assert loop.time() < deadline, "slow client was never dropped"
            for _ in range(8):
                a.send_packet(slow.public, blob)
            await a.writer.drain()
            await asyncio.sleep(0.01)
        t0 = loop.time()
        a.send_raw(a.codec.ping(b"promptly"))
        assert await a.recv_kind(Pong, seconds=2.0) == Pong(b"promptly")
        assert loop.time() - t0 < 1.0
        await eventually(lambda: relay.stats().connections_current == 1)
        await slow.close()


# --- the per-read fast path over real sockets ----------------------------------------------------


async def recv_packets(c: AsyncDerpClient, n: int) -> list[bytes]:
    return [(await c.recv_kind(Received)).payload for _ in range(n)]


async def test_many_packets_in_one_write_all_reach_a_reading_destination(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 2) as (a, b):
        payloads = [i.to_bytes(2, "big") * 500 for i in range(300)]  # ~300 KiB in one write
        a.send_raw(b"".join(a.codec.send_packet(b.public, p) for p in payloads))
        assert await recv_packets(b, 300) == payloads
    s = relay.stats()
    assert (s.packets_received, s.packets_relayed, s.drops) == (300, 300, {})


async def test_packets_riding_with_client_info_past_the_first_reads_are_all_routed(
    relay: Relay,
) -> None:
    async with running(relay) as front, clients(front.port, 1) as (b,):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        a = AsyncDerpClient(reader, writer, DerpClientCodec())
        a.codec.server_key = relay.public_key.raw
        payloads = [bytes([i]) * 1200 for i in range(40)]  # ~50 KiB behind the ClientInfo
        writer.write(
            b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
            b"Derp-Fast-Start: 1\r\n\r\n"
            + a.codec.client_info()
            + b"".join(a.codec.send_packet(b.public, p) for p in payloads)
        )
        assert await recv_packets(b, 40) == payloads
        await a.close()


async def test_peer_that_sends_then_half_closes_is_routed_and_unregistered(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 1) as (b,):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        a = AsyncDerpClient(reader, writer, DerpClientCodec())
        a.codec.server_key = relay.public_key.raw
        writer.write(
            b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
            b"Derp-Fast-Start: 1\r\n\r\n"
            + a.codec.client_info()
            + a.codec.send_packet(b.public, b"last words")
        )
        writer.write_eof()
        assert await b.recv_kind(Received) == Received(a.public, b"last words")
        await eventually(lambda: relay.stats().connections_current == 1)
        await a.close()


async def test_bad_frame_after_good_ones_closes_only_the_sender(relay: Relay) -> None:
    async with running(relay) as front, clients(front.port, 2) as (a, b):
        a.send_raw(
            a.codec.send_packet(b.public, b"good 1")
            + a.codec.send_packet(b.public, b"good 2")
            + struct.pack(">BI", 0x04, 32 + derp.MAX_PACKET_BYTES + 1)
            + bytes(64)
        )
        assert await recv_packets(b, 2) == [b"good 1", b"good 2"]
        await a.expect_closed()
        await served_afterwards(front)
        await eventually(lambda: relay.stats().connections_current == 1)
    assert relay.stats().bad_frames == 1
