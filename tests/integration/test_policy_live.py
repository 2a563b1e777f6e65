"""A policy change reaches connected nodes as deltas; a bad one changes nothing."""

from __future__ import annotations

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
    return (await joined(outpost, "alice", ka), await joined(outpost, "bob", kb), await joined(outpost, "srv", ks))


def src_ips(node: SimNode) -> set[str]:
    return {ip for rule in node.packet_filter for ip in rule["SrcIPs"]}


async def test_policy_change_flips_visibility_and_filters_without_reconnecting(outpost: Running) -> None:
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
    assert all(p["Ports"] == {"First": 80, "Last": 80} for r in srv.packet_filter for p in r["DstPorts"])
    assert a.packet_filter == []  # nothing may reach alice

    policy.apply(policy.check(POLICY_BOB_TOO))
    await b.wait_for(lambda n: set(n.peers) == {srv_id})
    await srv.wait_for(lambda n: b_ip in src_ips(n))
    for n in (a, b, srv):
        await n.close()


async def test_invalid_policy_is_refused_with_its_line_and_nothing_changes(outpost: Running) -> None:
    a, b, srv = await tailnet(outpost)
    policy = outpost.server.policy
    policy.apply(policy.check(POLICY))
    before = (policy.generation, policy.policy)
    with pytest.raises(InvalidInput, match="line"):
        policy.check('{\n  "acls": [\n    {"action": "accept", "src": ["*"] "dst": ["*:*"]},\n  ],\n}')
    failing_test = POLICY[:-1] + ', "tests": [{"src": "bob@", "accept": ["tag:server:80"]}]}'
    with pytest.raises(InvalidInput):
        policy.check(failing_test)
    assert (policy.generation, policy.policy) == before
    for n in (a, b, srv):
        await n.close()
