"""asyncio UDP adapter for the STUN responder (proto/stun.py does the work).

derper's README: "Don't rate-limit UDP STUN packets" -- every valid Tailscale
binding request gets an answer, sent back to the datagram's source only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from ..proto.stun import StunCounters, StunResponder

log = logging.getLogger(__name__)


class StunProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: StunResponder) -> None:
        self._responder = responder
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is None or len(addr) < 2:
            return
        host, port = addr[0], addr[1]
        if not isinstance(host, str) or not isinstance(port, int):
            return
        reply = self._responder.handle(data, host, port)
        if reply is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (port unreachable and such): nothing to do.
        log.debug("STUN socket error: %s", exc)


async def start_stun(host: str, port: int, stats: StunCounters) -> asyncio.DatagramTransport:
    """Listen for STUN on host:port (port 0 picks one); close the transport to stop."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: StunProtocol(StunResponder(stats)), local_addr=(host, port)
    )
    return transport
