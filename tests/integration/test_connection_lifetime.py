"""A ts2021 connection's lifetime: idle ones end, ones with a map stream stay."""

from __future__ import annotations

import asyncio
import gc

import pytest

from outpost_server.keys import PrivateKey
from outpost_server.net import h2conn
from outpost_server.sim.client import NoiseH2Client

from .conftest import Running
from .test_control_plane import joined

IDLE_S = 0.3


async def test_a_connection_without_streams_is_closed_when_idle(
    outpost: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2conn, "IDLE_TIMEOUT_S", IDLE_S)
    client = NoiseH2Client(PrivateKey.generate())
    await client.connect("127.0.0.1", outpost.port, outpost.server_key)
    await asyncio.wait_for(client.closed.wait(), 10 * IDLE_S)
    await client.close()


async def test_bytes_from_the_client_keep_a_connection_open(
    outpost: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2conn, "IDLE_TIMEOUT_S", IDLE_S)
    client = NoiseH2Client(PrivateKey.generate())
    await client.connect("127.0.0.1", outpost.port, outpost.server_key)
    for _ in range(6):  # 6 x IDLE_S / 2: past the timeout, never idle that long
        await asyncio.sleep(IDLE_S / 2)
        status, _ = await client.request("/machine/feature/query", {})
        assert status in (200, 501)
    assert not client.closed.is_set()
    await client.close()


async def test_a_connection_with_a_map_stream_stays_open_when_idle(
    outpost: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2conn, "IDLE_TIMEOUT_S", IDLE_S)
    node = await joined(outpost, "streamer")
    await asyncio.sleep(5 * IDLE_S)
    assert not node.conn.closed.is_set()
    await node.close()


async def test_an_open_map_stream_does_not_keep_its_request_body(outpost: Running) -> None:
    node = await joined(outpost, "streamer")
    await asyncio.sleep(0.1)
    streams = [
        o
        for o in gc.get_objects()
        if isinstance(o, h2conn.Request) and o.path.startswith("/machine/map")
    ]
    assert streams, "the map stream's request is still being served"
    assert all(len(r.body) == 0 for r in streams)
    await node.close()
