"""STUN responder on a real loopback UDP socket (127.0.0.1 and, if available, ::1)."""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import cast

import pytest

from outpost_server.net.stun import start_stun
from outpost_server.proto.stun import StunCounters


def tailscale_request(txid: bytes) -> bytes:
    """Built by hand like TS:net/stun/stun.go Request (not with the module under test)."""
    body = struct.pack(">HH", 1, 20) + b"\x21\x12\xa4\x42" + txid
    body += struct.pack(">HH", 0x8022, 8) + b"tailnode"
    return body + struct.pack(">HHI", 0x8028, 4, binascii.crc32(body) ^ 0x5354554E)


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait((data, addr))


def parse_xor_mapped(reply: bytes, txid: bytes) -> tuple[str, int]:
    assert reply[:2] == b"\x01\x01" and reply[8:20] == txid
    _, _, family, xport = struct.unpack_from(">HHxBH", reply, 20)
    key = b"\x21\x12\xa4\x42" + txid
    raw = bytes(b ^ k for b, k in zip(reply[28:], key, strict=False))
    assert len(raw) == (4 if family == 1 else 16)
    return str(ipaddress.ip_address(raw)), xport ^ 0x2112


async def stun_pair(host: str) -> AsyncIterator[tuple[Client, tuple[str, int], StunCounters]]:
    counters = StunCounters()
    server = await start_stun(host, 0, counters)
    addr = server.get_extra_info("sockname")[:2]
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(Client, local_addr=(host, 0))
    try:
        yield client, addr, counters
    finally:
        transport.close()
        server.close()


@pytest.fixture
async def v4() -> AsyncIterator[tuple[Client, tuple[str, int], StunCounters]]:
    async for item in stun_pair("127.0.0.1"):
        yield item


async def ask(client: Client, addr: tuple[str, int], pkt: bytes, seconds: float = 2.0) -> bytes:
    assert client.transport is not None
    client.transport.sendto(pkt, addr)
    data, src = await asyncio.wait_for(client.replies.get(), seconds)
    assert src[:2] == addr
    return data


async def test_valid_request_gets_32_byte_reply_with_our_address(
    v4: tuple[Client, tuple[str, int], StunCounters],
) -> None:
    client, addr, counters = v4
    assert client.transport is not None
    txid = os.urandom(12)
    reply = await ask(client, addr, tailscale_request(txid))
    assert len(reply) == 32
    local = client.transport.get_extra_info("sockname")
    assert parse_xor_mapped(reply, txid) == ("127.0.0.1", local[1])
    assert counters.snapshot().requests_answered == 1


async def test_every_wrong_length_is_ignored_counted_and_service_continues(
    v4: tuple[Client, tuple[str, int], StunCounters],
) -> None:
    client, addr, counters = v4
    assert client.transport is not None
    good = tailscale_request(os.urandom(12))
    bad = [good[:n] for n in range(1, 40)] + [good + b"\x00", good + bytes(4), good + bytes(3000)]
    for pkt in bad:
        client.transport.sendto(pkt, addr)
    # asyncio's sendto() silently skips empty datagrams; send that one from a plain socket.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"", addr)
    bad.append(b"")
    txid = os.urandom(12)
    reply = await ask(client, addr, tailscale_request(txid))  # still answering afterwards
    assert parse_xor_mapped(reply, txid)[0] == "127.0.0.1"
    await asyncio.sleep(0.05)
    assert client.replies.empty()  # nothing came back for the bad ones
    snap = counters.snapshot()
    assert snap.requests_answered == 1
    assert sum(snap.ignored.values()) == len(bad)
    assert snap.ignored["too_short"] == 20


async def test_generic_stun_client_without_tailnode_software_gets_no_reply(
    v4: tuple[Client, tuple[str, int], StunCounters],
) -> None:
    client, addr, counters = v4
    assert client.transport is not None
    plain = struct.pack(">HH", 1, 0) + b"\x21\x12\xa4\x42" + os.urandom(12)
    client.transport.sendto(plain, addr)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.replies.get(), 0.2)
    assert counters.snapshot().ignored == {"wrong_software": 1}


def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _have_ipv6_loopback(), reason="no ::1 on this host")
async def test_ipv6_request_gets_44_byte_reply() -> None:
    async for client, addr, _ in stun_pair("::1"):
        assert client.transport is not None
        txid = os.urandom(12)
        reply = await ask(client, addr, tailscale_request(txid))
        assert len(reply) == 44
        port = client.transport.get_extra_info("sockname")[1]
        assert parse_xor_mapped(reply, txid) == ("::1", port)
