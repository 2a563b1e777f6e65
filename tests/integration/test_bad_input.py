"""Malformed handshakes, records and HTTP/2 bodies: refused, server unharmed.

Each test checks three things: the bad peer gets a clear refusal, other
clients keep being served, and stored state did not change.
"""

from __future__ import annotations

import asyncio
import base64
import struct

from outpost_server.keys import PrivateKey
from outpost_server.proto import noise
from outpost_server.sim.client import NoiseH2Client, SimNode

from .conftest import Running
from .test_control_plane import joined


async def raw_upgrade(port: int, header_value: str | None, upgrade: str = "tailscale-control-protocol") -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: {upgrade}\r\nConnection: upgrade\r\n"
    if header_value is not None:
        head += f"X-Tailscale-Handshake: {header_value}\r\n"
    w.write((head + "\r\n").encode())
    await w.drain()
    data = await asyncio.wait_for(r.read(), 5)
    w.close()
    return data


async def still_serving(outpost: Running) -> None:
    node = SimNode("bystander")
    await node.connect("127.0.0.1", outpost.port, outpost.server_key)
    resp = await node.register(outpost.new_key())
    assert resp["AuthURL"] == "" and not resp.get("Error")
    await node.close()


async def test_truncated_handshake_gets_a_noise_error_frame(outpost: Running) -> None:
    valid = noise.Initiator(PrivateKey.generate(), outpost.server_key, 133, PrivateKey.generate()).initiation()
    data = await raw_upgrade(outpost.port, base64.b64encode(valid[:60]).decode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert body[0] == noise.MSG_TYPE_ERROR
    (length,) = struct.unpack(">H", body[1:3])
    assert b"handshake initiation is 60 bytes, expected 101" == body[3 : 3 + length]
    assert outpost.server.public.counters.bad_handshakes == 1
    await still_serving(outpost)


async def test_wrong_message_type_in_initiation_is_named(outpost: Running) -> None:
    valid = bytearray(noise.Initiator(PrivateKey.generate(), outpost.server_key, 133, PrivateKey.generate()).initiation())
    valid[2] = 7
    data = await raw_upgrade(outpost.port, base64.b64encode(bytes(valid)).decode())
    assert b"unexpected handshake message type 7" in data
    await still_serving(outpost)


async def test_handshake_for_another_server_key_fails_authentication(outpost: Running) -> None:
    other = PrivateKey.generate().public_raw
    init = noise.Initiator(PrivateKey.generate(), other, 133, PrivateKey.generate()).initiation()
    data = await raw_upgrade(outpost.port, base64.b64encode(init).decode())
    assert b"handshake authentication failed" in data
    await still_serving(outpost)


async def test_missing_or_garbage_handshake_header_is_a_400(outpost: Running) -> None:
    assert (await raw_upgrade(outpost.port, None)).startswith(b"HTTP/1.1 400")
    assert b"not base64" in await raw_upgrade(outpost.port, "!!!not-base64!!!")
    assert b"unknown next protocol" in await raw_upgrade(outpost.port, "AAAA", upgrade="h2c")
    await still_serving(outpost)


async def test_oversized_request_head_is_refused(outpost: Running) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", outpost.port)
    w.write(b"GET /key HTTP/1.1\r\n" + b"X-Junk: " + b"a" * 20000 + b"\r\n\r\n")
    await w.drain()
    data = await asyncio.wait_for(r.read(), 5)
    assert data.startswith(b"HTTP/1.1 431")
    w.close()
    await still_serving(outpost)


async def test_record_over_4096_bytes_ends_only_that_connection(outpost: Running) -> None:
    client = NoiseH2Client(PrivateKey.generate())
    await client.connect("127.0.0.1", outpost.port, outpost.server_key)
    # A record header announcing 5000 bytes of ciphertext: over controlbase's 4096 limit.
    client._w.write(struct.pack(">BH", noise.MSG_TYPE_RECORD, 5000) + b"\x00" * 5000)
    await client._w.drain()
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()
    await still_serving(outpost)


async def test_oversized_http2_body_gets_413_and_nothing_is_stored(outpost: Running) -> None:
    node = SimNode("big")
    await node.connect("127.0.0.1", outpost.port, outpost.server_key)
    status, body = await node.conn.request("/machine/register", b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert status == 413
    assert outpost.store.nodes() == {}
    # The same connection still works for the next stream.
    resp = await node.register(outpost.new_key())
    assert not resp.get("Error")
    await node.close()


async def test_garbage_json_bodies_are_400_not_crashes(outpost: Running) -> None:
    node = await joined(outpost, "ok")
    for path in ("/machine/register", "/machine/map"):
        status, _ = await node.conn.request(path, b"\xff\xfe not json")
        assert status == 400
    status, _ = await node.conn.request("/machine/map", {"NodeKey": "nodekey:zz"})
    assert status == 400
    resp = await node.register(None, NodeKey="nonsense")
    assert "expected a key" in resp["Error"]
    assert len(outpost.store.nodes()) == 1
    await node.close()
