"""The control plane end to end over loopback, driven by the simulated client.

These check exact protocol behaviour (what is sent, deltas vs full maps, error
texts). Official clients prove interoperability in tests/interop.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from outpost_server.sim.client import SimNode
from outpost_server.state.store import utcnow

from .conftest import Running, start_server


async def joined(outpost: Running, name: str, key: str | None = None) -> SimNode:
    node = SimNode(name)
    await node.connect("127.0.0.1", outpost.port, outpost.server_key)
    resp = await node.register(key or outpost.new_key())
    assert resp.get("Error", "") == "", resp
    assert resp["AuthURL"] == ""
    assert await node.start_map() == 200
    await node.wait_for(lambda n: n.self_node is not None)
    return node


async def test_enrolment_key_registers_and_first_map_is_complete(outpost: Running) -> None:
    node = await joined(outpost, "alpha")
    me = node.self_node
    assert me is not None
    assert me["Name"] == "alpha.outpost.internal."
    assert me["Addresses"] == ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]
    assert me["AllowedIPs"] == me["Addresses"]  # explicit, for 1.78
    assert me["MachineAuthorized"] is True
    assert me["DiscoKey"] == "discokey:" + node.disco.public_raw.hex()
    await node.close()


async def test_first_map_names_only_the_local_derp_region(outpost: Running) -> None:
    node = SimNode("solo")
    await node.connect("127.0.0.1", outpost.port, outpost.server_key)
    await node.register(outpost.new_key())
    status, body = await node.conn.request("/machine/map", {**node.map_request(False), "OmitPeers": False})
    assert status == 200
    from outpost_server.proto.mapframe import Decoder

    (msg,) = Decoder().feed(body)
    regions = msg["DERPMap"]["Regions"]
    assert list(regions) == ["900"]
    (derp_node,) = regions["900"]["Nodes"]
    assert derp_node["HostName"] == "127.0.0.1"
    assert "InsecureForTests" not in derp_node
    assert msg["PacketFilter"][0]["SrcIPs"] == ["*"]
    await node.close()


async def test_join_endpoint_change_and_delete_arrive_as_deltas(outpost: Running) -> None:
    a = await joined(outpost, "a")
    b = await joined(outpost, "b")
    b_id = b.self_node["ID"]  # type: ignore[index]
    await a.wait_for(lambda n: b_id in n.peers and n.peers[b_id].get("Online") is True)
    peer = a.peers[b_id]
    assert "HomeDERP" not in peer and "DERP" not in peer  # no home region reported yet
    assert peer["AllowedIPs"] == ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"]

    before = a.messages
    assert await b.lite_update(["198.18.0.9:41641"]) == 200
    await a.wait_for(lambda n: n.peers[b_id]["Endpoints"] == ["198.18.0.9:41641"])
    assert a.messages == before + 1  # one patch, not a full map

    outpost.store.delete_node(b_id)
    await a.wait_for(lambda n: b_id not in n.peers)
    await a.close()
    await b.close()


async def test_peer_going_offline_is_patched_with_last_seen(outpost: Running) -> None:
    a = await joined(outpost, "a")
    b = await joined(outpost, "b")
    b_id = b.self_node["ID"]  # type: ignore[index]
    await a.wait_for(lambda n: n.peers.get(b_id, {}).get("Online") is True)
    await b.close()
    await a.wait_for(lambda n: n.peers[b_id].get("Online") is False)
    assert "LastSeen" in a.peers[b_id]
    await a.close()


async def test_rename_reaches_peers(outpost: Running) -> None:
    a = await joined(outpost, "a")
    b = await joined(outpost, "b")
    b_id = b.self_node["ID"]  # type: ignore[index]
    outpost.store.rename_node(b_id, "printer")
    await a.wait_for(lambda n: n.peers.get(b_id, {}).get("Name") == "printer.outpost.internal.")
    await b.wait_for(lambda n: n.self_node["Name"] == "printer.outpost.internal.")  # type: ignore[index]
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda o: "opk-000000000000-nope", "unknown key"),
        (lambda o: "tskey-auth-xyz", "not an Outpost key"),
        (lambda o: o.new_key(expires=utcnow() + timedelta(seconds=1)), "expired"),
    ],
)
async def test_wrong_enrolment_keys_are_refused_with_a_clear_error(
    outpost: Running, make_key: object, message: str
) -> None:
    key = make_key(outpost)  # type: ignore[operator]
    if "expired" in message:
        await asyncio.sleep(1.1)
    node = SimNode("intruder")
    await node.connect("127.0.0.1", outpost.port, outpost.server_key)
    resp = await node.register(key)
    assert message in resp["Error"]
    assert outpost.store.nodes() == {}
    await node.close()


async def test_single_use_key_is_refused_the_second_time(outpost: Running) -> None:
    key = outpost.new_key()
    first = await joined(outpost, "first", key)
    second = SimNode("second")
    await second.connect("127.0.0.1", outpost.port, outpost.server_key)
    resp = await second.register(key)
    assert "is used" in resp["Error"]
    assert len(outpost.store.nodes()) == 1
    await first.close()
    await second.close()


async def test_map_for_a_node_key_of_another_machine_is_refused(outpost: Running) -> None:
    victim = await joined(outpost, "victim")
    thief = SimNode("thief")
    await thief.connect("127.0.0.1", outpost.port, outpost.server_key)
    req = thief.map_request(False, ["6.6.6.6:1"])
    req["NodeKey"] = victim.node_key_text()
    status, body = await thief.conn.request("/machine/map", req)
    assert status == 403
    assert b"does not belong" in body
    node = outpost.store.node_by_key(outpost.store.nodes()[1].node_key)
    assert node is not None and "6.6.6.6:1" not in node.endpoints
    await victim.close()
    await thief.close()


async def test_restart_keeps_nodes_addresses_and_server_key(tmp_path: Path) -> None:
    first = await start_server(tmp_path / "data")
    node = await joined(first, "keeper")
    addrs = node.self_node["Addresses"]  # type: ignore[index]
    await node.close()
    await first.server.stop()

    second = await start_server(tmp_path / "data")
    assert second.server_key == first.server_key
    node.conn = type(node.conn)(node.machine, node.capver)
    await node.connect("127.0.0.1", second.port, second.server_key)
    resp = await node.register(None)  # a daemon restart: known key, no auth
    assert resp["AuthURL"] == "" and not resp.get("Error")
    assert await node.start_map() == 200
    await node.wait_for(lambda n: n.self_node is not None and n.self_node["Addresses"] == addrs)
    await node.close()
    await second.server.stop()


async def test_interactive_login_waits_for_approval(outpost: Running) -> None:
    node = SimNode("laptop")
    await node.connect("127.0.0.1", outpost.port, outpost.server_key)
    resp = await node.register(None)
    url = resp["AuthURL"]
    assert url.startswith(f"http://127.0.0.1:{outpost.port}/register/")
    waiter = asyncio.create_task(node.register(None, Followup=url))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    auth_id = url.rsplit("/", 1)[-1]
    user = outpost.store.create_user("bob")
    outpost.server.registrar.approve(auth_id, user.id)
    final = await asyncio.wait_for(waiter, 5)
    assert final["AuthURL"] == "" and final["Login"]["LoginName"] == "bob@outpost"
    assert await node.start_map() == 200
    await node.close()


async def test_logout_expires_the_node_and_restart_is_then_refused(outpost: Running) -> None:
    node = await joined(outpost, "leaver")
    resp = await node.register(None, Expiry="1970-01-01T00:02:03Z")
    assert resp["NodeKeyExpired"] is True
    again = await node.register(None)
    assert again["NodeKeyExpired"] is True
    await node.close()


async def test_key_rotation_keeps_the_node(outpost: Running) -> None:
    key = outpost.new_key(reusable=True)
    node = await joined(outpost, "rotor", key)
    node_id = node.self_node["ID"]  # type: ignore[index]
    old = node.node_key_text()
    from outpost_server.keys import PrivateKey

    node.node = PrivateKey.generate("node")
    resp = await node.register(key, OldNodeKey=old)
    assert not resp.get("Error")
    stored = outpost.store.node(node_id)
    assert stored.node_key.text() == node.node_key_text()
    assert len(outpost.store.nodes()) == 1
    await node.close()


async def test_new_stream_replaces_the_old_one(outpost: Running) -> None:
    node = await joined(outpost, "twice")
    old_task = node._map_task
    assert await node.start_map() == 200
    assert old_task is not None
    await asyncio.wait_for(old_task, 5)  # the first stream was ended by the server
    await node.close()


async def test_deleted_node_is_told_its_key_expired_before_its_stream_ends(outpost: Running) -> None:
    node = await joined(outpost, "doomed")
    node_id = node.self_node["ID"]  # type: ignore[index]
    outpost.store.delete_node(node_id)
    await node.wait_for(lambda n: "KeyExpiry" in (n.self_node or {}))
    assert node._map_task is not None
    await asyncio.wait_for(node._map_task, 5)
    await node.close()


async def test_ephemeral_node_is_removed_after_its_grace_period_offline(tmp_path: Path) -> None:
    running = await start_server(tmp_path / "data", ephemeral_grace_s=0.3)
    eph = await joined(running, "eph", running.new_key(ephemeral=True))
    keeper = await joined(running, "keeper")
    eph_id = eph.self_node["ID"]  # type: ignore[index]
    await eph.close()
    await keeper.wait_for(lambda n: eph_id not in n.peers, timeout=5)
    assert eph_id not in running.store.nodes()
    assert len(running.store.nodes()) == 1
    await keeper.close()
    await running.server.stop()


async def test_crl_is_served_over_http(outpost: Running) -> None:
    from cryptography import x509

    r, w = await asyncio.open_connection("127.0.0.1", outpost.port)
    w.write(b"GET /ca/crl HTTP/1.1\r\nHost: x\r\n\r\n")
    await w.drain()
    raw = await asyncio.wait_for(r.read(), 5)
    w.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"application/pkix-crl" in head
    assert len(list(x509.load_der_x509_crl(body))) == 0


async def test_a_burst_of_changes_is_paced_and_nothing_is_lost(outpost: Running) -> None:
    """A session sends at most DELTA_BURST messages back to back, then one per
    DELTA_REFILL_S; what arrives meanwhile merges into the next message, and
    the viewer ends with the last state."""
    from outpost_server.control.service import DELTA_BURST, DELTA_REFILL_S

    a = await joined(outpost, "viewer")
    b = await joined(outpost, "mover")
    b_id = b.self_node["ID"]  # type: ignore[index]
    await a.wait_for(lambda n: b_id in n.peers and n.peers[b_id].get("Online") is True)
    before = a.messages
    changes = 60
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(changes):
        _move(outpost, b_id, f"198.18.1.{i}:41641")
        await asyncio.sleep(0.002)
    want = [f"198.18.1.{changes - 1}:41641"]
    await a.wait_for(lambda n: n.peers[b_id]["Endpoints"] == want)
    elapsed = loop.time() - t0
    sent = a.messages - before
    # Unpaced this would be ~one message per change.
    assert sent <= DELTA_BURST + elapsed / DELTA_REFILL_S + 2, (sent, elapsed)
    assert sent < changes
    await a.close()
    await b.close()


async def test_peers_share_one_encoding_per_revision(outpost: Running) -> None:
    """Every viewer's full map carries the same pre-encoded peer JSON, and it
    follows the peer's revision and online state."""
    a = await joined(outpost, "one")
    b = await joined(outpost, "two")
    c = await joined(outpost, "three")
    c_id = c.self_node["ID"]  # type: ignore[index]
    await a.wait_for(lambda n: c_id in n.peers)
    await b.wait_for(lambda n: c_id in n.peers)
    assert a.peers[c_id] == b.peers[c_id]
    renderer = outpost.server.control.renderer
    node = outpost.store.nodes()[c_id]
    first = renderer.peer_json(node, True)
    assert renderer.peer_json(node, True) is first  # cached, not re-encoded
    assert renderer.peer_json(node, False) != first  # online state is part of it
    moved = _move(outpost, c_id, "198.18.2.1:41641")
    assert b"198.18.2.1:41641" in renderer.peer_json(moved, True)
    for n in (a, b, c):
        await n.close()


def _move(outpost: Running, node_id: int, endpoint: str) -> Any:
    node = outpost.store.nodes()[node_id]  # type: ignore[index]
    return outpost.store.update_from_client(
        node.id,
        disco_key=None,
        endpoints=(endpoint,),
        home_derp=None,
        hostinfo_json=None,
        cap_version=node.cap_version,
    )
