"""HA subnet routers: which of several approved routers for a subnet is primary.

The rule (the hosted control plane's, and Outpost's): the router that
registered first. The engine takes it as `TopoNode.route_priority` (lowest
wins, listing order breaks ties); the live server feeds it node ids, the
conformance adapter a recorded registration time when the case carries one.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from outpost_server.control.fanout import Fanout, MapSession
from outpost_server.control.policystate import PolicyState, topo_name
from outpost_server.db.engine import open_database, sqlite_url
from outpost_server.keys import MachinePublic, NodePublic, PrivateKey
from outpost_server.policy import compile_for, load_policy
from outpost_server.policy.conformance import case_topology, registration_priorities
from outpost_server.state.model import NodeId
from outpost_server.state.store import Store

ROUTE = "10.9.0.0/16"
POLICY = {
    "tagOwners": {"tag:ha": ["odin@example.com"]},
    "acls": [{"action": "accept", "src": ["odin@example.com"], "dst": ["10.9.0.0/16:*"]}],
}


def _router(ipv4: str, ipv6: str, created: str | None = None) -> dict[str, Any]:
    n: dict[str, Any] = {
        "hostname": "",
        "tags": ["tag:ha"],
        "ipv4": ipv4,
        "ipv6": ipv6,
        "routable_ips": [ROUTE],
        "approved_routes": [ROUTE],
    }
    if created is not None:
        n["created"] = created
    return n


def _case(created_a: str | None, created_b: str | None) -> dict[str, Any]:
    # "alpha" is listed first and has the lower addresses; neither may matter
    # once registration times are known
    return {
        "policy": json.dumps(POLICY),
        "topology": {
            "users": [{"id": 1, "name": "odin", "email": "odin@example.com"}],
            "nodes": {
                "alpha": _router("100.64.0.2", "fd7a:115c:a1e0::2", created_a),
                "bravo": _router("100.64.0.3", "fd7a:115c:a1e0::3", created_b),
                "laptop": {
                    "hostname": "laptop",
                    "tags": [],
                    "user": "odin",
                    "ipv4": "100.64.0.9",
                    "ipv6": "fd7a:115c:a1e0::9",
                    "routable_ips": [],
                    "approved_routes": [],
                },
            },
        },
    }


def _primaries(case: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    cp = compile_for(load_policy(case["policy"]), case_topology(case))
    peers = cp.node("laptop").visible_peers
    for name in ("alpha", "bravo"):
        # what the router is told and what a client is told agree
        assert cp.node(name).self_view.primary_routes == peers[name].primary_routes
        assert (ROUTE in peers[name].allowed_ips) == bool(peers[name].primary_routes)
    return {name: peers[name].primary_routes for name in ("alpha", "bravo")}


def test_the_first_registered_router_is_primary_whatever_its_name_or_address() -> None:
    got = _primaries(_case("2026-04-10T22:28:29.598Z", "2026-04-10T22:28:29.046197882Z"))
    assert got == {"alpha": (), "bravo": (ROUTE,)}
    got = _primaries(_case("2026-04-10T22:28:29Z", "2026-04-10T22:28:30Z"))
    assert got == {"alpha": (ROUTE,), "bravo": ()}


def test_without_registration_times_the_listing_order_decides() -> None:
    assert _primaries(_case(None, None)) == {"alpha": (ROUTE,), "bravo": ()}


def test_a_router_with_a_recorded_time_outranks_one_without() -> None:
    assert _primaries(_case(None, "2026-04-10T22:28:30Z")) == {"alpha": (), "bravo": (ROUTE,)}


def test_registration_priorities_read_rfc3339_with_nanoseconds() -> None:
    nodes = {
        "a": {"created": "2026-04-10T22:28:32.290013726Z"},
        "b": {"created": "2026-04-10T22:28:32.290013Z"},  # same microsecond: listing order
        "c": {"created": "2026-04-10T23:28:31+01:00"},  # earliest, other zone
        "d": {"created": "not a time"},
        "e": {},
    }
    assert registration_priorities(nodes) == {"c": 0, "a": 1, "b": 2, "d": 3, "e": 3}
    assert registration_priorities({"x": {}, "y": {"created": ""}}) == {}


# --- the live server -------------------------------------------------------


def _register(store: Store, hostname: str, user_id: int) -> int:
    node = store.register_node(
        machine_key=MachinePublic(PrivateKey.generate().public_raw),
        node_key=NodePublic(PrivateKey.generate().public_raw),
        hostname=hostname,
        hostinfo_json=json.dumps({"RoutableIPs": [ROUTE]}),
        user_id=user_id,
        tags=(),
        ephemeral=False,
        cap_version=133,
        key_expiry=None,
        enrolment_key_id=None,
    )
    store.approve_routes(node.id, [ROUTE])
    return int(node.id)


def test_live_election_follows_registration_not_address_order(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path / "t.db"))
    store = Store(engine)
    uid = store.create_user("odin").id
    gone = _register(store, "gone", uid)
    older = _register(store, "older", uid)
    store.delete_node(gone)  # frees 100.64.0.1
    store = Store(engine)  # a restart: the allocator refills from the bottom
    newer = _register(store, "newer", uid)
    assert store.node(newer).ipv4 == IPv4Address("100.64.0.1") < store.node(older).ipv4
    store.save_policy(
        '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}', author="test"
    )
    cp = PolicyState(store).compiled()
    assert cp is not None
    assert cp.node(topo_name(older)).self_view.primary_routes == (ROUTE,)
    assert cp.node(topo_name(newer)).self_view.primary_routes == ()
    store.delete_node(older)  # the primary leaves: the next oldest takes over
    cp = PolicyState(store).compiled()
    assert cp is not None
    assert cp.node(topo_name(newer)).self_view.primary_routes == (ROUTE,)


def _ha_state(tmp_path: Path) -> tuple[Store, PolicyState, int, int, int]:
    store = Store(open_database(sqlite_url(tmp_path / "t.db")))
    uid = store.create_user("odin").id
    first, second = _register(store, "first", uid), _register(store, "second", uid)
    laptop = store.register_node(
        machine_key=MachinePublic(PrivateKey.generate().public_raw),
        node_key=NodePublic(PrivateKey.generate().public_raw),
        hostname="laptop",
        hostinfo_json="{}",
        user_id=uid,
        tags=(),
        ephemeral=False,
        cap_version=133,
        key_expiry=None,
        enrolment_key_id=None,
    ).id
    store.save_policy('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}', "test")
    return store, PolicyState(store), first, second, int(laptop)


def _primary(state: PolicyState, *candidates: int) -> list[int]:
    cp = state.compiled()
    assert cp is not None
    return [n for n in candidates if cp.node(topo_name(n)).self_view.primary_routes == (ROUTE,)]


def test_live_primary_fails_over_when_offline_and_does_not_take_the_route_back(
    tmp_path: Path,
) -> None:
    _, state, first, second, laptop = _ha_state(tmp_path)
    state.track_liveness()
    assert _primary(state, first, second) == [first]  # nobody online yet: oldest
    state.node_online(second, True)
    assert _primary(state, first, second) == [second]  # the only one online
    state.node_online(first, True)
    assert _primary(state, first, second) == [second]  # no fail-back
    state.node_online(second, False)
    assert _primary(state, first, second) == [first]
    state.node_online(second, True)
    assert _primary(state, first, second) == [first]
    # a node that shares no route going on/offline leaves the compilation alone
    gen = state.generation
    state.node_online(laptop, True)
    state.node_online(laptop, False)
    assert state.generation == gen


def test_without_liveness_tracking_the_oldest_router_is_primary(tmp_path: Path) -> None:
    _, state, first, second, _ = _ha_state(tmp_path)
    state.node_online(first, False)  # ignored: liveness is not tracked
    assert _primary(state, first, second) == [first]


def test_map_sessions_drive_the_live_election(tmp_path: Path) -> None:
    store, state, first, second, _ = _ha_state(tmp_path)
    fanout = Fanout(store, state)
    s_first, s_second = MapSession(NodeId(first), 133), MapSession(NodeId(second), 133)
    fanout.attach(s_first)
    fanout.attach(s_second)
    assert _primary(state, first, second) == [first]
    s_second.policy_dirty = False
    fanout.detach(s_first)  # the primary's map stream ends
    assert _primary(state, first, second) == [second]
    assert s_second.policy_dirty  # sessions are told to resend routes


def test_topology_reuses_unchanged_nodes_between_compilations(tmp_path: Path) -> None:
    """A recompilation after one change rebuilds that node's TopoNode only, so
    the engine's cached per-node values (address texts) survive it."""
    store, state, first, second, laptop = _ha_state(tmp_path)
    before = {n.name: n for n in state.topology().nodes}
    store.update_from_client(
        NodeId(laptop), disco_key=None, endpoints=("198.18.0.1:41641",), home_derp=None,
        hostinfo_json=None, cap_version=133,
    )  # fmt: skip
    store.rename_node(NodeId(second), "renamed")
    after = {n.name: n for n in state.topology().nodes}
    assert after[topo_name(first)] is before[topo_name(first)]
    assert after[topo_name(laptop)] is before[topo_name(laptop)]  # endpoints: not the engine's
    assert after[topo_name(second)] is not before[topo_name(second)]
    assert after[topo_name(second)].hostname == "renamed"
    # and the derived texts ride along with the reused object
    assert after[topo_name(first)].host_texts == before[topo_name(first)].host_texts


def test_a_replaced_compilation_is_released_and_the_new_one_answers(tmp_path: Path) -> None:
    """A compilation leaving service drops its caches (they refer back to it:
    a cycle the frozen-heap collector would keep); the one in force and the
    one the next notification compares against are never released."""
    store, state, first, second, laptop = _ha_state(tmp_path)
    old = state.compiled()
    assert old is not None
    old.node(topo_name(laptop))
    assert old._cache  # noqa: SLF001 - the cache under test
    store.set_node_tags(NodeId(laptop), ["tag:kiosk"])  # the engine sees tags: recompiles
    new = state.compiled()
    assert new is not old
    store.set_node_tags(NodeId(laptop), ["tag:desk"])
    assert state.compiled() is not new  # `old` was two compilations ago: retired
    assert not old._cache  # noqa: SLF001
    assert old.node(topo_name(first)).self_view.primary_routes == (ROUTE,)  # still answers
    assert new.node(topo_name(first)).self_view.primary_routes == (ROUTE,)
