"""Resolving aliases against a topology: which nodes and prefixes an alias means.

`Resolver` is built once per (policy, topology) and answers "which nodes does
`tag:web` mean", "which routes are approved and primary", and renders source
sets the way Tailscale writes `SrcIPs` (node addresses one by one, prefixes as
written, `*` as the tailnet's address ranges plus its approved subnet routes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from outpost_server.policy.alias import Alias, IPAddress, IPNetwork
from outpost_server.policy.parse import Policy
from outpost_server.policy.topology import Topology, TopoNode, is_exit_route

# The CGNAT range Tailscale assigns from, minus 100.115.92.0/23 (reserved for
# ChromeOS/Android VMs), and the tailnet's ULA prefix. `*` as a source means
# these plus every approved subnet route.
TAILNET_V4 = (ipaddress.ip_network("100.64.0.0/10"),)
RESERVED_V4 = ipaddress.ip_network("100.115.92.0/23")
TAILNET_V6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")
WILDCARD_SRC_TEXT = (
    "100.64.0.0-100.115.91.255",
    "100.115.94.0-100.127.255.255",
    "fd7a:115c:a1e0::/48",
)


def format_prefix(prefix: IPNetwork) -> str:
    """A prefix as Tailscale writes it in SrcIPs/DstPorts: single hosts bare."""
    if prefix.prefixlen == prefix.max_prefixlen:
        return str(prefix.network_address)
    return str(prefix)


def in_tailnet_range(addr: IPAddress) -> bool:
    if addr.version == 4:
        return addr in TAILNET_V4[0] and addr not in RESERVED_V4
    return addr in TAILNET_V6


@dataclass
class NodeSet:
    """What an alias (or a list of aliases) stands for."""

    nodes: set[int] = field(default_factory=set)
    prefixes: list[IPNetwork] = field(default_factory=list)
    wildcard: bool = False
    danger_all: bool = False  # autogroup:danger-all: every address, rendered "*"

    def update(self, other: NodeSet) -> None:
        self.nodes |= other.nodes
        for p in other.prefixes:
            if p not in self.prefixes:
                self.prefixes.append(p)
        self.wildcard = self.wildcard or other.wildcard
        self.danger_all = self.danger_all or other.danger_all

    def is_empty(self) -> bool:
        return not self.nodes and not self.prefixes and not self.wildcard


class Resolver:
    def __init__(self, policy: Policy, topology: Topology) -> None:
        self.policy = policy
        self.topology = topology
        self.nodes: tuple[TopoNode, ...] = topology.nodes
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        # per node: addresses, their text, and their text as host prefixes
        self.addrs: list[tuple[IPAddress, ...]] = [n.addresses for n in self.nodes]
        self.addr_text: list[tuple[str, ...]] = [n.address_texts for n in self.nodes]
        self.host_text: list[tuple[str, ...]] = [n.host_texts for n in self.nodes]
        users = topology.users
        self.user_by_login: dict[str, str] = {}
        for u in users:
            if u.email:
                self.user_by_login[u.email.lower()] = u.name
            self.user_by_login[f"{u.name}@".lower()] = u.name
        self.user_email = {u.name: u.email for u in users}
        self.user_roles = {u.name: u.roles for u in users}
        self.nodes_by_user: dict[str, list[int]] = {}
        self.nodes_by_tag: dict[str, list[int]] = {}
        self.member_nodes: list[int] = []
        self.tagged_nodes: list[int] = []
        for i, n in enumerate(self.nodes):
            if n.tags:
                self.tagged_nodes.append(i)
                for t in n.tags:
                    self.nodes_by_tag.setdefault(t, []).append(i)
            elif n.user is not None:
                self.member_nodes.append(i)
                self.nodes_by_user.setdefault(n.user, []).append(i)
        self._alias_cache: dict[Alias, NodeSet] = {}
        self.approved: list[tuple[IPNetwork, ...]] = [self._approve(n) for n in self.nodes]
        self.primary: list[tuple[IPNetwork, ...]] = self._elect_primaries()
        self.exit_nodes: set[int] = {
            i for i, routes in enumerate(self.approved) if any(is_exit_route(r) for r in routes)
        }
        seen: list[IPNetwork] = []
        for routes in self.approved:
            for r in routes:
                if not is_exit_route(r) and r not in seen:
                    seen.append(r)
        self.all_subnet_routes: tuple[IPNetwork, ...] = tuple(seen)

    # routes ---------------------------------------------------------------

    def _approver_matches(self, approvers: tuple[Alias, ...], node_index: int) -> bool:
        for a in approvers:
            ns = self.resolve(a)
            if node_index in ns.nodes:
                return True
        return False

    def _approve(self, node: TopoNode) -> tuple[IPNetwork, ...]:
        """Approved routes: the recorded approvals plus what autoApprovers grant.

        A subnet route is auto-approved when a `routes` entry covering it names
        the node; exit routes only through `exitNode`.
        """
        out = list(node.approved_routes)
        i = self.index[node.name]
        for r in node.routable_ips:
            if r in out:
                continue
            if is_exit_route(r):
                if self.policy.auto_exit and self._approver_matches(self.policy.auto_exit, i):
                    out.append(r)
                continue
            for prefix, approvers in self.policy.auto_routes:
                if (
                    prefix.version == r.version
                    and r.subnet_of(prefix)  # type: ignore[arg-type]
                    and prefix.prefixlen > 0
                    and self._approver_matches(approvers, i)
                ):
                    out.append(r)
                    break
        # only advertised routes can be served
        return tuple(r for r in out if r in node.routable_ips or r in node.approved_routes)

    def _elect_primaries(self) -> list[tuple[IPNetwork, ...]]:
        """Per subnet route, one primary router: lowest `route_priority`, then
        the first in topology order (the oldest node). Exit routes have none."""
        owners: dict[IPNetwork, int] = {}
        for i, routes in enumerate(self.approved):
            for r in routes:
                if is_exit_route(r):
                    continue
                cur = owners.get(r)
                if cur is None or self.nodes[i].route_priority < self.nodes[cur].route_priority:
                    owners[r] = i
        out: list[list[IPNetwork]] = [[] for _ in self.nodes]
        for r, i in owners.items():
            out[i].append(r)
        return [tuple(r for r in self.approved[i] if r in out[i]) for i in range(len(self.nodes))]

    # aliases --------------------------------------------------------------

    def user_nodes(self, login: str) -> list[int]:
        name = self.user_by_login.get(login.lower())
        if name is None:
            return []
        return self.nodes_by_user.get(name, [])

    def resolve(self, alias: Alias) -> NodeSet:
        cached = self._alias_cache.get(alias)
        if cached is not None:
            return cached
        ns = NodeSet()
        kind = alias.kind
        if kind == "wildcard":
            ns.wildcard = True
        elif kind == "tag":
            ns.nodes.update(self.nodes_by_tag.get(alias.value, []))
        elif kind == "group":
            for login in self.policy.groups.get(alias.value, ()):
                ns.nodes.update(self.user_nodes(login))
        elif kind == "user":
            ns.nodes.update(self.user_nodes(alias.value))
        elif kind == "domain":
            for name, email in self.user_email.items():
                if email.lower().endswith("@" + alias.value.lower()):
                    ns.nodes.update(self.nodes_by_user.get(name, []))
        elif kind in ("host", "prefix"):
            assert alias.prefix is not None
            ns.prefixes.append(alias.prefix)
        elif kind == "autogroup":
            ag = alias.value[len("autogroup:") :]
            if ag == "member":
                ns.nodes.update(self.member_nodes)
            elif ag == "tagged":
                ns.nodes.update(self.tagged_nodes)
            elif ag == "danger-all":
                ns.wildcard = True
                ns.danger_all = True
            elif ag in ("admin", "owner", "it-admin", "network-admin", "billing-admin", "auditor"):
                for name, roles in self.user_roles.items():
                    if ag in roles or (ag == "admin" and "owner" in roles):
                        ns.nodes.update(self.nodes_by_user.get(name, []))
            # self and internet are positional; the compiler handles them
        self._alias_cache[alias] = ns
        return ns

    def resolve_alias_text(self, text: str) -> NodeSet:
        """Resolve an autogroup by its full name (used by policy tests)."""
        return self.resolve(Alias("autogroup", text))

    def resolve_all(self, aliases: tuple[Alias, ...]) -> NodeSet:
        out = NodeSet()
        for a in aliases:
            out.update(self.resolve(a))
        return out

    # rendering & membership -------------------------------------------------

    def render_src(self, ns: NodeSet, restrict: set[int] | None = None) -> tuple[str, ...]:
        """SrcIPs strings for a source set (optionally only some of its nodes)."""
        out: list[str] = []
        seen: set[str] = set()

        def add(s: str) -> None:
            if s not in seen:
                seen.add(s)
                out.append(s)

        if restrict is not None:
            for i in sorted(restrict):
                for t in self.addr_text[i]:
                    add(t)
            return tuple(out)
        if ns.danger_all:
            return ("*",)
        if ns.wildcard:
            for s in WILDCARD_SRC_TEXT:
                add(s)
            for r in self.all_subnet_routes:
                add(format_prefix(r))
        for p in ns.prefixes:
            add(format_prefix(p))
        for i in sorted(ns.nodes):
            for t in self.addr_text[i]:
                add(t)
        return tuple(out)

    def src_contains_node(self, ns: NodeSet, i: int) -> bool:
        """Would traffic from node i (its own addresses) match this source set?"""
        if i in ns.nodes:
            return True
        addrs = self.addrs[i]
        if ns.wildcard and any(in_tailnet_range(a) for a in addrs):
            return True
        for p in ns.prefixes:
            for a in addrs:
                if a.version == p.version and a in p:
                    return True
        return False

    def src_covers_routes_of(self, ns: NodeSet, i: int) -> bool:
        """Does the source set include (part of) a subnet node i routes?"""
        routes = [r for r in self.approved[i] if not is_exit_route(r)]
        if not routes:
            return False
        if ns.wildcard:
            return True
        return any(p.version == r.version and p.overlaps(r) for p in ns.prefixes for r in routes)
