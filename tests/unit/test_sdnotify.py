"""sd_notify against a real AF_UNIX datagram socket, as systemd provides it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost_server.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    yield path, s
    s.close()


def test_ready_sends_one_datagram_with_status(notify_socket: tuple[str, socket.socket]) -> None:
    path, s = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("serving\n http://10.0.0.1") is True
    assert s.recv(4096) == b"READY=1\nSTATUS=serving http://10.0.0.1"


def test_abstract_socket_name_is_translated() -> None:
    name = f"outpost-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping() is True
        assert s.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog_interval_s is None


def test_undeliverable_notification_returns_false(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert n.enabled
    assert n.ready() is False  # logged, not raised


def test_relative_socket_path_is_ignored() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "relative.sock"}).enabled


Sock = tuple[str, socket.socket]


async def test_watchdog_pings_at_half_the_interval(notify_socket: Sock) -> None:
    path, s = notify_socket
    s.setblocking(False)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier(env)
    assert n.watchdog_interval_s == pytest.approx(0.2)
    task = asyncio.create_task(n.watchdog_loop())
    await asyncio.sleep(0.35)  # pings at 0, 0.1, 0.2, 0.3
    task.cancel()
    pings = []
    while True:
        try:
            pings.append(s.recv(64))
        except BlockingIOError:
            break
    assert pings and set(pings) == {b"WATCHDOG=1"}
    assert 3 <= len(pings) <= 5


async def test_watchdog_meant_for_another_pid_is_not_ours(notify_socket: Sock) -> None:
    path, _ = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval_s is None
    await asyncio.wait_for(n.watchdog_loop(), 1)  # returns at once


async def test_server_reports_ready_only_after_its_listener_accepts(
    notify_socket: Sock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.conftest import free_port  # noqa: PLC0415

    from outpost_server.app import OutpostServer  # noqa: PLC0415
    from outpost_server.config import ServerConfig  # noqa: PLC0415

    path, s = notify_socket
    s.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    port = free_port()
    server = OutpostServer(
        ServerConfig(
            data_dir=tmp_path / "data",
            listen=("127.0.0.1", port),
            tls_listen=None,
            stun_listen=None,
        )
    )
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(server.run())
    message = await asyncio.wait_for(loop.sock_recv(s, 4096), 30)
    assert message.startswith(b"READY=1\nSTATUS=serving http://127.0.0.1:")
    # READY means the control port is already bound: this connect must succeed.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    assert await asyncio.wait_for(loop.sock_recv(s, 4096), 5) == b"WATCHDOG=1"
    server.request_stop()
    await asyncio.wait_for(task, 30)
    assert await asyncio.wait_for(loop.sock_recv(s, 4096), 5) == b"STOPPING=1"


def test_watchdog_thread_pings_only_while_the_main_loop_says_it_is_alive(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, s = notify_socket
    alive = [True]
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    assert n.watchdog_thread(lambda: alive[0]) is not None
    assert s.recv(4096) == b"WATCHDOG=1"
    alive[0] = False
    while True:  # drain what was sent before the flag flipped
        s.settimeout(0.3)
        try:
            s.recv(4096)
        except TimeoutError:
            break
    with pytest.raises(TimeoutError):
        s.recv(4096)  # a stuck main loop stops the pings: systemd restarts the service
    assert Notifier({"NOTIFY_SOCKET": path}).watchdog_thread() is None  # no WatchdogSec: no thread
