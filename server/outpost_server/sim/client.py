"""A simulated Tailscale control client, for integration tests and load.

Real clients are the proof of interoperability; this exists to drive the
server from Python: in integration tests that need to look at exact bytes and
in the load harness that runs thousands of nodes in one process. It reuses
the server's sans-IO pieces (Noise initiator, map-frame decoder) and speaks
HTTP/2 with `h2` in client mode over the Noise transport, like a tailscaled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from ..keys import PrivateKey
from ..proto import mapframe, noise

DEFAULT_CAPVER = 133  # what 1.96.4 sends
GO_STREAM_WINDOW_BYTES = 4 << 20  # golang.org/x/net/http2 transportDefaultStreamFlow
GO_CONN_WINDOW_BYTES = 1 << 30  # transportDefaultConnFlow
GO_INFLOW_MIN_REFRESH_BYTES = 4 << 10  # inflowMinRefresh


class ClientError(Exception):
    pass


async def fetch_server_key(host: str, port: int, capver: int = DEFAULT_CAPVER) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /key?v={capver} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ClientError(f"/key failed: {head[:60]!r}")
    key = json.loads(body)["publicKey"]
    return bytes.fromhex(key.removeprefix("mkey:"))


@dataclass
class _Stream:
    status: int | None = None
    headers: asyncio.Event = field(default_factory=asyncio.Event)
    data: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    unacked: int = 0  # received bytes not yet returned in a WINDOW_UPDATE


class NoiseH2Client:
    """One ts2021 connection: Noise handshake, then an HTTP/2 client."""

    def __init__(self, machine: PrivateKey, capver: int = DEFAULT_CAPVER) -> None:
        self.machine = machine
        self.capver = capver
        self._streams: dict[int, _Stream] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._window = asyncio.Event()
        self.closed = asyncio.Event()

    async def connect(
        self, host: str, port: int, server_key: bytes, local_addr: tuple[str, int] | None = None
    ) -> None:
        """`local_addr` picks the source address: the load harness spreads
        thousands of connections over 127.0.0.x so one (src, dst) pair never
        runs out of ephemeral ports."""
        # TCP first: while a server restarts, a refused dial costs no key agreement.
        self._r, self._w = await asyncio.open_connection(host, port, local_addr=local_addr)
        init = noise.Initiator(self.machine, server_key, self.capver, PrivateKey.generate("eph"))
        hs = base64.b64encode(init.initiation()).decode()
        self._w.write(
            (
                f"POST /ts2021 HTTP/1.1\r\nHost: {host}\r\nUpgrade: tailscale-control-protocol\r\n"
                f"Connection: upgrade\r\nX-Tailscale-Handshake: {hs}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        await self._w.drain()
        head = await self._r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ClientError(f"upgrade refused: {head[:80]!r}")
        first = await self._r.readexactly(noise.HEADER_BYTES)
        length = int.from_bytes(first[1:3], "big")
        rest = await self._r.readexactly(length)
        self.transport = init.finish(first + rest)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        # Windows as Go's http2.Transport (what official clients use) opens
        # them: 4 MiB per stream, 1 GiB per connection, so a large first map
        # streams without waiting for WINDOW_UPDATEs, as with a real client.
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: GO_STREAM_WINDOW_BYTES}
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(GO_CONN_WINDOW_BYTES - 65535)
        self._flush()
        self._reader_task = asyncio.create_task(self._read_loop())

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self._w.write(self.transport.seal(data))

    async def _read_loop(self) -> None:
        try:
            while True:
                raw = await self._r.read(65536)
                if not raw:
                    break
                plain = self.transport.feed(raw)
                for ev in self.h2.receive_data(plain):
                    self._on_event(ev)
                self._flush()
        except (ConnectionError, OSError, noise.NoiseError):
            pass
        finally:
            self.closed.set()
            for s in self._streams.values():
                s.headers.set()
                s.data.put_nowait(None)

    def _on_event(self, ev: h2.events.Event) -> None:
        sid = getattr(ev, "stream_id", None)
        s = self._streams.get(sid) if sid is not None else None
        if isinstance(ev, h2.events.ResponseReceived) and s:
            s.status = int(dict(ev.headers)[":status"])
            s.headers.set()
        elif isinstance(ev, h2.events.DataReceived) and s:
            # As Go's http2 (inflow.add): return window in steps of at least
            # GO_INFLOW_MIN_REFRESH_BYTES, not one WINDOW_UPDATE per frame.
            s.unacked += ev.flow_controlled_length
            if s.unacked >= GO_INFLOW_MIN_REFRESH_BYTES:
                self.h2.acknowledge_received_data(s.unacked, ev.stream_id)
                s.unacked = 0
            s.data.put_nowait(ev.data)
        elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset) and s:
            s.headers.set()
            s.data.put_nowait(None)
        elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()

    async def _open(self, path: str, body: bytes) -> int:
        sid = self.h2.get_next_available_stream_id()
        self._streams[sid] = _Stream()
        self.h2.send_headers(
            sid,
            [(":method", "POST"), (":scheme", "https"), (":authority", "unused"), (":path", path)],
        )
        view = memoryview(body)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                self._window.clear()
                self._flush()
                await self._window.wait()
                continue
            self.h2.send_data(sid, bytes(view[:window]))
            view = view[window:]
        self.h2.end_stream(sid)
        self._flush()
        await self._w.drain()
        return sid

    async def request(self, path: str, payload: Any) -> tuple[int, bytes]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sid = await self._open(path, body)
        s = self._streams[sid]
        await s.headers.wait()
        chunks = []
        while (chunk := await s.data.get()) is not None:
            chunks.append(chunk)
        del self._streams[sid]
        return s.status or 0, b"".join(chunks)

    async def stream(self, path: str, payload: Any) -> tuple[int, AsyncIterator[bytes]]:
        sid = await self._open(path, json.dumps(payload).encode())
        s = self._streams[sid]
        await s.headers.wait()

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await s.data.get()) is not None:
                yield chunk

        return s.status or 0, chunks()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._w.close()
        if self._reader_task:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task


class SimNode:
    """A node: keys, registration, a map stream that keeps a netmap view."""

    def __init__(self, hostname: str, capver: int = DEFAULT_CAPVER) -> None:
        self.hostname = hostname
        self.capver = capver
        self.machine = PrivateKey.generate("machine")
        self.node = PrivateKey.generate("node")
        self.disco = PrivateKey.generate("disco")
        self.conn = NoiseH2Client(self.machine, capver)
        self.self_node: dict[str, Any] | None = None
        self.peers: dict[int, dict[str, Any]] = {}
        self.packet_filter: list[dict[str, Any]] = []
        self.ssh_policy: dict[str, Any] | None = None
        self.messages = 0
        self.updated = asyncio.Event()
        self.last_update_at = 0.0
        self._map_task: asyncio.Task[None] | None = None

    def node_key_text(self) -> str:
        return "nodekey:" + self.node.public_raw.hex()

    def hostinfo(self) -> dict[str, Any]:
        return {"Hostname": self.hostname, "OS": "linux", "IPNVersion": "sim", "BackendLogID": "sim"}

    async def connect(
        self, host: str, port: int, server_key: bytes, local_addr: tuple[str, int] | None = None
    ) -> None:
        await self.conn.connect(host, port, server_key, local_addr)

    async def register(self, auth_key: str | None = None, **extra: Any) -> dict[str, Any]:
        req: dict[str, Any] = {
            "Version": self.capver,
            "NodeKey": self.node_key_text(),
            "OldNodeKey": "nodekey:" + "0" * 64,
            "Hostinfo": self.hostinfo(),
            "Expiry": "0001-01-01T00:00:00Z",
            "Followup": "",
        }
        if auth_key:
            req["Auth"] = {"AuthKey": auth_key}
        req.update(extra)
        status, body = await self.conn.request("/machine/register", req)
        if status != 200:
            raise ClientError(f"register: HTTP {status}: {body[:200]!r}")
        return dict(json.loads(body))

    def map_request(self, stream: bool, endpoints: list[str] | None = None) -> dict[str, Any]:
        return {
            "Version": self.capver,
            "NodeKey": self.node_key_text(),
            "DiscoKey": "discokey:" + self.disco.public_raw.hex(),
            "Stream": stream,
            "OmitPeers": not stream,
            "KeepAlive": True,
            "Compress": "zstd",
            "Hostinfo": self.hostinfo(),
            "Endpoints": endpoints or ["127.0.0.1:41641"],
        }

    async def lite_update(self, endpoints: list[str]) -> int:
        status, _ = await self.conn.request("/machine/map", self.map_request(False, endpoints))
        return status

    async def start_map(self) -> int:
        status, chunks = await self.conn.stream("/machine/map", self.map_request(True))
        if status != 200:
            return status
        self._map_task = asyncio.create_task(self._consume(chunks))
        return status

    async def _consume(self, chunks: AsyncIterator[bytes]) -> None:
        dec = mapframe.Decoder()
        async for chunk in chunks:
            for msg in dec.feed(chunk):
                self.apply(msg)

    def apply(self, msg: dict[str, Any]) -> None:
        """Delta semantics as TS:control/controlclient/map.go applies them."""
        self.messages += 1
        if msg.get("KeepAlive"):
            return
        if msg.get("Node"):
            self.self_node = msg["Node"]
        if "PacketFilter" in msg and msg["PacketFilter"] is not None:
            self.packet_filter = msg["PacketFilter"]
        if msg.get("SSHPolicy") is not None:
            self.ssh_policy = msg["SSHPolicy"]
        if msg.get("Peers"):
            self.peers = {p["ID"]: p for p in msg["Peers"]}
        else:
            for pid in msg.get("PeersRemoved") or []:
                self.peers.pop(pid, None)
            for p in msg.get("PeersChanged") or []:
                self.peers[p["ID"]] = p
            for patch in msg.get("PeersChangedPatch") or []:
                peer = self.peers.get(patch["NodeID"])
                if peer is None:
                    continue
                for src, dst in (("DiscoKey", "DiscoKey"), ("Endpoints", "Endpoints"), ("DERPRegion", "HomeDERP"), ("Online", "Online"), ("LastSeen", "LastSeen"), ("Key", "Key")):
                    if src in patch:
                        peer[dst] = patch[src]
        self.last_update_at = time.monotonic()
        self.updated.set()

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred(self):
                self.updated.clear()
                await self.updated.wait()

        await asyncio.wait_for(loop(), timeout)

    async def close(self) -> None:
        if self._map_task:
            self._map_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._map_task
        await self.conn.close()
