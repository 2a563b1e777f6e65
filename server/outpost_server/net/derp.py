"""asyncio adapter for one DERP connection after the HTTP upgrade.

The HTTP dispatcher parses `GET /derp` with `Upgrade: DERP` itself and hands
the stream over with whatever bytes it already read past the request head
(`initial`: with Derp-Fast-Start the ClientInfo frame is usually in there).

Once the handshake is done the connection leaves the stream API: its
transport is handed to a `_DerpProtocol`, whose callbacks do all the work
without a task switch per read or per write:
* `data_received` feeds the bytes to the `ServerConnection` state machine
  (`receive_batch`: a read's SendPackets as one run) and passes the events to
  the `Relay`, which only ever enqueues onto bounded queues and wakes the
  destinations, so one client can never block another;
* a connection's `flush` hook *is* its writer: if its socket is not backed up
  it takes the queued frames and writes them at once, one `write` per call.
  The relay flushes each destination once per read it routed; other work
  (pongs, PeerGone, control frames) calls `wake`, which schedules one flush
  for the next turn of the loop however many wakes came first.
  A destination whose transport buffer passes `WRITE_BUFFER_HIGH_BYTES` is
  paused (its packets wait in the 32-deep queues, oldest dropped first, as in
  derper); if it stays paused for the write timeout it is dropped (derper: 2 s
  write deadline), and when it drains the queues are written.

Timings follow derper (TS:derp/derpserver/derpserver.go): 10 s to complete the
handshake, keep-alive every 60 s plus 0-5 s jitter per connection (clients time
out a Recv after 120 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Final

from ..errors import LocalProtocolError, ProtocolError
from ..keys import NodePublic
from ..proto.derp import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    ClientHello,
    DerpEvent,
    SendPackets,
    ServerConnection,
    encode_keep_alive,
)
from ..relay import Relay
from ..relay.client import ClientConn

log = logging.getLogger(__name__)

# Bytes per read() during the handshake. After it the transport reads as much
# as it has (asyncio: up to 256 KiB) and the relay writes a destination whenever
# its queue fills, so a large read does not overflow a writable destination.
READ_CHUNK_BYTES: Final = 16 * 1024
# Bytes a destination's transport may hold unsent before we stop writing to it
# and let its packets wait in the (bounded) queues. asyncio's own default.
WRITE_BUFFER_HIGH_BYTES: Final = 64 * 1024


MESH_WRITE_TIMEOUT_S: Final = 30.0  # derper: mesh peers get 30 s per write, not 2 s


@dataclass(frozen=True, slots=True)
class DerpTimeouts:
    handshake: float = 10.0  # seconds to send ServerKey and receive ClientInfo (derper accept)
    write: float = 2.0  # seconds for one batch to drain (derper DefaultTCPWiteTimeout)
    keepalive: float = 60.0  # seconds between KeepAlive frames (derp.KeepAlive)
    keepalive_jitter: float = 5.0  # extra 0..jitter seconds per connection (derper sendLoop)


DEFAULT_TIMEOUTS: Final = DerpTimeouts()


def upgrade_response(server: NodePublic) -> bytes:
    """The exact 101 head derper writes (TS:derp/derpserver/handler.go)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: DERP\r\n"
        "Connection: Upgrade\r\n"
        f"Derp-Version: {PROTOCOL_VERSION}\r\n"
        f"Derp-Public-Key: {server.raw.hex()}\r\n"
        "\r\n"
    ).encode("ascii")


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else ""


async def serve_derp(
    relay: Relay,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    initial: bytes,
    fast_start: bool,
    timeouts: DerpTimeouts = DEFAULT_TIMEOUTS,
) -> None:
    """Serve one upgraded DERP connection until either side ends it. Never raises
    for peer misbehaviour or network errors; closes `writer` on return."""
    remote = _peer_name(writer)
    session = relay.new_session()
    conn: ClientConn | None = None
    proto: _DerpProtocol | None = None
    try:
        try:
            async with asyncio.timeout(timeouts.handshake):
                head = b"" if fast_start else upgrade_response(relay.public_key)
                writer.write(head + session.server_key_frame())
                await writer.drain()
                hello, rest = await _read_hello(session, reader, initial)
        except (TimeoutError, ProtocolError, OSError) as exc:
            relay.note_handshake_failure()
            log.info("DERP handshake with %s failed: %s", remote, type(exc).__name__)
            return
        if hello is None:
            relay.note_handshake_failure()
            return
        if not relay.admit(hello):
            session.refuse()
            return

        transport = writer.transport
        loop = asyncio.get_running_loop()
        jitter = random.uniform(0.0, timeouts.keepalive_jitter)  # noqa: S311 (not secret)
        proto = _DerpProtocol(
            relay,
            session,
            transport,
            write_timeout=(
                max(timeouts.write, MESH_WRITE_TIMEOUT_S) if hello.is_mesh_peer else timeouts.write
            ),
            keepalive_every=timeouts.keepalive + jitter,
        )
        conn = relay.register(
            hello, wake=proto.wake, flush=proto.flush, close=transport.abort, remote=remote
        )
        log.debug("DERP client %s connected from %s", hello.key.short(), remote)
        writer.write(session.accept(os.urandom(NONCE_BYTES), relay.server_info))
        now = loop.time()
        for event in rest:
            relay.handle(conn, event, now)
        # From here on the transport calls `proto` directly. Bytes the stream
        # reader already holds come first; feed_eof makes read() return them
        # without waiting (it cannot suspend, so nothing new arrives meanwhile).
        peer_eof = _reader_saw_eof(reader)
        previous = transport.get_protocol()
        transport.set_protocol(proto)
        reader.feed_eof()
        buffered = await reader.read()
        proto.start(conn, previous)
        if buffered:
            proto.data_received(buffered)
        if peer_eof:
            proto.eof_received()
        await proto.done
    finally:
        dropped_by_us = conn is not None and conn.closed  # slow reader or disconnect_key
        if conn is not None:
            relay.unregister(conn)
        if proto is not None:
            proto.stop()
        if dropped_by_us:
            writer.transport.abort()  # discard whatever is still buffered
        else:
            writer.close()


