"""The client side of a DERP connection, sans-IO: what one Outpost relay uses to mesh with another.

Theory of operation (TS:derp/derp_client.go, derphttp/mesh_client.go):

1. After the HTTP upgrade the server sends ServerKey (magic + its public key).
2. We answer with ClientInfo: our public key, then a box sealed from our
   private key to the server's key holding the JSON (with the mesh key for a
   mesh link).
3. The server answers ServerInfo (sealed to us); only then are we connected.
   A mesh client sends WatchConns at once and from then on receives
   PeerPresent / PeerGone for the server's clients.

`feed(bytes)` returns events; `take_output()` returns bytes to write. Frames
are bounded as an official client bounds them (1 MiB). The nonce is a
parameter, so tests are deterministic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProtocolError
from ..keys import NodePublic, PrivateKey
from .derp import (
    NONCE_BYTES,
    ClientInfo,
    Frame,
    FrameDecoder,
    FrameType,
    PeerGoneReason,
    PeerPresentFlags,
    ServerInfo,
    client_read_limit,
    encode_client_info,
    encode_watch_conns,
    open_server_info,
    parse_peer_gone,
    parse_peer_present,
    parse_recv_packet,
    parse_restarting,
    parse_server_key,
)


@dataclass(frozen=True, slots=True)
class Connected:
    server: NodePublic
    info: ServerInfo


@dataclass(frozen=True, slots=True)
class PeerPresent:
    key: NodePublic
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    flags: PeerPresentFlags


@dataclass(frozen=True, slots=True)
class PeerGone:
    key: NodePublic
    reason: PeerGoneReason


@dataclass(frozen=True, slots=True)
class Received:
    src: NodePublic
    payload: bytes


@dataclass(frozen=True, slots=True)
class Restarting:
    reconnect_in_ms: int
    try_for_ms: int


@dataclass(frozen=True, slots=True)
class Health:
    problem: str


ClientEvent = Connected | PeerPresent | PeerGone | Received | Restarting | Health


class ClientSession:
    def __init__(
        self,
        private: PrivateKey,
        info: ClientInfo,
        nonce: Callable[[], bytes],
        *,
        watch: bool = False,
    ) -> None:
        self._private = private
        self._info = info
        self._nonce = nonce
        self._watch = watch
        self._decoder = FrameDecoder(client_read_limit)
        self._out = bytearray()
        self.server: NodePublic | None = None
        self.connected = False

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def feed(self, data: bytes) -> list[ClientEvent]:
        self._decoder.feed(data)
        events: list[ClientEvent] = []
        while (f := self._decoder.next_frame()) is not None:
            if isinstance(f, Frame):
                ev = self._frame(f)
                if ev is not None:
                    events.append(ev)
        return events

    def _frame(self, f: Frame) -> ClientEvent | None:  # noqa: PLR0911 - one return per frame type
        if self.server is None:
            if f.type != FrameType.SERVER_KEY:
                raise ProtocolError(f"expected ServerKey first, got frame type {f.type}")
            self.server = parse_server_key(f.payload)
            nonce = self._nonce()
            if len(nonce) != NONCE_BYTES:
                raise ProtocolError("nonce source returned the wrong length")
            self._out += encode_client_info(self._private, self.server, self._info, nonce)
            return None
        if not self.connected:
            if f.type != FrameType.SERVER_INFO:
                raise ProtocolError(f"expected ServerInfo, got frame type {f.type}")
            info = open_server_info(self._private, self.server, f.payload)
            self.connected = True
            if self._watch:
                self._out += encode_watch_conns()
            return Connected(self.server, info)
        if f.type == FrameType.PEER_PRESENT:
            key, ip, port, flags = parse_peer_present(f.payload)
            return PeerPresent(key, ip, port, flags)
        if f.type == FrameType.PEER_GONE:
            key, reason = parse_peer_gone(f.payload)
            return PeerGone(key, reason)
        if f.type == FrameType.RECV_PACKET:
            src, payload = parse_recv_packet(f.payload)
            return Received(src, payload)
        if f.type == FrameType.RESTARTING:
            return Restarting(*parse_restarting(f.payload))
        if f.type == FrameType.HEALTH:
            return Health(f.payload.decode("utf-8", "replace"))
        return None  # KeepAlive, Pong and frames a newer server may add
