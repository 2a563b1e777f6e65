"""Server restarts (SIGTERM and SIGKILL): clients return without re-enrolling.

Server and clients run in their own network namespaces (netns); see conftest.py.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import OutpostServer
from .tailnet import (
    Tailnet,
    enrol_all,
    wait_peer,
    wait_server_node,
    wait_view_matches_server,
)
from .tsclient import wait_until

pytestmark = pytest.mark.interop

SPEC = {f"{ab}{short(v)}": v for v in DAEMON_VERSIONS for ab in ("r", "s")}
CADDY = "web2"


@pytest.fixture(scope="module")
def key(server: OutpostServer, user: str) -> str:
    return server.create_key(user, reusable=True, expires="2h")


@pytest.fixture(scope="module")
def tailnet(server: OutpostServer, nodes: Nodes, key: str) -> Tailnet:
    return enrol_all(Tailnet(server), nodes, SPEC, key, caddy_names=(CADDY,))


def _snapshot(tailnet: Tailnet) -> dict[str, Any]:
    """Per node: addresses, own DNS name and node key (client side), and the server row."""
    snap: dict[str, Any] = {}
    server_rows = {n["name"]: n for n in tailnet.server.nodes()}
    for name in SPEC:
        st = tailnet.node(name).status()
        snap[name] = {
            "ips": sorted(st["TailscaleIPs"] or []),
            "dns": st["Self"]["DNSName"],
            "nodekey": st["Self"]["PublicKey"],
            "id": server_rows[name]["id"],
            "ipv4": server_rows[name]["ipv4"],
        }
    snap[CADDY] = {k: server_rows[CADDY][k] for k in ("id", "ipv4", "ipv6", "name")}
    return snap


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_clients_return_after_server_restart(
    tailnet: Tailnet, nodes: Nodes, key: str, sig: signal.Signals
) -> None:
    server = tailnet.server
    names = list(SPEC)
    for name in names:
        wait_view_matches_server(tailnet.node(name), server, name, [*SPEC, CADDY])
    before = _snapshot(tailnet)
    n_before = len(server.nodes())

    server.restart(sig)

    # Everyone reconnects on its own: online on the server with the same rows.
    for name in [*names, CADDY]:
        row = wait_server_node(
            server, name, lambda n: n.get("online") is True, timeout=60, desc="online again"
        )
        assert row["id"] == before[name]["id"]
        assert row["ipv4"] == before[name]["ipv4"]
    assert len(server.nodes()) == n_before  # nobody enrolled a second time
    for name in names:
        node = tailnet.node(name)
        wait_view_matches_server(node, server, name, [*SPEC, CADDY], timeout=60)
    after = _snapshot(tailnet)
    for name in names:
        assert after[name] == before[name], (name, before[name], after[name])

    # The map streams are live again: a node enrolled after the restart
    # appears in every old node's status.
    late_version = DAEMON_VERSIONS[0] if sig == signal.SIGTERM else DAEMON_VERSIONS[1]
    late = nodes.daemon(late_version, tag=f"late{sig.name.lower()[3:7]}")
    try:
        late.up(server.url, key, hostname=late.host.role)
        late.wait_running()
        ip = late.ip4()
        for name in names:
            wait_peer(
                tailnet.node(name),
                ip,
                lambda p: p.get("Online") is True,
                desc="online (joined after restart)",
            )
        # And the old nodes still talk to each other.
        a, b = tailnet.node(names[0]), tailnet.node(names[-1])
        wait_until(
            lambda: a.ping(b.ip4(), count=5, timeout_s=2).ok,
            30,
            desc=f"{names[0]} pings {names[-1]} after restart",
        )
    finally:
        nodes.remove(late)
