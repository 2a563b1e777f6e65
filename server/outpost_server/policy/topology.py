"""The tailnet as the policy engine sees it: users and nodes.

These are plain values, independent of the database and of the conformance
case format; the coordination server builds one from its state and the
conformance adapter builds one from a recorded case.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from outpost_server.policy.alias import IPAddress, IPNetwork

EXIT_ROUTES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def is_exit_route(prefix: IPNetwork) -> bool:
    return prefix.prefixlen == 0


@dataclass(frozen=True)
class TopoUser:
    id: int
    name: str
    email: str = ""
    # Tailnet roles ("owner", "admin", "network-admin", ...) for
    # autogroup:owner / autogroup:admin etc.
    roles: frozenset[str] = frozenset()

    @property
    def login(self) -> str:
        return self.email or f"{self.name}@"


@dataclass(frozen=True)
class TopoNode:
    name: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    user: str | None = None  # TopoUser.name of the owner; None for tagged nodes
    tags: tuple[str, ...] = ()
    routable_ips: tuple[IPNetwork, ...] = ()  # routes the node advertises
    approved_routes: tuple[IPNetwork, ...] = ()  # routes an admin approved
    hostname: str = ""
    # Among nodes serving the same approved subnet route, the lowest value is
    # the primary; equal values go to the node listed first in
    # `Topology.nodes`. The server lists nodes oldest first (by node ID) and
    # may raise the value of routers it considers offline.
    route_priority: int = 0

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(a for a in (self.ipv4, self.ipv6) if a is not None)

    @property
    def is_tagged(self) -> bool:
        return bool(self.tags)


@dataclass(frozen=True)
class Topology:
    users: tuple[TopoUser, ...]
    nodes: tuple[TopoNode, ...]
    # mail domains that belong to the tailnet (user:*@domain, localpart:*@domain)
    domains: frozenset[str] = field(default_factory=frozenset)
