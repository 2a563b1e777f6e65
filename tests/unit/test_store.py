"""The single writer: addresses, names, enrolment keys, change events."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from outpost_server.db.engine import open_database, sqlite_url
from outpost_server.errors import Conflict, EnrolmentRefused, InvalidInput
from outpost_server.keys import MachinePublic, NodePublic, PrivateKey
from outpost_server.state.ipalloc import AddressAllocator
from outpost_server.state.model import NodeChange
from outpost_server.state.store import Store, dns_label, utcnow


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(open_database(sqlite_url(tmp_path / "t.db")))


def add(store: Store, hostname: str) -> int:
    return store.register_node(
        machine_key=MachinePublic(PrivateKey.generate().public_raw),
        node_key=NodePublic(PrivateKey.generate().public_raw),
        hostname=hostname,
        hostinfo_json="{}",
        user_id=store.create_user(f"u{len(store.users())}").id,
        tags=(),
        ephemeral=False,
        cap_version=133,
        key_expiry=None,
        enrolment_key_id=None,
    ).id


def test_names_are_unique_dns_labels(store: Store) -> None:
    a, b = add(store, "My Laptop"), add(store, "my-laptop")
    assert store.node(a).given_name == "my-laptop"
    assert store.node(b).given_name == "my-laptop-1"
    with pytest.raises(Conflict):
        store.rename_node(b, "my-laptop")
    with pytest.raises(InvalidInput, match="invalid node name"):
        store.rename_node(b, "bad name!")


def test_addresses_survive_reopening_and_are_not_reused(tmp_path: Path) -> None:
    engine = open_database(sqlite_url(tmp_path / "t.db"))
    s = Store(engine)
    first = add(s, "one")
    add(s, "two")
    ip = s.node(first).ipv4
    s2 = Store(engine)
    assert s2.node(first).ipv4 == ip
    third = add(s2, "three")
    assert s2.node(third).ipv4 == IPv4Address("100.64.0.3")


def test_allocator_skips_reserved_ranges() -> None:
    alloc = AddressAllocator()
    # Start the cursor at the quad-100 service range: it must be skipped whole.
    alloc._cursor = int(IPv4Address("100.100.100.0")) - int(IPv4Address("100.64.0.0"))
    v4, v6 = alloc.allocate()
    assert v4 == IPv4Address("100.100.101.0")
    assert str(v6).startswith("fd7a:115c:a1e0::")


def test_enrolment_key_states(store: Store) -> None:
    uid = store.create_user("alice").id
    key, secret = store.create_enrolment_key(user_id=uid)
    assert store.check_enrolment_key(secret, utcnow()).id == key.id
    with pytest.raises(EnrolmentRefused, match="unknown key"):
        store.check_enrolment_key(secret[:-2] + "xx", utcnow())
    store.revoke_enrolment_key(key.id)
    with pytest.raises(EnrolmentRefused, match="revoked"):
        store.check_enrolment_key(secret, utcnow())
    _, s2 = store.create_enrolment_key(user_id=uid, expires=utcnow() + timedelta(hours=1))
    with pytest.raises(EnrolmentRefused, match="expired"):
        store.check_enrolment_key(s2, utcnow() + timedelta(hours=2))
    with pytest.raises(InvalidInput, match="needs a user or at least one tag"):
        store.create_enrolment_key(user_id=None)
    with pytest.raises(InvalidInput, match="invalid tag"):
        store.create_enrolment_key(user_id=uid, tags=["prod"])


def test_only_real_changes_are_emitted_and_patches_are_named(store: Store) -> None:
    nid = add(store, "n")
    seen: list[NodeChange] = []
    store.subscribe(seen.append)
    store.update_from_client(nid, disco_key=None, endpoints=(), home_derp=None, hostinfo_json="{}", cap_version=133)
    assert seen == []
    store.update_from_client(nid, disco_key=None, endpoints=("1.2.3.4:5",), home_derp=900, hostinfo_json=None, cap_version=133)
    assert seen[-1].fields == frozenset({"endpoints", "home_derp"})
    assert seen[-1].before is not None and seen[-1].before.endpoints == ()


def test_dns_label_never_empty() -> None:
    assert dns_label("!!!") == "node"
    assert dns_label("Ünïcode Box") == "n-code-box"


def test_what_the_hot_path_writes_reads_back_the_same_after_reopening(tmp_path: Path) -> None:
    """Registration, a node's own updates and key use counts are Core statements
    (not ORM flushes): every column must still reach the database."""
    engine = open_database(sqlite_url(tmp_path / "t.db"))
    s = Store(engine)
    user = s.create_user("alice")
    key, _secret = s.create_enrolment_key(user_id=user.id, reusable=True)
    machine = MachinePublic(PrivateKey.generate().public_raw)
    node = s.register_node(
        machine_key=machine,
        node_key=NodePublic(PrivateKey.generate().public_raw),
        hostname="box",
        hostinfo_json='{"OS":"linux"}',
        user_id=user.id,
        tags=(),
        ephemeral=False,
        cap_version=109,
        key_expiry=None,
        enrolment_key_id=key.id,
    )
    assert s.enrolment_keys()[key.id].uses == 1
    s.update_from_client(
        node.id, disco_key=None, endpoints=("192.0.2.1:41641",), home_derp=1,
        hostinfo_json='{"OS":"linux","Hostname":"box"}', cap_version=133,
    )  # fmt: skip
    s.approve_routes(node.id, ["10.1.0.0/24"])
    again = s.reauthorise(
        node.id, node_key=NodePublic(PrivateKey.generate().public_raw), user_id=None,
        tags=("tag:srv",), key_expiry=None, enrolment_key_id=key.id,
    )  # fmt: skip
    assert s.enrolment_keys()[key.id].uses == 2
    assert [n.id for n in s.nodes_of_machine(machine)] == [node.id]

    fresh = Store(engine)
    back = fresh.node(node.id)
    assert back == replace(again, revision=back.revision)
    assert back.endpoints == ("192.0.2.1:41641",) and back.home_derp == 1
    assert back.tags == ("tag:srv",) and back.approved_routes == ("10.1.0.0/24",)
    assert fresh.enrolment_keys()[key.id].uses == 2
    assert [n.id for n in fresh.nodes_of_machine(machine)] == [node.id]
    fresh.delete_node(node.id)
    assert fresh.nodes_of_machine(machine) == []


def test_last_seen_for_many_nodes_is_one_write_that_reads_back(tmp_path: Path) -> None:
    """Shutdown records every online node's last-seen time in one transaction;
    unknown ids are skipped and nothing is emitted (last_seen is not a change
    peers are told of)."""
    from outpost_server.state.model import NodeId

    url = sqlite_url(tmp_path / "t.db")
    store = Store(open_database(url))
    ids = [NodeId(add(store, f"n{i}")) for i in range(5)]
    seen: list[object] = []
    store.subscribe(seen.append)
    when = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    revisions = {i: store.node(i).revision for i in ids}
    assert store.set_last_seen_many([*ids[:3], NodeId(9999)], when) == 3
    assert seen == []
    for i in ids[:3]:
        assert store.node(i).last_seen == when
        assert store.node(i).revision == revisions[i] + 1
    assert store.node(ids[3]).last_seen != when
    again = Store(open_database(url))
    for i in ids[:3]:
        assert again.node(i).last_seen == when
