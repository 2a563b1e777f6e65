"""A real Outpost server on loopback per test, and the console pointed at it."""

from __future__ import annotations

import asyncio
import io
import re
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from outpost_server.app import OutpostServer
from outpost_server.config import ServerConfig
from outpost_server.sim.client import SimNode, fetch_server_key
from outpost_tui.app import OutpostConsole
from outpost_tui.client import AsyncAdminClient
from outpost_tui.lock import ConsoleLock


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An in-process server that a test can stop and start again (same data)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.tls_port = free_port()
        self.stun_port = free_port(socket.SOCK_DGRAM)
        self.server: OutpostServer | None = None
        self.server_key = b""
        self.sims: list[SimNode] = []

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "admin.sock"

    async def start(self) -> None:
        cfg = ServerConfig(
            data_dir=self.data_dir,
            listen=("127.0.0.1", self.port),
            tls_listen=("127.0.0.1", self.tls_port),
            stun_listen=("127.0.0.1", self.stun_port),
        )
        self.server = OutpostServer(cfg)
        await self.server.start()
        self.server_key = await fetch_server_key("127.0.0.1", self.port)

    async def stop(self) -> None:
        for sim in self.sims:
            await sim.close()
        self.sims.clear()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    @property
    def store(self) -> Any:
        assert self.server is not None
        return self.server.store

    async def pending_login(self, hostname: str) -> str:
        """A device starts an interactive login; returns its auth id."""
        node = SimNode(hostname)
        await node.connect("127.0.0.1", self.port, self.server_key)
        resp = await node.register(None)
        self.sims.append(node)
        return str(resp["AuthURL"]).rsplit("/", 1)[-1]

    async def joined_node(self, hostname: str, user: str = "alice") -> SimNode:
        """A device enrolled with a key and streaming its map (online)."""
        users = {u.name: u for u in self.store.users().values()}
        owner = users.get(user) or self.store.create_user(user)
        _, secret = self.store.create_enrolment_key(user_id=owner.id)
        node = SimNode(hostname)
        await node.connect("127.0.0.1", self.port, self.server_key)
        resp = await node.register(secret)
        assert not resp.get("Error"), resp
        assert await node.start_map() == 200
        await node.wait_for(lambda n: n.self_node is not None)
        self.sims.append(node)
        return node


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path / "data")
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def make_app(server: Server) -> Callable[..., OutpostConsole]:
    def make(lock: ConsoleLock | None = None, **kw: Any) -> OutpostConsole:
        kw.setdefault("poll_interval", 0.5)
        kw.setdefault("setup_wizard", False)  # fresh servers are never set up; wizard tests opt in
        return OutpostConsole(AsyncAdminClient(server.socket_path, timeout=2.0), lock, **kw)

    return make


async def wait_until(
    pilot: Any, pred: Callable[[], bool], timeout: float = 5.0, what: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await pilot.pause(0.05)


def screen_text(app: OutpostConsole) -> str:
    """The whole screen as plain text, as the terminal would show it."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        record=True,
        file=io.StringIO(),
        force_terminal=True,
        color_system="standard",
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text(styles=False)


def all_text(app: OutpostConsole) -> str:
    return screen_text(app)


_MASKS = (
    # certificate fingerprints (before the time mask, which would eat "12:34:56" in them)
    (re.compile(r"\b(?:[0-9A-F]{2}:){3,}[0-9A-F]{2}\b"), lambda m: "#" * len(m.group())),
    (re.compile(r"\b[0-9a-f]{13,}"), lambda m: "#" * len(m.group())),  # serials, hashes
    (re.compile(r"127\.0\.0\.1:\d+"), lambda m: "127.0.0.1:" + "#" * (len(m.group()) - 10)),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?"), lambda m: "#" * len(m.group())),
    (re.compile(r"\d\d:\d\d:\d\d"), lambda m: "##:##:##"),
    # certificate dates, also when a table cell cuts them short ("valid until 2031-1")
    (re.compile(r"\b20\d\d-[\d-]*"), lambda m: "#" * len(m.group())),
    (re.compile(r'(?<="127\.0\.0\.1", ")\d+'), lambda m: "#" * len(m.group())),  # audited ports
    # disk use changes with whatever else the machine stores
    # (with the padding after them, so a figure one digit longer keeps the line's length)
    (re.compile(r"\b\d+% used +"), lambda m: "##% used".ljust(len(m.group()))),
    (
        re.compile(r"[\d.]+ [KMG]?i?B free of [\d.]+ [KMG]?i?B +"),
        lambda m: "# free of #".ljust(len(m.group())),
    ),
    # relative times change length ("9s ago", "10s ago"), but not their column
    (re.compile(r"\b\d+[smhd] ago *"), lambda m: "~ago".ljust(len(m.group()))),
    (re.compile(r"v\d+\.\d+\.\d+\S*"), lambda m: "v" + "#" * (len(m.group()) - 1)),
    (re.compile(r"tskey-[A-Za-z0-9-]+"), lambda m: "#" * len(m.group())),
    (re.compile(r"opk-[A-Za-z0-9_-]+"), lambda m: "#" * len(m.group())),  # enrolment keys
)


def masked(text: str) -> str:
    for rx, repl in _MASKS:
        text = rx.sub(repl, text)
    return text


async def wait_text(pilot: Any, app: OutpostConsole, *needles: str, timeout: float = 20.0) -> str:
    """Wait until every needle is on the rendered screen; returns the screen."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        text = screen_text(app)
        if all(n in text for n in needles):
            return text
        if loop.time() > end:
            raise AssertionError(f"not on screen: {[n for n in needles if n not in text]}\n{text}")
        await pilot.pause(0.1)
