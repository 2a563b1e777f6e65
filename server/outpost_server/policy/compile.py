"""Compiling a policy for one node: packet filter, visible peers, self view.

`compile_for(policy, topology)` resolves everything that does not depend on
the node being asked about (alias -> node sets, approved and primary routes,
per-rule source sets) once; `CompiledPolicy.node(name)` then does the work
for that node only:

* packet filter: every rule whose destination covers the node (its own
  addresses, or one of its approved routes for prefix destinations) becomes a
  `FilterRule` with the rule's sources as `SrcIPs` and only the destinations
  that concern this node as `DstPorts`. `autogroup:self` destinations get their
  own rule whose sources are narrowed to the node owner's devices; app grants
  become `CapGrant` rules.
* visible peers: a peer is visible when either side may open a connection to
  the other (directly or through subnet routes). A peer's `AllowedIPs` carry
  its primary subnet routes when traffic may flow between this node and those
  routes, and its exit routes when this node may use it as an exit node.

Cost. The packet-filter index lists, per node, only the rules whose
destinations can cover it (`*` and autogroup:self rules are the exceptions).
For peers, every rule is resolved once into node sets -- who its sources are
(by address, by routed subnet), whom they may reach (addresses, subnets,
exit nodes) and whom the rule concerns as a destination -- with identical sets
shared; each node keeps the list of rules it appears in. A node's peers are
then the union of the sets of its rules (a few C-level set unions), returned
as a `PeerMap` whose `PeerView`s are shared between viewers. Per-node work is
proportional to the rules and peers that concern that node.
`python -m outpost_server.policy.bench` times it on a synthetic tailnet.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from outpost_server.policy.alias import IPAddress, IPNetwork
from outpost_server.policy.capmap import has_attr, self_cap_map
from outpost_server.policy.parse import Policy, PortRange, Rule
from outpost_server.policy.resolve import NodeSet, Resolver, format_prefix, in_tailnet_range
from outpost_server.policy.ssh import ssh_policy_for
from outpost_server.policy.topology import Topology, TopoNode, is_exit_route

# App capabilities whose grant also gives the sources a companion capability
# towards the destinations (the sharer side of Taildrive, the relay target).
COMPANION_CAPS = {
    "tailscale.com/cap/drive": "tailscale.com/cap/drive-sharer",
    "tailscale.com/cap/relay": "tailscale.com/cap/relay-target",
}


@dataclass(frozen=True)
class CapGrant:
    dsts: tuple[str, ...]
    cap_map: tuple[tuple[str, tuple[Any, ...] | None], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "Dsts": list(self.dsts),
            "CapMap": {k: (list(v) if v is not None else None) for k, v in self.cap_map},
        }


@dataclass(frozen=True)
class FilterRule:
    """One `tailcfg.FilterRule`."""

    src_ips: tuple[str, ...]
    dst_ports: tuple[tuple[str, PortRange], ...] = ()
    ip_proto: tuple[int, ...] = ()
    cap_grant: tuple[CapGrant, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"SrcIPs": list(self.src_ips)}
        if self.dst_ports:
            out["DstPorts"] = [
                {"IP": ip, "Ports": {"First": p.first, "Last": p.last}} for ip, p in self.dst_ports
            ]
        if self.ip_proto:
            out["IPProto"] = list(self.ip_proto)
        if self.cap_grant:
            out["CapGrant"] = [c.to_json() for c in self.cap_grant]
        return out


@dataclass(frozen=True)
class PeerView:
    name: str
    allowed_ips: tuple[str, ...]
    primary_routes: tuple[str, ...]
    tags: tuple[str, ...]


class PeerMap(Mapping[str, "PeerView"]):
    """The peers one node sees, by name (read-only).

    Built from the node's peer index set; the `PeerView`s of plain peers are
    shared between all viewers and made on first access, so computing a
    node's peers costs a few set unions. Iterates in topology order.
    """

    __slots__ = ("_cp", "_members", "_views")

    def __init__(
        self, members: AbstractSet[int], views: dict[int, PeerView], cp: CompiledPolicy
    ) -> None:
        self._members = members
        self._views = views
        self._cp = cp

    @property
    def indices(self) -> AbstractSet[int]:
        """The peers as node indices (positions in `Topology.nodes`)."""
        return self._members

    def _index(self, name: object) -> int | None:
        j = self._cp.r.index.get(name) if isinstance(name, str) else None
        return j if j is not None and j in self._members else None

    def __getitem__(self, name: str) -> PeerView:
        j = self._index(name)
        if j is None:
            raise KeyError(name)
        pv = self._views.get(j)
        return pv if pv is not None else self._cp.base_view(j)

    def __contains__(self, name: object) -> bool:
        return self._index(name) is not None

    def by_index(self) -> Iterator[tuple[int, PeerView]]:
        """(topology index, view) of every peer, unordered: the fast way
        through a node's peers (no name lookups)."""
        views = self._views
        base = self._cp.base_view
        for j in self._members:
            pv = views.get(j)
            yield j, (pv if pv is not None else base(j))

    def __iter__(self) -> Iterator[str]:
        names = self._cp.r.nodes
        return (names[j].name for j in sorted(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"PeerMap({sorted(self)!r})"


@dataclass(frozen=True)
class SelfView:
    addresses: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    primary_routes: tuple[str, ...]
    tags: tuple[str, ...]
    cap_map: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class NodeView:
    name: str
    packet_filter: tuple[FilterRule, ...]
    visible_peers: PeerMap = field(hash=False, compare=False)
    ssh_policy: Any = field(hash=False, compare=False)
    self_view: SelfView = field(hash=False, compare=False)


def _host_prefix(a: IPAddress) -> str:
    return f"{a}/{a.max_prefixlen}"


def _prefix_touches_node(prefix: IPNetwork, node: TopoNode, routes: tuple[IPNetwork, ...]) -> bool:
    for a in node.addresses:
        if a.version == prefix.version and a in prefix:
            return True
    return any(
        r.version == prefix.version and r.overlaps(prefix) for r in routes if not is_exit_route(r)
    )


@dataclass
class _RuleInfo:
    rule: Rule
    srcs: NodeSet
    src_text: tuple[str, ...]


_Via = tuple[int, IPNetwork]  # (router, route) a `via` rule picks for its sources


@dataclass(frozen=True)
class _RulePeers:
    """One rule, resolved for peer visibility (all sets shared, never mutated)."""

    s_direct: frozenset[int]  # nodes the sources contain by address
    s_routes: frozenset[int]  # routers whose subnets the sources cover
    d_direct: frozenset[int]  # nodes the sources may reach by address (or via router)
    d_routes: frozenset[int]  # routers whose subnets the sources may reach
    d_exits: frozenset[int]  # exit nodes the sources may use
    has_self: bool  # autogroup:self destination (the viewer owner's devices)
    self_ports: bool  # ... with ports, so it lets the owner's devices in
    vias: tuple[_Via, ...]
    wildcard_src: bool


class _PeerIndex:
    def __init__(self, n: int) -> None:
        self.rules: list[_RulePeers] = []
        self.as_src: list[list[int]] = [[] for _ in range(n)]
        self.as_src_routes: list[list[int]] = [[] for _ in range(n)]
        self.as_dst: list[list[int]] = [[] for _ in range(n)]
        self.self_rules: list[int] = []


class CompiledPolicy:
    def __init__(self, policy: Policy, topology: Topology) -> None:
        self.policy = policy
        self.topology = topology
        self.r = Resolver(policy, topology)
        self.rules: list[_RuleInfo] = []
        for rule in policy.rules:
            srcs = self.r.resolve_all(rule.srcs)
            self.rules.append(_RuleInfo(rule, srcs, self.r.render_src(srcs)))
        self._cache: dict[str, NodeView] = {}
        self.ssh_prepared: list[Any] | None = None  # filled by the ssh module
        self._no_ipv4_checked: dict[int, bool] = {}
        # peer-visibility index, built on first use
        self._pidx: _PeerIndex | None = None
        self._interned: dict[frozenset[int], frozenset[int]] = {}
        self._prefix_nodes: dict[IPNetwork, frozenset[int]] = {}
        self._user_node_sets: dict[str, frozenset[int]] = {}
        self._peer_views: dict[tuple[int, bool, bool], PeerView] = {}
        self._base: list[PeerView | None] = [None] * len(self.r.nodes)
        nodes = self.r.nodes
        approved = self.r.approved
        self._routers: tuple[int, ...] = tuple(
            j
            for j in range(len(nodes))
            if approved[j] and any(not is_exit_route(x) for x in approved[j])
        )
        # sorted addresses per IP version, for prefix lookups; built on first use
        self._addr_index: dict[int, tuple[list[int], list[int]]] = {}
        # Index: which rules can concern a node's packet filter. Node-alias
        # and prefix destinations are indexed by the nodes they cover (prefixes:
        # nodes addressed inside them and routers of overlapping subnets),
        # companion capabilities by their source nodes; only `*` destinations
        # concern every node, and autogroup:self every user-owned node.
        self._rules_by_node: dict[int, set[int]] = {}
        self._global_rules: set[int] = set()
        self._self_rules: set[int] = set()

        def index(k: int, js: Any) -> None:
            for j in js:
                self._rules_by_node.setdefault(j, set()).add(k)

        for k, info in enumerate(self.rules):
            rule = info.rule
            if any(name in COMPANION_CAPS for name, _ in rule.caps):
                if info.srcs.wildcard:
                    self._global_rules.add(k)
                else:
                    index(k, info.srcs.nodes)
                    for p in info.srcs.prefixes:
                        index(k, self._nodes_in_prefix(p))
            for d in rule.dsts:
                a = d.alias
                if a.kind == "wildcard":
                    self._global_rules.add(k)
                elif a.kind == "autogroup" and a.value == "autogroup:self":
                    self._self_rules.add(k)
                elif a.kind == "autogroup" and a.value == "autogroup:internet":
                    continue
                elif a.kind in ("prefix", "host"):
                    assert a.prefix is not None
                    index(k, self._nodes_in_prefix(a.prefix))
                    index(k, self._routers_overlapping(a.prefix))
                else:
                    index(k, self.r.resolve(a).nodes)

    # ---------------------------------------------------------------- filter

    def _dst_entries(
        self, info: _RuleInfo, i: int
    ) -> tuple[list[tuple[str, PortRange]], list[tuple[str, PortRange]], list[str]]:
        """(normal DstPorts, autogroup:self DstPorts, CapGrant Dsts) of a rule for node i."""
        node = self.r.nodes[i]
        routes = self.r.approved[i]
        texts = self.r.addr_text[i]
        normal: list[tuple[str, PortRange]] = []
        self_ports: list[tuple[str, PortRange]] = []
        cap_dsts: list[str] = []
        for d in info.rule.dsts:
            a = d.alias
            if a.kind == "wildcard":
                normal.extend(("*", p) for p in d.ports)
                cap_dsts.extend(self.r.host_text[i])
            elif a.kind == "autogroup" and a.value == "autogroup:self":
                if not node.is_tagged and node.user is not None:
                    self_ports.extend((t, p) for t in texts for p in d.ports)
            elif a.kind == "autogroup" and a.value == "autogroup:internet":
                continue  # exit traffic is not filtered by the exit node's packet filter
            elif a.kind in ("prefix", "host"):
                assert a.prefix is not None
                if info.rule.via and not self._matches_via(info, i):
                    continue  # only the named routers carry this traffic
                if _prefix_touches_node(a.prefix, node, routes):
                    normal.extend((format_prefix(a.prefix), p) for p in d.ports)
                    cap_dsts.append(str(a.prefix))
            elif i in self.r.resolve(a).nodes:
                normal.extend((t, p) for t in texts for p in d.ports)
                cap_dsts.extend(self.r.host_text[i])
        return normal, self_ports, cap_dsts

    def _matches_via(self, info: _RuleInfo, i: int) -> bool:
        return any(i in self.r.resolve(v).nodes for v in info.rule.via)

    def packet_filter(self, i: int) -> tuple[FilterRule, ...]:
        node = self.r.nodes[i]
        out: list[FilterRule] = []
        # Rules that end up with the same sources and protocols are sent as
        # one FilterRule (destinations concatenated, duplicates kept).
        merged: dict[tuple[tuple[str, ...], tuple[int, ...]], int] = {}

        def emit(
            src: tuple[str, ...],
            dst: list[tuple[str, PortRange]],
            protos: tuple[int, ...],
            grant: bool,
        ) -> None:
            key = (src, protos)
            at = merged.get(key)
            if at is not None:
                prev = out[at]
                out[at] = FilterRule(prev.src_ips, prev.dst_ports + tuple(dst), prev.ip_proto)
                return
            merged[key] = len(out)
            out.append(FilterRule(src, tuple(dst), protos))

        candidates = self._global_rules | self._rules_by_node.get(i, set())
        if not node.is_tagged and node.user is not None:
            candidates = candidates | self._self_rules
        for k in sorted(candidates):
            info = self.rules[k]
            rule = info.rule
            normal, self_ports, _ = self._dst_entries(info, i)
            if normal and info.src_text:
                emit(info.src_text, normal, rule.protos, rule.from_grant)
            if self_ports and node.user is not None:
                allowed = self._self_sources(info.srcs, node.user)
                if allowed:
                    emit(
                        self.r.render_src(info.srcs, restrict=allowed),
                        self_ports,
                        rule.protos,
                        rule.from_grant,
                    )
            if rule.caps:
                self._cap_rules(info, i, out)
        return tuple(out)

    def _cap_rules(self, info: _RuleInfo, i: int, out: list[FilterRule]) -> None:
        """CapGrant rules: the grant's capabilities on its destinations, and
        the companion capability (e.g. drive -> drive-sharer) on its sources."""
        r = self.r
        node = r.nodes[i]
        rule = info.rule
        mine = r.host_text[i]
        plain_dsts: list[str] = []
        self_dst = False
        for d in rule.dsts:
            a = d.alias
            if a.kind == "autogroup" and a.value == "autogroup:self":
                self_dst = True
            elif (
                a.kind == "wildcard"
                or (a.kind not in ("prefix", "host", "autogroup") and i in r.resolve(a).nodes)
                or (
                    a.kind == "autogroup"
                    and a.value != "autogroup:internet"
                    and i in r.resolve(a).nodes
                )
            ):
                plain_dsts.extend(mine)
            elif (
                a.kind in ("prefix", "host")
                and a.prefix is not None
                # capabilities are granted to nodes, not to the subnets behind them
                and _prefix_touches_node(a.prefix, node, ())
            ):
                plain_dsts.append(str(a.prefix))
        if plain_dsts and info.src_text:
            out.append(
                FilterRule(info.src_text, cap_grant=(CapGrant(tuple(plain_dsts), rule.caps),))
            )
        same_user: set[int] = set()
        if self_dst and not node.is_tagged and node.user is not None:
            same_user = self._self_sources(info.srcs, node.user)
            if same_user:
                out.append(
                    FilterRule(
                        r.render_src(info.srcs, restrict=same_user),
                        cap_grant=(CapGrant(mine, rule.caps),),
                    )
                )
        companions = tuple(
            (COMPANION_CAPS[name], ()) for name, _ in rule.caps if name in COMPANION_CAPS
        )
        if not companions:
            return
        if not r.src_contains_node(info.srcs, i):
            return
        # the reverse direction: this source node may be reached by the
        # grant's destinations for the companion capability
        rev = NodeSet()
        for d in rule.dsts:
            a = d.alias
            if a.kind == "autogroup" and a.value == "autogroup:self":
                continue
            rev.update(r.resolve(a))
        cmap = tuple((name, None) for name, _ in companions)
        if not rev.is_empty():
            out.append(FilterRule(r.render_src(rev), cap_grant=(CapGrant(mine, cmap),)))
        if self_dst and not node.is_tagged and node.user is not None:
            peers = self._self_sources(info.srcs, node.user)
            out.append(
                FilterRule(r.render_src(rev, restrict=peers), cap_grant=(CapGrant(mine, cmap),))
            )

    def _self_sources(self, srcs: NodeSet, user: str) -> set[int]:
        """The owner's devices among a rule's sources (for autogroup:self)."""
        return {
            j
            for j in self.r.nodes_by_user.get(user, [])
            if srcs.wildcard or j in srcs.nodes or self.r.src_contains_node(srcs, j)
        }

    # ---------------------------------------------------------------- peers
    #
    # Visible peers are computed from a per-policy index (built on first use):
    # for every rule, the nodes it names as sources (their addresses, or the
    # subnets they route), the nodes it lets those sources reach (addresses,
    # routes, exit function) and the nodes it concerns as a destination. Each
    # node then lists only the rules it takes part in, so its peer set costs
    # the size of the sets it is joined with, not (rules x nodes).

    def _nodes_in_prefix(self, prefix: IPNetwork) -> frozenset[int]:
        """Nodes with an address inside `prefix` (binary search over addresses)."""
        cached = self._prefix_nodes.get(prefix)
        if cached is not None:
            return cached
        if not self._addr_index:
            for version in (4, 6):
                pairs = sorted(
                    (int(a), j)
                    for j, addrs in enumerate(self.r.addrs)
                    for a in addrs
                    if a.version == version
                )
                self._addr_index[version] = ([a for a, _ in pairs], [j for _, j in pairs])
        keys, idx = self._addr_index[prefix.version]
        lo = bisect_left(keys, int(prefix.network_address))
        hi = bisect_right(keys, int(prefix.broadcast_address))
        out = self._intern(frozenset(idx[lo:hi]))
        self._prefix_nodes[prefix] = out
        return out

    def _routers_overlapping(self, prefix: IPNetwork) -> frozenset[int]:
        """Nodes with an approved (non-exit) subnet route overlapping `prefix`."""
        r = self.r
        return self._intern(
            frozenset(
                j
                for j in self._routers
                if any(
                    x.version == prefix.version and x.overlaps(prefix)
                    for x in r.approved[j]
                    if not is_exit_route(x)
                )
            )
        )

    def _intern(self, s: frozenset[int]) -> frozenset[int]:
        return self._interned.setdefault(s, s)

    def _via_targets(self, info: _RuleInfo, prefix: IPNetwork) -> tuple[set[int], list[_Via]]:
        """Routers named by `via` for a prefix: all become visible, and per
        route the best of them serves it for the rule's sources."""
        r = self.r
        direct: set[int] = set()
        best: dict[IPNetwork, int] = {}
        for j in sorted({k for v in info.rule.via for k in r.resolve(v).nodes}):
            for route in r.approved[j]:
                if (
                    is_exit_route(route)
                    or route.version != prefix.version
                    or not route.overlaps(prefix)
                ):
                    continue
                direct.add(j)
                cur = best.get(route)
                if cur is None or self._route_rank(j, route) < self._route_rank(cur, route):
                    best[route] = j
        return direct, [(j, route) for route, j in best.items()]

    def _route_rank(self, j: int, route: IPNetwork) -> tuple[int, int, int]:
        return (0 if route in self.r.primary[j] else 1, self.r.nodes[j].route_priority, j)

    def _build_peer_index(self) -> _PeerIndex:
        r = self.r
        n = len(r.nodes)
        all_nodes = self._intern(frozenset(range(n)))
        in_range_cache: list[frozenset[int]] = []

        def in_range() -> frozenset[int]:  # only wildcard sources need it: O(N)
            if not in_range_cache:
                in_range_cache.append(
                    self._intern(
                        frozenset(
                            j
                            for j in range(n)
                            if any(in_tailnet_range(a) for a in r.nodes[j].addresses)
                        )
                    )
                )
            return in_range_cache[0]

        with_routes = self._intern(frozenset(j for j in range(n) if r.approved[j]))
        exits = self._intern(frozenset(r.exit_nodes))
        empty: frozenset[int] = self._intern(frozenset())
        idx = _PeerIndex(n)
        for k, info in enumerate(self.rules):
            rule = info.rule
            srcs = info.srcs
            # sources: nodes by address, and routers whose subnets are covered
            s_direct = set(srcs.nodes)
            if srcs.wildcard:
                s_direct |= in_range()
            for p in srcs.prefixes:
                s_direct |= self._nodes_in_prefix(p)
            s_routes: set[int] = set()
            if srcs.wildcard:
                s_routes = {j for j in self._routers}
            else:
                for p in srcs.prefixes:
                    s_routes |= self._routers_overlapping(p)
            # what the sources may reach
            d_direct: set[int] = set()
            d_routes: set[int] = set()
            d_exits: frozenset[int] = empty
            has_self = False
            self_ports = False
            vias: list[_Via] = []
            targets: set[int] = set()
            for d in rule.dsts:
                a = d.alias
                concerns = bool(d.ports) or bool(rule.caps)
                if a.kind == "wildcard":
                    d_direct |= all_nodes
                    d_routes |= with_routes
                    d_exits = exits
                    if concerns:
                        targets |= all_nodes
                elif a.kind == "autogroup" and a.value == "autogroup:self":
                    has_self = True
                    self_ports = self_ports or bool(d.ports)
                elif a.kind == "autogroup" and a.value == "autogroup:internet":
                    d_exits = exits
                elif a.kind in ("prefix", "host"):
                    assert a.prefix is not None
                    touched = self._nodes_in_prefix(a.prefix) | self._routers_overlapping(a.prefix)
                    if rule.via:
                        via_direct, chosen = self._via_targets(info, a.prefix)
                        d_direct |= via_direct
                        vias.extend(chosen)
                        via_nodes = {j for v in rule.via for j in r.resolve(v).nodes}
                        touched = touched & via_nodes
                    else:
                        d_direct |= self._nodes_in_prefix(a.prefix)
                        d_routes |= self._routers_overlapping(a.prefix)
                    if concerns:
                        targets |= touched
                else:
                    nodes = r.resolve(a).nodes
                    d_direct |= nodes
                    if concerns:
                        targets |= nodes
            ks = _RulePeers(
                s_direct=self._intern(frozenset(s_direct)),
                s_routes=self._intern(frozenset(s_routes)),
                d_direct=self._intern(frozenset(d_direct)),
                d_routes=self._intern(frozenset(d_routes)),
                d_exits=d_exits,
                has_self=has_self,
                self_ports=self_ports,
                vias=tuple(vias),
                wildcard_src=srcs.wildcard,
            )
            idx.rules.append(ks)
            for j in ks.s_direct:
                idx.as_src[j].append(k)
            for j in ks.s_routes - ks.s_direct:
                idx.as_src_routes[j].append(k)
            for j in targets:
                idx.as_dst[j].append(k)
            if self_ports:
                idx.self_rules.append(k)
        return idx

    def _peer_index(self) -> _PeerIndex:
        if self._pidx is None:
            self._pidx = self._build_peer_index()
        return self._pidx

    def _user_nodes(self, user: str) -> frozenset[int]:
        cached = self._user_node_sets.get(user)
        if cached is None:
            cached = self._intern(frozenset(self.r.nodes_by_user.get(user, ())))
            self._user_node_sets[user] = cached
        return cached

    def visible_peers(self, i: int, pf: tuple[FilterRule, ...] = ()) -> PeerMap:
        """Peers node i may see: either side may open a connection to the
        other, directly or through subnet routes (`pf` is not needed)."""
        del pf
        r = self.r
        idx = self._peer_index()
        node = r.nodes[i]
        owner = node.user if not node.is_tagged else None
        mine_user = self._user_nodes(owner) if owner is not None else None
        # collect distinct sets first; identical sets are shared objects
        vis_sets: dict[int, frozenset[int]] = {}
        route_sets: dict[int, frozenset[int]] = {}
        exit_sets: dict[int, frozenset[int]] = {}
        vias: list[_Via] = []
        rules = idx.rules

        def add(into: dict[int, frozenset[int]], s: frozenset[int]) -> None:
            if s:
                into[id(s)] = s

        for k in idx.as_src[i]:
            kp = rules[k]
            add(vis_sets, kp.d_direct)
            add(vis_sets, kp.d_routes)
            add(route_sets, kp.d_routes)
            add(exit_sets, kp.d_exits)
            if kp.has_self and mine_user is not None:
                add(vis_sets, mine_user)
            vias.extend(kp.vias)
        for k in idx.as_src_routes[i]:
            kp = rules[k]
            add(vis_sets, kp.d_direct)
            add(vis_sets, kp.d_routes)
            add(route_sets, kp.d_routes)
            if kp.has_self and mine_user is not None:
                add(vis_sets, mine_user)
        for k in idx.as_dst[i]:
            kp = rules[k]
            add(vis_sets, kp.s_direct)
            add(vis_sets, kp.s_routes)
            add(route_sets, kp.s_routes)
        if mine_user is not None:
            for k in idx.self_rules:
                kp = rules[k]
                if kp.wildcard_src:
                    add(vis_sets, mine_user)
                else:
                    add(vis_sets, mine_user & kp.s_direct)
        visible: set[int] = set().union(*vis_sets.values()) if vis_sets else set()
        visible.discard(i)
        route_peers: set[int] = set().union(*route_sets.values()) if route_sets else set()
        exit_peers: frozenset[int] | set[int] = (
            set().union(*exit_sets.values()) if exit_sets else frozenset()
        )
        # routers serving the same subnet as this node always show it (HA peers)
        mine = [x for x in r.approved[i] if not is_exit_route(x)]
        if mine:
            for j in self._routers:
                if j in visible and any(
                    p.version == m.version and p.overlaps(m) for p in r.primary[j] for m in mine
                ):
                    route_peers.add(j)
        via_extra: dict[int, list[str]] = {}
        if vias:
            # a route this node may also reach without `via` is served by its
            # ordinary primary; `via` only picks the router otherwise
            regular = {str(p) for j in route_peers for p in r.primary[j]}
            for j, route in vias:
                text = str(route)
                if text not in regular:
                    via_extra.setdefault(j, []).append(text)
        v6_only = len(self.wire_addresses(i)) < len(node.addresses)
        # most peers are plain (no routes, exit or `via` extras): their
        # PeerView is shared; the others are patched in afterwards
        special = (route_peers | set(exit_peers) | via_extra.keys()) & visible
        if v6_only:
            special = visible
        views: dict[int, PeerView] = {}
        for j in special:
            in_routes = j in route_peers
            in_exits = j in exit_peers
            extra = via_extra.get(j)
            if extra is None and not v6_only:
                key = (j, in_routes, in_exits)
                pv = self._peer_views.get(key)
                if pv is None:
                    pv = self._peer_view(j, in_routes, in_exits, None, False)
                    self._peer_views[key] = pv
            else:
                pv = self._peer_view(j, in_routes, in_exits, extra, v6_only)
            views[j] = pv
        return PeerMap(visible, views, self)

    def base_view(self, j: int) -> PeerView:
        """Node j as a plain peer (its addresses only); shared by all viewers."""
        pv = self._base[j]
        if pv is None:
            pv = self._base[j] = self._peer_view(j, False, False, None, False)
        return pv

    def _peer_view(
        self, j: int, in_routes: bool, in_exits: bool, extra: list[str] | None, v6_only: bool
    ) -> PeerView:
        r = self.r
        n = r.nodes[j]
        allowed = list(self.wire_host_text(j, v6_only))
        prim: list[str] = [str(p) for p in r.primary[j]] if in_routes else []
        for text in extra or ():
            if text not in prim:
                prim.append(text)
        allowed += prim
        if in_exits:
            allowed += [str(p) for p in r.approved[j] if is_exit_route(p)]
        return PeerView(n.name, tuple(allowed), tuple(prim), n.tags)

    # ---------------------------------------------------------------- self

    def wire_addresses(self, j: int) -> tuple[IPAddress, ...]:
        """A node's addresses as announced; `disable-ipv4` drops the IPv4 one."""
        n = self.r.nodes[j]
        if j not in self._no_ipv4_checked:
            self._no_ipv4_checked[j] = has_attr(self, j, "disable-ipv4")
        if self._no_ipv4_checked[j]:
            return tuple(a for a in n.addresses if a.version == 6)
        return n.addresses

    def wire_host_text(self, j: int, v6_only: bool = False) -> tuple[str, ...]:
        """`wire_addresses(j)` as host prefixes; `v6_only` keeps IPv6 only
        (what a node without IPv4 is told about its peers)."""
        texts = self.r.host_text[j]
        if v6_only or len(self.wire_addresses(j)) < len(self.r.addrs[j]):
            return tuple(t for a, t in zip(self.r.addrs[j], texts, strict=True) if a.version == 6)
        return texts

    def self_view(self, i: int) -> SelfView:
        n = self.r.nodes[i]
        addrs = self.wire_host_text(i)
        allowed = addrs + tuple(str(p) for p in self.r.approved[i])
        return SelfView(
            addrs,
            allowed,
            tuple(str(p) for p in self.r.primary[i]),
            n.tags,
            self_cap_map(self, i),
        )

    # ---------------------------------------------------------------- API

    def primary_routers(self) -> frozenset[str]:
        """Names of the nodes elected primary for at least one subnet route."""
        return frozenset(
            n.name for n, routes in zip(self.r.nodes, self.r.primary, strict=True) if routes
        )

    def release(self) -> None:
        """Drop the per-node caches. The server calls this when a compilation
        leaves service: its cached views refer back to it (a reference
        cycle), so without this a replaced compilation waits for a full
        garbage collection, or forever once frozen (gcstats.py). A view still
        held elsewhere keeps working: the caches refill on use."""
        self._cache = {}
        self._pidx = None
        self._peer_views = {}
        self._base = [None] * len(self.r.nodes)
        self._prefix_nodes = {}
        self._user_node_sets = {}
        self._interned = {}

    def node(self, name: str) -> NodeView:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        i = self.r.index[name]
        pf = self.packet_filter(i)
        view = NodeView(
            name, pf, self.visible_peers(i, pf), ssh_policy_for(self, i), self.self_view(i)
        )
        self._cache[name] = view
        return view


def compile_for(policy: Policy, topology: Topology) -> CompiledPolicy:
    return CompiledPolicy(policy, topology)
