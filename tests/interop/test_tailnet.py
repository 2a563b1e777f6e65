"""Enrolment and data path of a mixed tailnet of official clients on Outpost.

One server and one tailnet per module: two 1.96.4 daemons, two 1.78.1
daemons and one tsnet node (Caddy, tailscale.com 1.90.9). The "relay only"
tests add fresh pairs whose mutual UDP is dropped before they start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from . import netns
from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import OutpostServer
from .tailnet import (
    Tailnet,
    TinyHTTP,
    curl_until_ok,
    dns_label,
    enrol_all,
    server_node,
    wait_peer,
    wait_view_matches_server,
)
from .tsclient import peer_by_ip

pytestmark = pytest.mark.interop

SPEC = {f"{ab}{short(v)}": v for v in DAEMON_VERSIONS for ab in ("a", "b")}
CADDY = "web1"
PAIRS = [
    pytest.param("a196", "b196", id="1.96.4-1.96.4"),
    pytest.param("a178", "b178", id="1.78.1-1.78.1"),
    pytest.param("a196", "a178", id="1.96.4-1.78.1"),
    pytest.param("b178", "b196", id="1.78.1-1.96.4"),
]


@pytest.fixture(scope="module")
def key(server: OutpostServer, user: str) -> str:
    return server.create_key(user, reusable=True, expires="2h")


@pytest.fixture(scope="module")
def tailnet(server: OutpostServer, nodes: Nodes, key: str) -> Iterator[Tailnet]:
    yield enrol_all(Tailnet(server), nodes, SPEC, key, caddy_names=(CADDY,))


def _all_names() -> list[str]:
    return [*SPEC, CADDY]


@pytest.mark.parametrize("version", DAEMON_VERSIONS)
def test_key_enrolment_reaches_running(tailnet: Tailnet, version: str) -> None:
    for ab in ("a", "b"):
        name = f"{ab}{short(version)}"
        node = tailnet.node(name)
        st = node.wait_running()
        assert st["Version"].startswith(version)
        srv = server_node(tailnet.server, name)
        assert srv["ipv4"] == node.ip4()
        assert dns_label(st["Self"]["DNSName"]) == srv["name"] == name
        assert srv["user"] == "interop"
        netns.assert_isolated(node.host.ns)


def test_tsnet_caddy_node_enrols(tailnet: Tailnet) -> None:
    tailnet.caddy(CADDY)
    srv = server_node(tailnet.server, CADDY)
    assert srv["online"] is True
    assert srv["ipv4"]


def test_server_lists_every_node_online_with_distinct_addresses(tailnet: Tailnet) -> None:
    listed = {n["name"]: n for n in tailnet.server.nodes()}
    missing = [n for n in _all_names() if n not in listed]
    assert not missing, f"server lacks {missing}: {sorted(listed)}"
    assert all(listed[n]["online"] for n in _all_names()), listed
    v4 = [listed[n]["ipv4"] for n in _all_names()]
    assert len(set(v4)) == len(v4)


@pytest.mark.parametrize("name", list(SPEC))
def test_status_lists_every_other_node_online_with_server_names(
    tailnet: Tailnet, name: str
) -> None:
    node = tailnet.node(name)
    wait_view_matches_server(node, tailnet.server, name, tailnet.enrolled_names())
    st = node.status()
    for other in tailnet.enrolled_names():
        if other == name:
            continue
        srv = server_node(tailnet.server, other)
        peer = peer_by_ip(st, srv["ipv4"])
        assert peer is not None, other
        assert dns_label(peer["DNSName"]) == other


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_tailscale_ping_goes_direct(tailnet: Tailnet, src: str, dst: str) -> None:
    a, b = tailnet.node(src), tailnet.node(dst)
    result = a.ping(b.ip4(), count=20, timeout_s=3, until_direct=True)
    assert result.ok, f"no pong:\n{result.output}\n{a.log_tail(4000)}"
    assert result.direct, f"never direct:\n{result.output}"
    assert result.via == f"{b.host.ip}:{b.port}"


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_tcp_http_over_tailnet(tailnet: Tailnet, src: str, dst: str) -> None:
    a, b = tailnet.node(src), tailnet.node(dst)
    with TinyHTTP(b, f"hello from {dst}") as http:
        body = curl_until_ok(a, http.url, f"hello from {dst}")
    assert body == f"hello from {dst}"


@pytest.mark.parametrize("version", DAEMON_VERSIONS)
def test_tcp_http_to_tsnet_caddy(tailnet: Tailnet, version: str) -> None:
    tailnet.caddy(CADDY)
    client = tailnet.node(f"a{short(version)}")
    ip = server_node(tailnet.server, CADDY)["ipv4"]
    wait_peer(client, ip, lambda p: p.get("Online") is True, desc="online")
    assert curl_until_ok(client, f"http://{ip}/", f"hello from {CADDY}") == (f"hello from {CADDY}")


RELAY_PAIRS = [
    pytest.param("1.96.4", "1.96.4", id="1.96.4-1.96.4"),
    pytest.param("1.78.1", "1.78.1", id="1.78.1-1.78.1"),
    pytest.param("1.96.4", "1.78.1", id="1.96.4-1.78.1"),
]


@pytest.mark.parametrize(("va", "vb"), RELAY_PAIRS)
def test_relay_only_ping_and_tcp_via_derp(
    server: OutpostServer, nodes: Nodes, key: str, va: str, vb: str
) -> None:
    """With UDP between two clients dropped, ping and TCP go through DERP."""
    a = nodes.daemon(va, tag=f"ra{short(va)}", start=False)
    b = nodes.daemon(vb, tag=f"rb{short(vb)}", start=False)
    try:
        netns.drop_udp_between(a.host.ns, b.host.ip)
        netns.drop_udp_between(b.host.ns, a.host.ip)
        a.start()
        b.start()
        a.up(server.url, key, hostname=a.host.role)
        b.up(server.url, key, hostname=b.host.role)
        a.wait_running()
        b.wait_running()
        b_ip = b.ip4()
        wait_peer(a, b_ip, lambda p: p.get("Online") is True, desc="online")
        wait_peer(b, a.ip4(), lambda p: p.get("Online") is True, desc="online")

        result = a.ping(b_ip, count=6, timeout_s=3, until_direct=False)
        assert result.ok, (
            f"no pong via DERP:\n{result.output}\n{a.log_tail(5000)}\n{server.log_tail(4000)}"
        )
        assert result.via_derp, f"expected DERP path:\n{result.output}"
        # Still no direct path after more tries (the filter really holds).
        again = a.ping(b_ip, count=5, timeout_s=2, until_direct=True)
        assert not again.direct, again.output

        with TinyHTTP(b, "hello via derp") as http:
            assert curl_until_ok(a, http.url, "hello via derp") == "hello via derp"
        st = a.status()
        peer = peer_by_ip(st, b_ip)
        assert peer is not None and not peer.get("CurAddr"), peer
        # The clients did try the direct UDP path, and the filter dropped it.
        dropped = [
            int(n) for n in re.findall(r"counter packets (\d+)", netns.nft_drop_counters(a.host.ns))
        ]
        assert sum(dropped) > 0, netns.nft_drop_counters(a.host.ns)
    finally:
        nodes.remove(a)
        nodes.remove(b)
