"""Outpost's DERP relay against a plain asyncio TCP forwarder, same run, same load.

`pairs` senders each stream 1280-byte packets to their own receiver for
`seconds`, writing `batch` frames per write and waiting for the socket to
drain (TCP back-pressure, like a WireGuard sender behind a DERP client).
Packets/s counts what *receivers* got: a relay that drops under load does not
get credit for it. Both servers run in their own process; their CPU is read
from /proc so CPU-µs per packet can be compared as well.

Through Outpost the senders are real DERP clients (HTTP upgrade, ServerKey,
sealed ClientInfo, ServerInfo) whose node keys are registered, since the
relay only admits registered nodes. Through the forwarder they send the
same DERP frames, which it copies unchanged.

All senders and receivers share one event loop, and `drain()` does not yield
while the socket accepts everything. Against a server that reads as fast as
it is written to, one sender could then run alone for seconds, starving the
other senders and every receiver (and a relay that, like derper, drops a
receiver that has not read for 2 s then drops them). So a sender
yields after `PUMP_YIELD_BYTES` written without a pause, with either server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..keys import NodePublic, PrivateKey
from ..proto import derp
from ..sim.client import SimNode, fetch_server_key
from .procstat import ServerProcess, sample
from .scenarios import free_port

PACKET_BYTES = 1280  # a typical WireGuard packet over a 1280-MTU tunnel
FRAME_HEADER = struct.Struct(">BI")
WARMUP_S = 1.0
# A sender yields to the other tasks after writing this many bytes without being
# paused: asyncio's default write high-water mark (see _pump).
PUMP_YIELD_BYTES = 64 * 1024


@dataclass
class RelayResult:
    name: str
    pairs: int
    seconds: float
    packets: int
    server_cpu_s: float
    sent: int = 0
    batch: int = 1
    drops: dict[str, int] | None = None

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0

    @property
    def mbit_s(self) -> float:
        return self.pps * PACKET_BYTES * 8 / 1e6

    @property
    def cpu_us_per_packet(self) -> float:
        return self.server_cpu_s / self.packets * 1e6 if self.packets else 0.0


async def _derp_connect(
    port: int, key: PrivateKey
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(
        b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    )
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"DERP upgrade refused: {head[:80]!r}")
    server: NodePublic | None = None
    while True:
        t, n = FRAME_HEADER.unpack(await r.readexactly(5))
        payload = await r.readexactly(n)
        if t == derp.FrameType.SERVER_KEY:
            server = derp.parse_server_key(payload)
            info = derp.ClientInfo(version=2, can_ack_pings=True)
            w.write(derp.encode_client_info(key, server, info, os.urandom(24)))
        elif t == derp.FrameType.SERVER_INFO:
            return r, w


async def _relay_drops(admin_socket: Path) -> dict[str, int] | None:
    """The relay's own drop counters, from the admin API (evidence for the report)."""
    import httpx  # noqa: PLC0415 (only the relay benchmark needs it)

    try:
        transport = httpx.AsyncHTTPTransport(uds=str(admin_socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
            doc = (await c.get("/v1/status")).json()
        drops = doc["relay"]["derp"].get("drops") or {}
        return {str(k): int(v) for k, v in drops.items()}
    except Exception:
        return None


def _minus(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int] | None:
    if after is None:
        return None
    base = before or {}
    return {k: v - base.get(k, 0) for k, v in after.items() if v - base.get(k, 0)}


async def _count(reader: asyncio.StreamReader, frame_bytes: int, counter: list[int]) -> None:
    """Receivers count bytes and divide: parsing every frame would make the
    load generator, not the relay, the bottleneck. Only packet frames flow."""
    got = 0
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(256 * 1024):
            got += len(data)
            counter[0] = got // frame_bytes


async def _pump(
    writer: asyncio.StreamWriter, frame: bytes, batch: int, stop: asyncio.Event, sent: list[int]
) -> None:
    chunk = frame * batch
    unyielded = 0
    with contextlib.suppress(ConnectionError):
        while not stop.is_set():
            writer.write(chunk)
            sent[0] += batch
            await writer.drain()
            # drain() does not yield while the socket takes everything (module doc)
            unyielded += len(chunk)
            if unyielded >= PUMP_YIELD_BYTES:
                unyielded = 0
                await asyncio.sleep(0)


async def _measure(
    name: str,
    pid: int,
    links: list[tuple[asyncio.StreamWriter, asyncio.StreamReader, bytes]],
    frame_bytes: int,
    *,
    seconds: float,
    batch: int,
) -> RelayResult:
    stop = asyncio.Event()
    counters = [[0] for _ in links]
    sent = [[0] for _ in links]
    tasks = [
        asyncio.create_task(_count(r, frame_bytes, c))
        for (_, r, _), c in zip(links, counters, strict=True)
    ]
    tasks += [
        asyncio.create_task(_pump(w, f, batch, stop, n))
        for (w, _, f), n in zip(links, sent, strict=True)
    ]
    await asyncio.sleep(WARMUP_S)
    c0, s0, t0 = sum(c[0] for c in counters), sample(pid).cpu_s, time.monotonic()
    n0 = sum(x[0] for x in sent)
    await asyncio.sleep(seconds)
    c1, s1, t1 = sum(c[0] for c in counters), sample(pid).cpu_s, time.monotonic()
    n1 = sum(x[0] for x in sent)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return RelayResult(
        f"{name}/b{batch}", len(links), t1 - t0, c1 - c0, s1 - s0, sent=n1 - n0, batch=batch
    )


async def run_relay(
    pairs: int = 16,
    seconds: float = 10.0,
    batches: tuple[int, ...] = (1, 16),
    log: Callable[[str], None] = print,
) -> list[RelayResult]:
    payload = os.urandom(PACKET_BYTES)
    results: list[RelayResult] = []
    with tempfile.TemporaryDirectory(prefix="outpost-relay-") as tmp:
        server = ServerProcess(Path(tmp) / "data", free_port())
        await server.start(make_key=True)
        writers: list[asyncio.StreamWriter] = []
        nodes: list[SimNode] = []
        try:
            mkey = await fetch_server_key("127.0.0.1", server.port)
            for i in range(2 * pairs):
                n = SimNode(f"relay{i}")
                await n.connect("127.0.0.1", server.port, mkey)
                await n.register(server.keys[0])
                nodes.append(n)
            links = []
            for i in range(pairs):
                src, dst = nodes[2 * i], nodes[2 * i + 1]
                _, sw = await _derp_connect(server.port, src.node)
                rr, rw = await _derp_connect(server.port, dst.node)
                writers += [sw, rw]
                frame = derp.encode_send_packet(NodePublic(dst.node.public_raw), payload)
                links.append((sw, rr, frame))
            recv_frame = len(derp.encode_recv_packet(NodePublic(bytes(32)), payload))
            log(f"[relay] DERP: {pairs} pairs for {seconds:.0f} s")
            for batch in batches:
                before = await _relay_drops(server.data_dir / "admin.sock")
                results.append(
                    await _measure(
                        "outpost-derp", server.pid, links, recv_frame, seconds=seconds, batch=batch
                    )
                )
                results[-1].drops = _minus(
                    await _relay_drops(server.data_dir / "admin.sock"), before
                )
        finally:
            for w in writers:
                w.close()
            for n in nodes:
                await n.close()
            await server.stop()

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outpost_server.bench.forwarder",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await proc.stdout.readline()
        links = []
        frame = derp.encode_send_packet(NodePublic(bytes(32)), payload)
        for i in range(pairs):
            rr, rw = await asyncio.open_connection("127.0.0.1", port)
            rw.write(f"{i} recv\n".encode())
            await rw.drain()
            _, sw = await asyncio.open_connection("127.0.0.1", port)
            sw.write(f"{i} send\n".encode())
            links.append((sw, rr, frame))
        log(f"[relay] forwarder: {pairs} pairs for {seconds:.0f} s")
        for batch in batches:
            results.append(
                await _measure(
                    "asyncio-forwarder", proc.pid, links, len(frame), seconds=seconds, batch=batch
                )
            )
        for sw, _, _ in links:
            sw.close()
    finally:
        proc.terminate()
        await proc.wait()
    return results
