"""Admin actions on nodes, as seen by official clients: delete, rename, expire.

Two long-lived observers (1.96.4 and 1.78.1) watch a fresh "subject" node
of each version per test.

Every client runs in its own network namespace (netns); see conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import OutpostServer
from .tailnet import (
    Tailnet,
    dns_label,
    enrol_all,
    server_node,
    wait_peer,
    wait_peer_gone,
    wait_server_node,
)
from .tsclient import TailscaleNode, peer_by_ip, wait_until

pytestmark = pytest.mark.interop

OBSERVERS = {f"obs{short(v)}": v for v in DAEMON_VERSIONS}


@pytest.fixture(scope="module")
def key(server: OutpostServer, user: str) -> str:
    return server.create_key(user, reusable=True, expires="2h")


@pytest.fixture(scope="module")
def observers(server: OutpostServer, nodes: Nodes, key: str) -> Tailnet:
    return enrol_all(Tailnet(server), nodes, OBSERVERS, key)


def _observer_nodes(observers: Tailnet) -> list[TailscaleNode]:
    return [observers.node(n) for n in OBSERVERS]


@pytest.fixture
def subject_factory(
    nodes: Nodes, server: OutpostServer, key: str, observers: Tailnet
) -> Iterator[object]:
    created: list[TailscaleNode] = []

    def make(version: str, hostname: str) -> TailscaleNode:
        node = nodes.daemon(version, tag=hostname)
        created.append(node)
        node.up(server.url, key, hostname=hostname)
        node.wait_running()
        ip = node.ip4()
        for obs in _observer_nodes(observers):
            wait_peer(obs, ip, lambda p: p.get("Online") is True, desc="online")
        return node

    yield make
    for node in created:
        nodes.remove(node)


@pytest.mark.parametrize("version", DAEMON_VERSIONS)
def test_deleted_node_disappears_from_every_peer(
    server: OutpostServer, observers: Tailnet, subject_factory: object, version: str
) -> None:
    hostname = f"del{short(version)}"
    subject = subject_factory(version, hostname)  # type: ignore[operator]
    ip = subject.ip4()
    node_id = server_node(server, hostname)["id"]

    server.delete_node(node_id)

    assert server.node(hostname=hostname) is None, server.nodes()
    for obs in _observer_nodes(observers):
        wait_peer_gone(obs, ip)
    # The remaining observers keep their view of each other.
    a, b = _observer_nodes(observers)
    wait_peer(a, b.ip4(), lambda p: p.get("Online") is True, desc="still online")


@pytest.mark.parametrize("version", DAEMON_VERSIONS)
def test_renamed_node_shows_new_name_to_peers_and_itself(
    server: OutpostServer, observers: Tailnet, subject_factory: object, version: str
) -> None:
    hostname = f"ren{short(version)}"
    new_name = f"renamed{short(version)}"
    subject = subject_factory(version, hostname)  # type: ignore[operator]
    ip = subject.ip4()
    node_id = server_node(server, hostname)["id"]

    server.rename_node(node_id, new_name)

    assert server_node(server, new_name)["ipv4"] == ip
    for obs in _observer_nodes(observers):
        peer = wait_peer(
            obs, ip, lambda p: dns_label(p.get("DNSName")) == new_name, desc=f"DNSName {new_name}"
        )
        assert peer["DNSName"].startswith(f"{new_name}.")
    subject.wait_until(
        lambda st: dns_label(st["Self"].get("DNSName")) == new_name, desc=f"own DNSName {new_name}"
    )
    assert subject.backend_state() == "Running"


@pytest.mark.parametrize("version", DAEMON_VERSIONS)
def test_expired_node_is_refused(
    server: OutpostServer, observers: Tailnet, subject_factory: object, version: str
) -> None:
    hostname = f"exp{short(version)}"
    subject = subject_factory(version, hostname)  # type: ignore[operator]
    ip = subject.ip4()
    node_id = server_node(server, hostname)["id"]

    server.expire_node(node_id)

    wait_server_node(server, hostname, lambda n: n.get("expired") is True, desc="expired")
    # Its own client learns its key expired and stops running (needs a new login).
    st = subject.wait_until(
        lambda s: s if s.get("BackendState") in ("NeedsLogin", "Stopped", "NoState") else None,
        desc="BackendState leaves Running after expiry",
    )
    assert st["BackendState"] == "NeedsLogin", json.dumps(st.get("BackendState"))
    # Peers see it expired, or no longer see it.
    for obs in _observer_nodes(observers):
        obs.wait_until(lambda s: _expired_or_gone(s, ip), desc=f"peer {ip} expired or gone")
    # And the expired node cannot reach them over the tailnet any more.
    obs = _observer_nodes(observers)[0]
    result = obs.ping(ip, count=2, timeout_s=2, until_direct=False)
    assert not result.ok, result.output


def _expired_or_gone(status: dict[str, Any], ip: str) -> bool:
    peer = peer_by_ip(status, ip)
    return peer is None or peer.get("Expired") is True or peer.get("Online") is False


def test_observers_still_see_each_other(observers: Tailnet) -> None:
    a, b = _observer_nodes(observers)
    wait_until(
        lambda: a.ping(b.ip4(), count=5, timeout_s=2).ok, 30, desc="observers ping each other"
    )
