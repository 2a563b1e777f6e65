"""Map sessions share what is identical between them instead of copying it."""

from __future__ import annotations

from pathlib import Path

import orjson

from outpost_server.control.fanout import Fanout, MapSession
from outpost_server.control.mapper import NodeRenderer
from outpost_server.control.peerset import PeerSet
from outpost_server.control.policystate import PolicyState
from outpost_server.db.engine import open_database, sqlite_url
from outpost_server.keys import MachinePublic, NodePublic, PrivateKey
from outpost_server.proto import mapframe
from outpost_server.state.model import NodeId
from outpost_server.state.store import Store

ALLOW_ALL = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'


def _register(store: Store, hostname: str, user_id: int) -> NodeId:
    return store.register_node(
        machine_key=MachinePublic(PrivateKey.generate().public_raw),
        node_key=NodePublic(PrivateKey.generate().public_raw),
        hostname=hostname,
        hostinfo_json="{}",
        user_id=user_id,
        tags=(),
        ephemeral=False,
        cap_version=133,
        key_expiry=None,
        enrolment_key_id=None,
    ).id


def _mesh(tmp_path: Path, n: int) -> tuple[Store, Fanout, list[NodeId]]:
    store = Store(open_database(sqlite_url(tmp_path / "t.db")))
    uid = store.create_user("odin").id
    ids = [_register(store, f"n{i}", uid) for i in range(n)]
    store.save_policy(ALLOW_ALL, "test")
    return store, Fanout(store, PolicyState(store)), ids


def test_sessions_share_peer_signatures_and_keep_only_digests_of_texts(tmp_path: Path) -> None:
    _, fanout, ids = _mesh(tmp_path, 4)
    renderer = NodeRenderer("example.internal")
    a, b = MapSession(ids[0], 133), MapSession(ids[1], 133)
    full_a = fanout.full(a, renderer)
    fanout.full(b, renderer)
    assert {p["ID"] for p in orjson.loads(mapframe.dumps(full_a))["Peers"]} == set(ids[1:])
    shared = ids[2]
    assert a.peer_sig[shared] == b.peer_sig[shared]
    assert a.peer_sig[shared] is b.peer_sig[shared]
    assert a.sent_filter == b.sent_filter  # the same allow-all filter
    assert len(a.sent_filter) == len(a.sent_self) == 16
    assert a.sent_self != b.sent_self  # each node's own addresses


def test_known_peers_is_a_peer_set_of_what_was_sent(tmp_path: Path) -> None:
    _, fanout, ids = _mesh(tmp_path, 5)
    s = MapSession(ids[0], 133)
    fanout.full(s, NodeRenderer("example.internal"))
    assert isinstance(s.known_peers, PeerSet)
    assert set(s.known_peers) == set(ids[1:])
