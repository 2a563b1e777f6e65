"""The tailnet as the policy engine sees it: users and nodes.

These are plain values, independent of the database and of the conformance
case format; the coordination server builds one from its state and the
conformance adapter builds one from a recorded case.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from functools import cached_property

from outpost_server.policy.alias import IPAddress, IPNetwork

def addr_text(addr: IPAddress) -> str:
    """`str(addr)`, faster for IPv6 (the C formatter gives the same RFC 5952
    text except for embedded-IPv4 forms, which fall back to `str`)."""
    if addr.version == 6:
        text = socket.inet_ntop(socket.AF_INET6, addr.packed)
        if "." not in text:
            return text
    return str(addr)


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

    # Derived values are cached on the (immutable) node: the server reuses a
    # node's TopoNode across compilations while the node is unchanged, so a
    # recompilation after one join does not re-format 10k addresses.
    @cached_property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(a for a in (self.ipv4, self.ipv6) if a is not None)

    @cached_property
    def address_texts(self) -> tuple[str, ...]:
        return tuple(addr_text(a) for a in self.addresses)

    @cached_property
    def host_texts(self) -> tuple[str, ...]:
        """The addresses as host prefixes (`/32`, `/128`)."""
        return tuple(
            f"{t}/{a.max_prefixlen}" for a, t in zip(self.addresses, self.address_texts, strict=True)
        )

    @property
    def is_tagged(self) -> bool:
        return bool(self.tags)


@dataclass(frozen=True)
class Topology:
    users: tuple[TopoUser, ...]
    nodes: tuple[TopoNode, ...]
    # mail domains that belong to the tailnet (user:*@domain, localpart:*@domain)
    domains: frozenset[str] = field(default_factory=frozenset)
