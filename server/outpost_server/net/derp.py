"""asyncio adapter for one DERP connection after the HTTP upgrade.

The HTTP dispatcher parses `GET /derp` with `Upgrade: DERP` itself and hands
the stream over with whatever bytes it already read past the request head
(`initial`: with Derp-Fast-Start the ClientInfo frame is usually in there).

Per connection there are two tasks' worth of work:
* the reader (this coroutine) feeds bytes to the `ServerConnection` state
  machine and passes every event to the `Relay`, which only ever enqueues onto
  bounded queues, so one client can never block another;
* a writer task that sleeps until its connection has queued work (or the
  keep-alive is due), writes a batch and waits at most `write` seconds for it to
  drain. A reader that cannot keep up is dropped (derper: 2 s write deadline).

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
    ServerConnection,
    encode_keep_alive,
)
from ..relay import Relay
from ..relay.client import ClientConn

log = logging.getLogger(__name__)

# Bytes per read() from the stream. Small enough that one chunk (~13 full-size
# WireGuard packets) fits a destination's 32-deep queue: after routing a chunk
# the reader yields, so destination writers drain before more arrives.
# (The benchmark found 64 KiB chunks overflowing queues: ~85 % head drops.)
READ_CHUNK_BYTES: Final = 16 * 1024


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
    writer_task: asyncio.Task[None] | None = None
    wake = asyncio.Event()
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

        def close() -> None:
            wake.set()
            transport.abort()

        conn = relay.register(hello, wake=wake.set, close=close, remote=remote)
        log.debug("DERP client %s connected from %s", hello.key.short(), remote)
        writer.write(session.accept(os.urandom(NONCE_BYTES), relay.server_info))
        loop = asyncio.get_running_loop()
        for event in rest:
            relay.handle(conn, event, loop.time())
        jitter = random.uniform(0.0, timeouts.keepalive_jitter)  # noqa: S311 (not secret)
        writer_task = asyncio.create_task(
            _write_loop(
                relay,
                conn,
                writer,
                wake,
                write_timeout=max(timeouts.write, MESH_WRITE_TIMEOUT_S) if conn.is_mesh_peer else timeouts.write,
                keepalive_every=timeouts.keepalive + jitter,
            ),
            name=f"derp-writer-{conn.conn_id}",
        )
        while not conn.closed:
            try:
                data = await reader.read(READ_CHUNK_BYTES)
            except OSError:
                break
            if not data:
                break
            try:
                events = session.receive_data(data)
            except ProtocolError as exc:
                relay.note_bad_frame()
                log.info("DERP client %s: %s", hello.key.short(), exc)
                break
            now = loop.time()
            for event in events:
                relay.handle(conn, event, now)
            await asyncio.sleep(0)  # let the writers of the destinations run
    finally:
        dropped_by_us = conn is not None and conn.closed  # slow reader or disconnect_key
        if conn is not None:
            relay.unregister(conn)
        if writer_task is not None:
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer_task
        if dropped_by_us:
            writer.transport.abort()  # discard whatever is still buffered
        else:
            writer.close()


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


async def _write_loop(
    relay: Relay,
    conn: ClientConn,
    writer: asyncio.StreamWriter,
    wake: asyncio.Event,
    *,
    write_timeout: float,
    keepalive_every: float,
) -> None:
    try:
        await _write_batches(
            relay, conn, writer, wake, write_timeout=write_timeout, keepalive_every=keepalive_every
        )
    except Exception:
        log.exception("DERP writer for %s failed", conn.key.short())
        conn.close()


async def _write_batches(
    relay: Relay,
    conn: ClientConn,
    writer: asyncio.StreamWriter,
    wake: asyncio.Event,
    *,
    write_timeout: float,
    keepalive_every: float,
) -> None:
    loop = asyncio.get_running_loop()
    next_keepalive = loop.time() + keepalive_every
    while not conn.closed:
        if not conn.has_pending():
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_keepalive):
                    await wake.wait()
        if conn.closed:
            return
        frames = relay.take_frames(conn)
        if loop.time() >= next_keepalive:
            frames.append(encode_keep_alive())
            relay.note_keepalive()
            next_keepalive = loop.time() + keepalive_every
        if not frames:
            continue
        try:
            writer.write(b"".join(frames))
            async with asyncio.timeout(write_timeout):
                await writer.drain()
        except TimeoutError:
            relay.note_slow_client()
            log.info("DERP client %s too slow to read; dropping", conn.key.short())
            conn.close()
            return
        except OSError:
            conn.close()
            return
