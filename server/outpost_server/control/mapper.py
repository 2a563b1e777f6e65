"""Building tailcfg JSON (Node, DERPMap, MapResponse) from frozen state values.

Field names and shapes follow Go's encoding of TS:tailcfg (reference doc
control-protocol.md §0, §5.6-5.8). Two compatibility rules matter:
- 1.78 clients (capver 109) only understand the legacy `DERP` string
  ("127.3.3.40:<region>") and need explicit `AllowedIPs`; newer clients use
  `HomeDERP`. We always send both, so one serialised peer serves every viewer.
- Never send an empty string for a key field; omit it instead.

A peer's JSON depends only on the node itself and whether it is online, so
it is built and *encoded* once per (node revision, online state) and the
bytes are shared by every map that carries that peer (`peer_json`): a full
map of N peers is a join of cached fragments, not N dict copies and an
encode of the whole (a reconnect storm is N full maps). Viewers for whom the
policy alters a peer's AllowedIPs/PrimaryRoutes get their own encoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, ip_address
from typing import Any

from ..proto.mapframe import dumps
from ..state.model import Node, NodeId, User, UserId

DERP_MAGIC_IP = "127.3.3.40"  # tailcfg.DerpMagicIP, used by the legacy DERP string
TAGGED_USER_ID = UserId(2147455555)  # the conventional "tagged-devices" owner of tagged nodes
TAGGED_USER_LOGIN = "tagged-devices"
ALLOW_ALL_FILTER: list[dict[str, Any]] = [
    {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
]


def go_time(t: datetime) -> str:
    """RFC 3339 in UTC, as Go writes time.Time."""
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class DerpSettings:
    region_id: int
    region_code: str
    region_name: str
    host: str  # what clients dial (an IP literal on most sites: no DNS)
    derp_port: int
    stun_port: int  # -1 disables STUN
    can_port80: bool
    # Other relays of this site, meshed with ours (--mesh-with): (host, DERP port, STUN port).
    # They join our region as further nodes; a client homes on the first it can reach.
    peers: tuple[tuple[str, int, int], ...] = ()


def _derp_node(region_id: int, letter: str, host: str, derp_port: int, stun_port: int) -> dict[str, Any]:
    node: dict[str, Any] = {
        "Name": f"{region_id}{letter}",
        "RegionID": region_id,
        "HostName": host,
        "DERPPort": derp_port,
        "STUNPort": stun_port,
    }
    try:
        addr = ip_address(host)
    except ValueError:
        addr = None
    if isinstance(addr, IPv4Address):
        node["IPv4"] = host
        node["IPv6"] = "none"
    elif addr is not None:
        node["IPv6"] = host
        node["IPv4"] = "none"
    return node


def derp_map(s: DerpSettings) -> dict[str, Any]:
    node = _derp_node(s.region_id, "a", s.host, s.derp_port, s.stun_port)
    if s.can_port80:
        node["CanPort80"] = True
    nodes = [node] + [
        _derp_node(s.region_id, chr(ord("b") + i), h, dp, sp) for i, (h, dp, sp) in enumerate(s.peers[:24])
    ]
    return {
        # Only our own region: nothing Outpost sends ever names a public relay.
        "Regions": {
            str(s.region_id): {
                "RegionID": s.region_id,
                "RegionCode": s.region_code,
                "RegionName": s.region_name,
                "Nodes": nodes,
            }
        },
        "omitDefaultRegions": True,
    }


def user_profile(user: User | None, user_id: UserId) -> dict[str, Any]:
    if user is None:
        return {
            "ID": user_id,
            "LoginName": TAGGED_USER_LOGIN,
            "DisplayName": "Tagged Devices",
        }
    return {"ID": user.id, "LoginName": user.login_name, "DisplayName": user.display_name}


class NodeRenderer:
    """Per-node JSON cache keyed on (id, revision)."""

    def __init__(self, base_domain: str) -> None:
        self.base_domain = base_domain.strip(".")
        self._cache: dict[NodeId, tuple[int, dict[str, Any]]] = {}
        # node id -> ((revision, online), encoded peer JSON); one slot a node
        self._encoded: dict[NodeId, tuple[tuple[int, bool], bytes]] = {}

    def fqdn(self, node: Node) -> str:
        return f"{node.given_name}.{self.base_domain}."

    def forget(self, node_id: NodeId) -> None:
        self._cache.pop(node_id, None)
        self._encoded.pop(node_id, None)

    def base(self, node: Node) -> dict[str, Any]:
        hit = self._cache.get(node.id)
        if hit is not None and hit[0] == node.revision:
            return hit[1]
        addrs = [f"{node.ipv4}/32", f"{node.ipv6}/128"]
        # Without a policy, a route is served once advertised and approved by an
        # admin; with one, PolicyState's overlay replaces these two fields.
        routes = sorted(set(node.approved_routes) & set(node.advertised_routes()))
        d: dict[str, Any] = {
            "ID": node.id,
            "StableID": f"n{node.id}",
            "Name": self.fqdn(node),
            "User": node.user_id if node.user_id is not None else TAGGED_USER_ID,
            "Key": node.node_key.text(),
            "Machine": node.machine_key.text(),
            "Addresses": addrs,
            "AllowedIPs": addrs + routes,  # explicit: 1.78 needs it
            "Endpoints": list(node.endpoints),
            "Hostinfo": json.loads(node.hostinfo_json or "{}"),
            "Created": go_time(node.created),
            "Cap": node.cap_version,
            "MachineAuthorized": True,
        }
        if node.key_expiry is not None:
            d["KeyExpiry"] = go_time(node.key_expiry)
        if node.disco_key is not None:
            d["DiscoKey"] = node.disco_key.text()
        if node.home_derp:
            d["HomeDERP"] = node.home_derp
            d["DERP"] = f"{DERP_MAGIC_IP}:{node.home_derp}"
        if node.tags:
            d["Tags"] = list(node.tags)
        primary = [r for r in routes if not r.endswith("/0")]
        if primary:
            d["PrimaryRoutes"] = primary
        self._cache[node.id] = (node.revision, d)
        return d

    def peer(self, node: Node, online: bool) -> dict[str, Any]:
        d = dict(self.base(node))
        d["Online"] = online
        if not online and node.last_seen is not None:
            d["LastSeen"] = go_time(node.last_seen)
        return d

    def peer_json(self, node: Node, online: bool) -> bytes:
        """`peer(node, online)` encoded, shared by every viewer. LastSeen only
        changes with the node's revision (the store bumps it), so (revision,
        online) decides the bytes."""
        key = (node.revision, online)
        hit = self._encoded.get(node.id)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = dumps(self.peer(node, online))
        self._encoded[node.id] = (key, data)
        return data

    def self_node(self, node: Node, online: bool) -> dict[str, Any]:
        d = dict(self.base(node))
        d["Online"] = online
        d["CapMap"] = {}
        return d

    def patch(self, node: Node, fields: set[str]) -> dict[str, Any]:
        """A PeerChange for the patchable fields that changed."""
        p: dict[str, Any] = {"NodeID": node.id}
        if "disco_key" in fields and node.disco_key is not None:
            p["DiscoKey"] = node.disco_key.text()
        if "endpoints" in fields:
            p["Endpoints"] = list(node.endpoints)
        if "home_derp" in fields and node.home_derp:
            p["DERPRegion"] = node.home_derp
        return p
