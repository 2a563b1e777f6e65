"""A real Outpost server on loopback with ephemeral ports, per test."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outpost_server.app import OutpostServer
from outpost_server.config import ServerConfig
from outpost_server.sim.client import fetch_server_key


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, server: OutpostServer, port: int, server_key: bytes) -> None:
        self.server = server
        self.port = port
        self.server_key = server_key
        self.store = server.store

    def new_key(self, **kw: object) -> str:
        user = self.store.users().get(1) or self.store.create_user("alice")  # type: ignore[call-overload]
        kw.setdefault("user_id", user.id)
        _, secret = self.store.create_enrolment_key(**kw)  # type: ignore[arg-type]
        return secret


async def start_server(data_dir: Path, **overrides: object) -> Running:
    """Start on free ports; retry if another process took one in between."""
    for attempt in range(5):
        try:
            return await _start_server(data_dir, **overrides)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
    raise AssertionError("unreachable")


async def _start_server(data_dir: Path, **overrides: object) -> Running:
    port = free_port()
    cfg = ServerConfig(
        data_dir=data_dir,
        listen=("127.0.0.1", port),
        tls_listen=("127.0.0.1", free_port()),
        stun_listen=("127.0.0.1", free_port(socket.SOCK_DGRAM)),
        **overrides,  # type: ignore[arg-type]
    )
    server = OutpostServer(cfg)
    try:
        await server.start()
    except OSError:
        await server.stop()
        raise
    key = await fetch_server_key("127.0.0.1", port)
    return Running(server, port, key)


@pytest.fixture
async def outpost(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_server(tmp_path / "data")
    yield running
    await running.server.stop()
