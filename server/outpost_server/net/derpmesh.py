"""Outbound mesh links: this relay as a DERP client of another Outpost relay.

Each `MeshLink` dials `https://HOST:PORT/derp` (TLS verified against the
Outpost root and any extra CA files the site configured), logs in with the
relay's own DERP key plus the shared mesh key, sends WatchConns, and reports
what the other server says to the local `Relay`: PeerPresent / PeerGone keep
its mesh routes, and a dropped link forgets everything it taught (relearned on
reconnect, as derper's `RunWatchConnectionLoop` does). Packets for keys on the
other server are queued here by `forward()` and written as ForwardPacket.

If the other end turns out to be this very server (its ServerKey is ours), the
link stops: a site may list every relay, itself included, on every relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from ..errors import InvalidInput, ProtocolError
from ..keys import NodePublic, PrivateKey
from ..proto.derp import NONCE_BYTES, PROTOCOL_VERSION, ClientInfo, encode_forward_packet
from ..proto.derpclient import ClientSession, Connected, PeerGone, PeerPresent, Restarting
from ..relay import Relay

log = logging.getLogger(__name__)

MESH_QUEUE_PACKETS: Final = 4096  # ForwardPackets waiting for the link; more are dropped (counted)
CONNECT_TIMEOUT_S: Final = 10.0  # TCP + TLS + upgrade + ServerInfo
WRITE_TIMEOUT_S: Final = 5.0  # derper: 5 s for a forwarded packet write
RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 30.0  # backoff ceiling while the other relay is down
READ_CHUNK_BYTES: Final = 64 * 1024


def parse_mesh_url(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        raise InvalidInput(f"mesh peer must be https://HOST[:PORT], got {url!r}")
    return u.hostname, u.port or 443


def mesh_ssl_context(ca_files: Callable[[], list[str]]) -> ssl.SSLContext:
    """Normal verification against the given roots only; no system store, nothing insecure."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + hostname checks
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for f in ca_files():
        ctx.load_verify_locations(cafile=f)
    return ctx


class MeshLink:
    def __init__(
        self,
        relay: Relay,
        private_key: PrivateKey,
        mesh_key: bytes,
        url: str,
        ca_files: Callable[[], list[str]],
    ) -> None:
        self.relay = relay
        self.name = url
        self.host, self.port = parse_mesh_url(url)
        self._private = private_key
        self._mesh_key = mesh_key
        self._ca_files = ca_files
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.connected = False
        self.stopped = False
        self.connects = 0
        self.last_error = ""

    # --- what the relay core calls ----------------------------------------------------------
    def forward(self, src: NodePublic, dst: NodePublic, payload: bytes) -> bool:
        if not self.connected or len(self._queue) >= MESH_QUEUE_PACKETS:
            return False
        self._queue.append(encode_forward_packet(src, dst, payload))
        self._wake.set()
        return True

    def __repr__(self) -> str:
        return f"MeshLink({self.name}, connected={self.connected})"

    # --- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        delay = RETRY_MIN_S
        while not self.stopped:
            try:
                await self._session()
                delay = RETRY_MIN_S
            except asyncio.CancelledError:
                raise
            except (OSError, ProtocolError, ssl.SSLError, TimeoutError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("mesh link to %s: %s; retrying in %.1fs", self.name, self.last_error, delay)
            finally:
                self._down()
            if self.stopped:
                return
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_S, delay * 2)

    def _down(self) -> None:
        if self.connected:
            forgot = self.relay.mesh_link_down(self)
            log.info("mesh link to %s down; forgot %d keys", self.name, forgot)
        self.connected = False
        self._queue.clear()

    async def _session(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            ctx = mesh_ssl_context(self._ca_files)
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=ctx, server_hostname=self.host
            )
        try:
            session = ClientSession(
                self._private,
                ClientInfo(version=PROTOCOL_VERSION, can_ack_pings=True, mesh_key=self._mesh_key),
                lambda: os.urandom(NONCE_BYTES),
                watch=True,
            )
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                writer.write(
                    f"GET /derp HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: DERP\r\n"
                    "Connection: Upgrade\r\nDerp-Fast-Start: 1\r\n\r\n".encode()
                )
                while not session.connected:
                    data = await reader.read(READ_CHUNK_BYTES)
                    if not data:
                        raise ProtocolError("mesh peer closed the connection during login (wrong mesh key?)")
                    for ev in session.feed(data):
                        self._event(ev)
                    if session.server == self.relay.public_key:
                        log.info("mesh link %s leads to this server itself; not meshing with myself", self.name)
                        self.stopped = True
                        return
                    writer.write(session.take_output())
                    await writer.drain()
            self.connects += 1
            writer.write(session.take_output())  # WatchConns
            writer_task = asyncio.create_task(self._write_loop(writer), name=f"mesh-writer-{self.host}")
            try:
                while True:
                    data = await reader.read(READ_CHUNK_BYTES)
                    if not data:
                        raise ProtocolError("mesh peer closed the connection")
                    for ev in session.feed(data):
                        self._event(ev)
                    if writer_task.done():
                        writer_task.result()
            finally:
                writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer_task
        finally:
            writer.close()

    def _event(self, ev: object) -> None:
        if isinstance(ev, Connected):
            self.connected = True
            self.last_error = ""
            log.info("mesh link to %s up (server %s)", self.name, ev.server.short())
        elif isinstance(ev, PeerPresent):
            self.relay.mesh_peer_present(self, ev.key)
        elif isinstance(ev, PeerGone):
            self.relay.mesh_peer_gone(self, ev.key)
        elif isinstance(ev, Restarting):
            log.info("mesh peer %s is restarting (reconnect in %d ms)", self.name, ev.reconnect_in_ms)

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = []
            while self._queue and len(batch) < 256:
                batch.append(self._queue.popleft())
            writer.write(b"".join(batch))
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()

    def stop(self) -> None:
        self.stopped = True
