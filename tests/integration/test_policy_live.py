"""A policy change reaches connected nodes as deltas; a bad one changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from outpost_server.errors import InvalidInput
from outpost_server.sim.client import SimNode

from .conftest import Running
from .test_control_plane import joined

POLICY = """{
  // alice may reach the servers on port 80; nobody else may reach anything
  "tagOwners": {"tag:server": ["alice@"]},
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["tag:server:80"]},
  ],
}"""

POLICY_BOB_TOO = POLICY.replace('["alice@"], "dst"', '["alice@", "bob@"], "dst"')


async def tailnet(outpost: Running) -> tuple[SimNode, SimNode, SimNode]:
    store = outpost.store
    alice, bob = store.create_user("alice"), store.create_user("bob")
    _, ka = store.create_enrolment_key(user_id=alice.id)
    _, kb = store.create_enrolment_key(user_id=bob.id)
    _, ks = store.create_enrolment_key(user_id=None, tags=["tag:server"])
    return (
        await joined(outpost, "alice", ka),
        await joined(outpost, "bob", kb),
        await joined(outpost, "srv", ks),
    )


def src_ips(node: SimNode) -> set[str]:
    return {ip for rule in node.packet_filter for ip in rule["SrcIPs"]}


async def test_policy_change_flips_visibility_and_filters_without_reconnecting(
    outpost: Running,
) -> None:
    a, b, srv = await tailnet(outpost)
    await a.wait_for(lambda n: len(n.peers) == 2)  # allow-all before any policy
    policy = outpost.server.policy
    policy.apply(policy.check(POLICY))

    srv_id = srv.self_node["ID"]  # type: ignore[index]
    a_ip = a.self_node["Addresses"][0].split("/")[0]  # type: ignore[index]
    b_ip = b.self_node["Addresses"][0].split("/")[0]  # type: ignore[index]
    await a.wait_for(lambda n: set(n.peers) == {srv_id})
    await b.wait_for(lambda n: n.peers == {})
    await srv.wait_for(lambda n: src_ips(n) == {a_ip, a.self_node["Addresses"][1].split("/")[0]})  # type: ignore[index]
    assert all(
        p["Ports"] == {"First": 80, "Last": 80} for r in srv.packet_filter for p in r["DstPorts"]
    )
    assert a.packet_filter == []  # nothing may reach alice

    policy.apply(policy.check(POLICY_BOB_TOO))
    await b.wait_for(lambda n: set(n.peers) == {srv_id})
    await srv.wait_for(lambda n: b_ip in src_ips(n))
    for n in (a, b, srv):
        await n.close()


async def test_invalid_policy_is_refused_with_its_line_and_nothing_changes(
    outpost: Running,
) -> None:
    a, b, srv = await tailnet(outpost)
    policy = outpost.server.policy
    policy.apply(policy.check(POLICY))
    before = (policy.generation, policy.policy)
    with pytest.raises(InvalidInput, match="line"):
        policy.check(
            '{\n  "acls": [\n    {"action": "accept", "src": ["*"] "dst": ["*:*"]},\n  ],\n}'
        )
    failing_test = POLICY[:-1] + ', "tests": [{"src": "bob@", "accept": ["tag:server:80"]}]}'
    with pytest.raises(InvalidInput):
        policy.check(failing_test)
    assert (policy.generation, policy.policy) == before
    for n in (a, b, srv):
        await n.close()


GROUPS_POLICY = """{
  "tagOwners": {"tag:ga": ["alice@"], "tag:gb": ["alice@"]},
  "acls": [
    {"action": "accept", "src": ["tag:ga"], "dst": ["tag:ga:*"]},
    {"action": "accept", "src": ["tag:gb"], "dst": ["tag:gb:*"]},
  ],
}"""


async def test_a_join_and_a_leave_reach_only_the_nodes_that_can_see_them(outpost: Running) -> None:
    """With a policy, a topology change costs in proportion to who can see the
    node: the other group's sessions are not woken and get no message."""
    store = outpost.store
    store.create_user("alice")
    _, ka = store.create_enrolment_key(user_id=None, tags=["tag:ga"], reusable=True)
    _, kb = store.create_enrolment_key(user_id=None, tags=["tag:gb"], reusable=True)
    policy = outpost.server.policy
    policy.apply(policy.check(GROUPS_POLICY))
    a1, a2 = await joined(outpost, "a1", ka), await joined(outpost, "a2", ka)
    b1, b2 = await joined(outpost, "b1", kb), await joined(outpost, "b2", kb)
    for n, other in ((a1, a2), (a2, a1), (b1, b2), (b2, b1)):
        await n.wait_for(lambda n, o=other: set(n.peers) == {o.self_node["ID"]})  # type: ignore[index]
    seen_b = (b1.messages, b2.messages)

    a3 = await joined(outpost, "a3", ka)
    a3_id = a3.self_node["ID"]  # type: ignore[index]
    a3_ip = a3.self_node["Addresses"][0].split("/")[0]  # type: ignore[index]
    for n in (a1, a2):
        await n.wait_for(lambda n: a3_id in n.peers and a3_ip in src_ips(n))
    await a3.close()  # a leave: peers see it offline
    for n in (a1, a2):
        await n.wait_for(lambda n: n.peers[a3_id].get("Online") is False)
    store.delete_node(a3_id)  # and a removal: gone from peers and filters
    for n in (a1, a2):
        await n.wait_for(lambda n: a3_id not in n.peers and a3_ip not in src_ips(n))
    # Every change has been delivered to group A; group B's sessions were
    # never marked, so no message (not even an empty self update) went out.
    assert (b1.messages, b2.messages) == seen_b
    assert a3_id not in b1.peers and a3_ip not in src_ips(b1)
    for n in (a1, a2, b1, b2):
        await n.close()


async def test_a_first_allow_all_policy_resends_filters_but_no_peers(outpost: Running) -> None:
    """Going from no policy to an explicit allow-all changes every filter but
    no peer's AllowedIPs: peers must not be sent again (on a full mesh that
    would be N x N peer objects)."""
    a, b, c = await tailnet(outpost)
    for n in (a, b, c):
        await n.wait_for(lambda n: len(n.peers) == 2)
    seen: list[dict[str, Any]] = []
    original = a.apply

    def record(msg: dict[str, Any]) -> None:
        seen.append(msg)
        original(msg)

    a.apply = record  # type: ignore[method-assign]
    policy = outpost.server.policy
    policy.apply(policy.check('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:1-65535"]}]}'))
    await a.wait_for(lambda n: any(p["Ports"]["First"] == 1 for r in n.packet_filter for p in r["DstPorts"]))
    assert seen, "the new filter arrived in some message"
    assert not [m for m in seen if m.get("PeersChanged") or m.get("PeersRemoved")], seen
    for n in (a, b, c):
        await n.close()
