"""The admitted-key feed's proof and codec, and the DERP map listing the site's other relays."""

from __future__ import annotations

import os

import pytest

from outpost_server.control.mapper import DerpSettings, derp_map
from outpost_server.errors import ProtocolError
from outpost_server.keys import NodePublic
from outpost_server.relay import meshauth

KEY = bytes(range(32))


def test_proof_needs_the_mesh_key_and_a_real_nonce() -> None:
    nonce = os.urandom(16)
    good = meshauth.mac(KEY, nonce)
    assert meshauth.check(KEY, nonce.hex(), good)
    assert not meshauth.check(os.urandom(32), nonce.hex(), good)  # another site's key
    assert not meshauth.check(KEY, os.urandom(16).hex(), good)  # proof for another nonce
    assert not meshauth.check(KEY, nonce.hex()[:20], meshauth.mac(KEY, nonce[:10]))  # nonce too short
    assert not meshauth.check(KEY, "zz" * 16, good)
    assert not meshauth.check(None, nonce.hex(), good)  # no mesh key configured: nobody
    assert not meshauth.check(KEY, None, None)


def test_feed_round_trip_and_etag_follows_the_set() -> None:
    keys = {NodePublic(bytes([i]) * 32) for i in range(1, 4)}
    etag, body = meshauth.encode(keys)
    assert meshauth.decode(body) == keys
    assert meshauth.encode(reversed(sorted(keys, key=lambda k: k.raw)))[0] == etag  # order-free
    assert meshauth.encode(list(keys)[:2])[0] != etag


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (b"not json", "not JSON"),
        (b'{"keys": 5}', "no key list"),
        (b'{"keys": ["abcd"]}', "not a 32-byte key"),
        (b'{"keys": [7]}', "not a 32-byte key"),
        (b"[" + b" " * (meshauth.MAX_FEED_BYTES + 1) + b"]", "exceeds"),
    ],
)
def test_feed_decode_refuses_what_is_not_a_key_set(body: bytes, msg: str) -> None:
    with pytest.raises(ProtocolError, match=msg):
        meshauth.decode(body)


def test_derp_map_lists_meshed_relays_as_further_nodes_of_the_region() -> None:
    s = DerpSettings(900, "site", "Outpost site", "10.0.0.1", 443, 3478, False, peers=(("10.0.0.2", 8443, 3478),))
    nodes = derp_map(s)["Regions"]["900"]["Nodes"]
    assert [(n["Name"], n["HostName"], n["DERPPort"], n["IPv4"]) for n in nodes] == [
        ("900a", "10.0.0.1", 443, "10.0.0.1"),
        ("900b", "10.0.0.2", 8443, "10.0.0.2"),
    ]
