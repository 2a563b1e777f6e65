"""A DERP *client* for tests, written independently of outpost_server.proto.derp.

It packs and parses frames with its own `struct` code and seals ClientInfo with
PyNaCl directly, the way TS:derp/derp_client.go does (key.SealTo = random nonce ||
box), so a bug in the server's codec is not mirrored here. Two layers:

* `DerpClientCodec`: sans-IO; bytes in -> `(type, payload)` frames and parsed
  server messages; helpers that build client frames.
* `AsyncDerpClient`: the codec on a loopback TCP stream, with the HTTP upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from nacl.public import Box, PrivateKey, PublicKey

MAGIC = b"DERP\xf0\x9f\x94\x91"
T_SERVER_KEY = 0x01
T_CLIENT_INFO = 0x02
T_SERVER_INFO = 0x03
T_SEND_PACKET = 0x04
T_RECV_PACKET = 0x05
T_KEEP_ALIVE = 0x06
T_NOTE_PREFERRED = 0x07
T_PEER_GONE = 0x08
T_PEER_PRESENT = 0x09
T_FORWARD_PACKET = 0x0A
T_WATCH_CONNS = 0x10
T_CLOSE_PEER = 0x11
T_PING = 0x12
T_PONG = 0x13
T_HEALTH = 0x14
T_RESTARTING = 0x15
CLIENT_MAX_FRAME = 1 << 20  # derp_client.go rejects frames above 1 MiB

DISCO_MAGIC = "TS💬".encode()


def frame(frame_type: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BI", frame_type, len(payload)) + payload


def disco_payload(body: bytes = b"x") -> bytes:
    """Something LooksLikeDiscoWrapper accepts: magic + 32B key + 24B nonce + box."""
    return DISCO_MAGIC + bytes(32) + bytes(24) + body


@dataclass(frozen=True)
class ServerKey:
    key: bytes


@dataclass(frozen=True)
class ServerInfoMsg:
    doc: dict[str, Any]


@dataclass(frozen=True)
class Received:
    src: bytes
    payload: bytes


@dataclass(frozen=True)
class PeerGone:
    peer: bytes
    reason: int


@dataclass(frozen=True)
class Pong:
    data: bytes


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class Other:
    frame_type: int
    payload: bytes


Message = ServerKey | ServerInfoMsg | Received | PeerGone | Pong | KeepAlive | Other


class DerpClientCodec:
    def __init__(self, private: PrivateKey | None = None) -> None:
        self.private = private or PrivateKey.generate()
        self.public = bytes(self.private.public_key)
        self.server_key: bytes | None = None
        self._buf = bytearray()

    # building
    def client_info(
        self, server_key: bytes | None = None, doc: dict[str, Any] | None = None
    ) -> bytes:
        server = server_key or self.server_key
        assert server is not None
        body = json.dumps(doc if doc is not None else {"version": 2, "CanAckPings": True})
        sealed = Box(self.private, PublicKey(server)).encrypt(body.encode())
        return frame(T_CLIENT_INFO, self.public + bytes(sealed))

    @staticmethod
    def send_packet(dst: bytes, payload: bytes) -> bytes:
        return frame(T_SEND_PACKET, dst + payload)

    @staticmethod
    def ping(data: bytes) -> bytes:
        return frame(T_PING, data)

    @staticmethod
    def note_preferred(preferred: bool) -> bytes:
        return frame(T_NOTE_PREFERRED, b"\x01" if preferred else b"\x00")

    # parsing
    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= 5:
            t, n = struct.unpack_from(">BI", self._buf, 0)
            if n > CLIENT_MAX_FRAME:
                raise ValueError(f"server sent a {n}-byte frame")
            if len(self._buf) < 5 + n:
                break
            payload = bytes(self._buf[5 : 5 + n])
            del self._buf[: 5 + n]
            out.append(self._parse(t, payload))
        return out

    def _parse(self, t: int, p: bytes) -> Message:
        if t == T_SERVER_KEY:
            assert len(p) >= 40 and p[:8] == MAGIC, "bad ServerKey"
            self.server_key = p[8:40]
            return ServerKey(p[8:40])
        if t == T_SERVER_INFO:
            assert self.server_key is not None
            plain = Box(self.private, PublicKey(self.server_key)).decrypt(p[24:], p[:24])
            return ServerInfoMsg(json.loads(plain))
        if t == T_RECV_PACKET:
            return Received(p[:32], p[32:])
        if t == T_PEER_GONE:
            return PeerGone(p[:32], p[32] if len(p) > 32 else 0)
        if t == T_PONG:
            return Pong(p)
        if t == T_KEEP_ALIVE:
            return KeepAlive()
        return Other(t, p)


class AsyncDerpClient:
    """The codec over TCP to 127.0.0.1, including the HTTP/1.1 upgrade."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        codec: DerpClientCodec,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = codec
        self.upgrade_head = b""
        self._pending: list[Message] = []

    @property
    def public(self) -> bytes:
        return self.codec.public

    @classmethod
    async def open(
        cls,
        port: int,
        private: PrivateKey | None = None,
        *,
        fast_start: bool = False,
        host: str = "127.0.0.1",
    ) -> AsyncDerpClient:
        reader, writer = await asyncio.open_connection(host, port)
        self = cls(reader, writer, DerpClientCodec(private))
        head = (
            f"GET /derp HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
            "Upgrade: DERP\r\nConnection: Upgrade\r\n"
        )
        if fast_start:
            head += "Derp-Fast-Start: 1\r\n"
        writer.write((head + "\r\n").encode())
        if not fast_start:
            self.upgrade_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return self

    async def login(
        self,
        doc: dict[str, Any] | None = None,
        *,
        server_key: bytes | None = None,
    ) -> ServerInfoMsg:
        """Send ClientInfo (after reading ServerKey unless server_key is given) and
        wait for ServerInfo."""
        if server_key is None:
            msg = await self.recv()
            assert isinstance(msg, ServerKey), msg
        else:
            self.codec.server_key = server_key
        self.writer.write(self.codec.client_info(doc=doc))
        while True:
            msg = await self.recv()
            if isinstance(msg, ServerInfoMsg):
                return msg

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_packet(self, dst: bytes, payload: bytes) -> None:
        self.writer.write(self.codec.send_packet(dst, payload))

    async def recv(self, seconds: float = 5.0) -> Message:
        while not self._pending:
            data = await asyncio.wait_for(self.reader.read(65536), seconds)
            if not data:
                raise EOFError("server closed the connection")
            self._pending.extend(self.codec.feed(data))
        return self._pending.pop(0)

    async def recv_kind(self, kind: type[Any], seconds: float = 5.0) -> Any:
        """Next message of `kind`, skipping keep-alives and the fast-start ServerKey."""
        while True:
            msg = await self.recv(seconds)
            if isinstance(msg, kind):
                return msg
            if isinstance(msg, KeepAlive | ServerKey):
                continue
            raise AssertionError(f"expected {kind.__name__}, got {msg!r}")

    async def expect_closed(self, seconds: float = 5.0) -> None:
        """The server closes the stream (anything it sent before is ignored)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            try:
                data = await asyncio.wait_for(
                    self.reader.read(65536), max(0.01, deadline - loop.time())
                )
            except ConnectionError:
                return
            if not data:
                return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def random_key() -> bytes:
    return os.urandom(32)
