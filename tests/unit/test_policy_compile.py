"""Compiled per-node results on small hand-built topologies."""

from __future__ import annotations

import ipaddress

import pytest

from outpost_server.policy import (
    PolicyError,
    Topology,
    TopoNode,
    TopoUser,
    compile_for,
    load_policy,
    run_policy_tests,
)

ALICE = TopoUser(1, "alice", "alice@example.com", frozenset({"owner", "admin"}))
BOB = TopoUser(2, "bob", "bob@example.com", frozenset({"admin"}))


def node(
    name: str,
    n: int,
    user: str | None = None,
    tags: tuple[str, ...] = (),
    routes: tuple[str, ...] = (),
) -> TopoNode:
    nets = tuple(ipaddress.ip_network(r) for r in routes)
    return TopoNode(
        name=name,
        ipv4=ipaddress.IPv4Address(f"100.64.0.{n}"),
        ipv6=ipaddress.IPv6Address(f"fd7a:115c:a1e0::{n:x}"),
        user=user,
        tags=tags,
        routable_ips=nets,
        approved_routes=nets,
    )


TOPO = Topology(
    users=(ALICE, BOB),
    nodes=(
        node("laptop", 1, user="alice"),
        node("phone", 2, user="alice"),
        node("desk", 3, user="bob"),
        node("web", 4, tags=("tag:web",)),
        node("router", 5, tags=("tag:router",), routes=("10.1.0.0/16",)),
    ),
    domains=frozenset({"example.com"}),
)

TAGS = '"tagOwners": {"tag:web": ["alice@example.com"], "tag:router": ["alice@example.com"]}'


def compiled(body: str):  # type: ignore[no-untyped-def]
    return compile_for(load_policy("{" + TAGS + ", " + body + "}"), TOPO)


def test_destination_only_gets_rules_that_concern_it() -> None:
    cp = compiled(
        '"acls": [{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:web:443"]}]'
    )
    (rule,) = cp.node("web").packet_filter
    assert rule.to_json() == {
        "SrcIPs": ["100.64.0.3", "fd7a:115c:a1e0::3"],
        "DstPorts": [
            {"IP": "100.64.0.4", "Ports": {"First": 443, "Last": 443}},
            {"IP": "fd7a:115c:a1e0::4", "Ports": {"First": 443, "Last": 443}},
        ],
    }
    assert cp.node("desk").packet_filter == ()
    assert cp.node("laptop").packet_filter == ()


def test_peers_are_visible_in_both_directions_only_when_traffic_is_allowed() -> None:
    cp = compiled(
        '"acls": [{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:web:443"]}]'
    )
    assert set(cp.node("desk").visible_peers) == {"web"}
    assert set(cp.node("web").visible_peers) == {"desk"}
    assert cp.node("laptop").visible_peers == {}


def test_autogroup_self_narrows_sources_to_the_owners_devices() -> None:
    cp = compiled(
        '"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:22"]}]'
    )
    (rule,) = cp.node("laptop").packet_filter
    assert sorted(rule.src_ips) == [
        "100.64.0.1",
        "100.64.0.2",
        "fd7a:115c:a1e0::1",
        "fd7a:115c:a1e0::2",
    ]
    assert set(cp.node("laptop").visible_peers) == {"phone"}
    assert cp.node("web").packet_filter == ()


def test_wildcard_source_is_the_tailnet_range_plus_approved_routes() -> None:
    cp = compiled('"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:web:80"]}]')
    (rule,) = cp.node("web").packet_filter
    assert rule.src_ips == (
        "100.64.0.0-100.115.91.255",
        "100.115.94.0-100.127.255.255",
        "fd7a:115c:a1e0::/48",
        "10.1.0.0/16",
    )


def test_subnet_destination_lands_on_the_router_and_exposes_the_route() -> None:
    cp = compiled(
        '"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["10.1.2.0/24:*"]}]'
    )
    (rule,) = cp.node("router").packet_filter
    assert [d[0] for d in rule.dst_ports] == ["10.1.2.0/24"]
    peer = cp.node("laptop").visible_peers["router"]
    assert "10.1.0.0/16" in peer.allowed_ips and peer.primary_routes == ("10.1.0.0/16",)
    # bob may not use the subnet, so he neither sees the router nor its route
    assert "router" not in cp.node("desk").visible_peers