def _reader_saw_eof(reader: asyncio.StreamReader) -> bool:
    """Whether the peer's EOF already reached the stream reader.

    StreamReader has no public "EOF received" (at_eof() is also false while
    bytes are buffered), and after the hand-over the transport will not report
    it again, so this one private attribute is read here and nowhere else.
    """
    return bool(getattr(reader, "_eof", False))


async def _read_hello(
    session: ServerConnection, reader: asyncio.StreamReader, initial: bytes
) -> tuple[ClientHello | None, list[DerpEvent]]:
    events = session.receive_data(initial) if initial else []
    while not events:
        data = await reader.read(READ_CHUNK_BYTES)
        if not data:
            return None, []
        events = session.receive_data(data)
    first = events[0]
    if not isinstance(first, ClientHello):  # the state machine only yields ClientHello first
        raise LocalProtocolError("first DERP event was not ClientHello")
    return first, events[1:]


class _DerpProtocol(asyncio.Protocol):
    """One established DERP connection as transport callbacks (see the module doc)."""

    def __init__(
        self,
        relay: Relay,
        session: ServerConnection,
        transport: asyncio.BaseTransport,
        *,
        write_timeout: float,
        keepalive_every: float,
    ) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._relay = relay
        self._session = session
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._write_timeout = write_timeout
        self._keepalive_every = keepalive_every
        self._conn: ClientConn | None = None
        self._previous: asyncio.BaseProtocol | None = None
        self._paused = False  # the transport's buffer is above its high-water mark
        self._ended = False  # reading is over (EOF, bad frame, connection lost)
        self._keepalive_due = False
        self._flush_scheduled = False
        self._slow_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[None] = self._loop.create_future()

    def start(self, conn: ClientConn, previous: asyncio.BaseProtocol) -> None:
        """Take over: `conn` is registered and the transport now calls us."""
        self._conn = conn
        self._previous = previous
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        self._keepalive_timer = self._loop.call_later(self._keepalive_every, self._keepalive)
        self.flush()  # anything queued for it during the hand-over

    def stop(self) -> None:
        """Cancel timers; the connection is being torn down."""
        self._ended = True
        for timer in (self._slow_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._slow_timer = self._keepalive_timer = None

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            with contextlib.suppress(RuntimeError, AttributeError):
                self._transport.pause_reading()
        if not self.done.done():
            self.done.set_result(None)

    # --- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self._ended or conn.closed:
            return
        events: list[DerpEvent | SendPackets] = []
        error: ProtocolError | None = None
        try:
            self._session.receive_batch(data, events)
        except ProtocolError as exc:
            error = exc  # the frames before the bad one are still delivered
        now = self._loop.time()
        handle = self._relay.handle
        for event in events:
            handle(conn, event, now)
        if error is not None:
            self._relay.note_bad_frame()
            log.info("DERP client %s: %s", conn.key.short(), error)
            self._end()

    def eof_received(self) -> bool:
        self._end()
        return False  # close; serve_derp unregisters

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self.stop()
        previous, self._previous = self._previous, None
        if previous is not None:  # let the stream objects see the close too
            previous.connection_lost(exc)

    # --- writing ---------------------------------------------------------------------------

    def wake(self) -> None:
        """The connection's wake hook: one flush soon for any number of wakes."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """The connection's flush hook: write what is queued now, unless backed up."""
        conn = self._conn
        if conn is None or conn.closed or self._transport.is_closing():
            return
        take = self._relay.take_frames
        while not self._paused:
            frames = take(conn)
            if self._keepalive_due:
                self._keepalive_due = False
                frames.append(encode_keep_alive())
                self._relay.note_keepalive()
            if not frames:
                return
            self._transport.write(b"".join(frames))  # may call pause_writing at once
            if not conn.has_pending():
                return

    def pause_writing(self) -> None:
        self._paused = True
        if self._slow_timer is None and not self._ended:
            self._slow_timer = self._loop.call_later(self._write_timeout, self._too_slow)

    def resume_writing(self) -> None:
        self._paused = False
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self.flush()

    def _too_slow(self) -> None:
        self._slow_timer = None
        conn = self._conn
        if conn is None or conn.closed:
            return
        self._relay.note_slow_client()
        log.info("DERP client %s too slow to read; dropping", conn.key.short())
        conn.close()
        self._end()

    def _keepalive(self) -> None:
        self._keepalive_timer = self._loop.call_later(self._keepalive_every, self._keepalive)
        self._keepalive_due = True
        self.flush()