def test_acl_rules_with_the_same_sources_merge_into_one_filter_rule() -> None:
    cp = compiled(
        '"acls": [{"action": "accept", "src": ["tag:router"], "dst": ["tag:web:22"]},'
        ' {"action": "accept", "src": ["tag:router"], "dst": ["tag:web:80"]},'
        ' {"action": "accept", "src": ["tag:router"], "dst": ["tag:web:53"], "proto": "udp"}]'
    )
    rules = cp.node("web").packet_filter
    assert len(rules) == 2
    tcp_udp = next(r for r in rules if not r.ip_proto)
    assert sorted({p.first for _, p in tcp_udp.dst_ports}) == [22, 80]
    assert next(r for r in rules if r.ip_proto).ip_proto == (17,)


def test_app_grant_becomes_a_cap_grant_on_the_destination() -> None:
    cp = compiled(
        '"grants": [{"src": ["bob@example.com"], "dst": ["tag:web"], '
        '"app": {"example.com/cap/x": [{"a": 1}]}}]'
    )
    (rule,) = cp.node("web").packet_filter
    assert rule.to_json()["CapGrant"] == [
        {
            "Dsts": ["100.64.0.4/32", "fd7a:115c:a1e0::4/128"],
            "CapMap": {"example.com/cap/x": [{"a": 1}]},
        }
    ]


def test_ssh_rules_map_users_and_deny_root_unless_listed() -> None:
    cp = compiled(
        '"acls": [], "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], '
        '"users": ["ubuntu", "autogroup:nonroot"]}]'
    )
    (rule,) = cp.node("web").ssh_policy.rules
    assert dict(rule.ssh_users) == {"ubuntu": "ubuntu", "*": "=", "root": ""}
    assert len(rule.principals) == 6
    assert cp.node("desk").ssh_policy.rules == ()


def test_node_attrs_build_the_self_cap_map() -> None:
    cp = compiled('"acls": [], "nodeAttrs": [{"target": ["tag:web"], "attr": ["funnel"]}]')
    caps = cp.node("web").self_view.cap_map
    assert (
        "funnel" in caps and "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000" in caps
    )
    assert cp.node("laptop").self_view.cap_map == {}


def test_failing_policy_tests_reject_the_policy() -> None:
    ok = compiled(
        '"acls": [{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:web:443"]}],'
        ' "tests": [{"src": "bob@example.com", "accept": ["tag:web:443"], "deny": ["tag:web:22"]}]'
    )
    run_policy_tests(ok)
    bad = compiled(
        '"acls": [{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:web:443"]}],'
        ' "tests": [{"src": "alice@example.com", "accept": ["tag:web:443"]}]'
    )
    with pytest.raises(PolicyError, match="test\\(s\\) failed"):
        run_policy_tests(bad)


def _ha_topology(priorities: tuple[int, int]) -> Topology:
    a, b = (
        node("r-a", 10, tags=("tag:router",), routes=("10.9.0.0/16",)),
        node("r-b", 11, tags=("tag:router",), routes=("10.9.0.0/16",)),
    )
    a = TopoNode(**{**a.__dict__, "route_priority": priorities[0]})
    b = TopoNode(**{**b.__dict__, "route_priority": priorities[1]})
    return Topology(users=(ALICE,), nodes=(node("laptop", 1, user="alice"), b, a))


def test_ha_primary_is_the_lowest_priority_then_the_first_listed() -> None:
    text = (
        "{" + TAGS + ', "acls": [{"action": "accept", "src": ["alice@example.com"], '
        '"dst": ["10.9.0.0/16:*"]}]}'
    )
    # equal priority: the node listed first (registered first) serves the route
    cp = compile_for(load_policy(text), _ha_topology((0, 0)))
    assert cp.node("r-b").self_view.primary_routes == ("10.9.0.0/16",)
    assert cp.node("r-a").self_view.primary_routes == ()
    peers = cp.node("laptop").visible_peers
    assert peers["r-b"].primary_routes == ("10.9.0.0/16",)
    assert peers["r-a"].primary_routes == ()
    # a lower route_priority wins regardless of order
    cp = compile_for(load_policy(text), _ha_topology((0, 5)))
    assert cp.node("r-a").self_view.primary_routes == ("10.9.0.0/16",)
    assert cp.node("r-b").self_view.primary_routes == ()


def test_visible_peers_is_a_read_only_mapping_over_node_indices() -> None:
    cp = compiled('"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:web:80"]}]')
    peers = cp.node("web").visible_peers
    assert set(peers) == {"laptop", "phone", "desk", "router"}
    assert len(peers) == 4 and "router" in peers and "web" not in peers
    assert peers.indices == {0, 1, 2, 4}
    assert peers["desk"].allowed_ips == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
    with pytest.raises(KeyError):
        peers["web"]
    assert dict(peers) == {name: peers[name] for name in peers}
    # the same peer object is shared by every viewer that sees it plainly
    assert cp.node("laptop").visible_peers["web"] is cp.node("phone").visible_peers["web"]
