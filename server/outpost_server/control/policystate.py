"""The current policy, compiled against the current tailnet, for map building.

Theory of operation
-------------------
`PolicyState` holds the parsed policy (or none: then every node may reach
every node, the default until an administrator sets one) and a compilation
of it against a `Topology` built from the store. Compilation is lazy: a
change that affects the topology as the policy sees it (a node joining or
leaving, its tags, owner, advertised or approved routes) only marks the
state stale and bumps `generation`; the first reader recompiles. Endpoint,
disco-key and online changes never touch it (bar HA routers, below).

Per-node answers (packet filter, visible peers, SSH policy, self view) come
from the compiled policy's per-node cache, so each is computed once per
generation, on first use by that node's map session.

Who must hear of a topology change (`settle`): the changes since the last
notification are collected and, in one step scheduled right after the write
(so a registration never waits for a compilation), turned into the set of
nodes whose view may differ: each changed node and its viewers before and
after (visibility is symmetric: either side may open a connection, the rule
the recorded control-plane captures show without exception). Only those
sessions re-evaluate their view. A change that involves subnet routes or exit
nodes can move a primary route anybody sees, so it notifies everyone, as does
a new policy text.

HA subnet routers: of several nodes serving the same approved subnet route,
one is primary (in peers' PrimaryRoutes and AllowedIPs). Like Tailscale's
control plane, the first registered (lowest node id) router wins, and a
primary keeps the route for as long as it stays online: an offline router
yields to the online ones, and one that comes back does not take the route
back from the router that replaced it. The engine elects by
`TopoNode.route_priority`; `_route_priority` folds (offline, not the current
primary, node id) into it. Once `track_liveness` is called (the Fanout does,
its map sessions being what "online" means), a router that shares a route
with another one going on- or offline marks the state stale; other online
changes still never touch it.

Users are referenced in policies as `name@` (or by their full name when it is
an e-mail address); nodes are identified to the engine by their id.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..policy import (
    CompiledPolicy,
    NodeView,
    Policy,
    PolicyError,
    Topology,
    TopoNode,
    TopoUser,
    compile_for,
    load_policy,
    run_policy_tests,
)
from ..state.model import Node, NodeChange, NodeId
from ..state.store import Store
from .mapper import ALLOW_ALL_FILTER

# Node fields whose change alters the topology the policy engine sees.
TOPOLOGY_FIELDS = frozenset({"tags", "user_id", "approved_routes", "ipv4", "ipv6"})
# A topology change reaches the compilation (and the sessions) within this,
# even when recompiling is slow: see `mark_stale`.
MAX_SETTLE_DELAY_S = 0.25
SSH_CAP = "https://tailscale.com/cap/ssh"  # lets `tailscale up --ssh` enable the SSH server


# route_priority = (offline * 2 + not_incumbent) * _ID_SPAN + node id
_ID_SPAN = 1 << 48


def topo_name(node_id: NodeId) -> str:
    return f"n{node_id}"


@dataclass(frozen=True)
class Verdict:
    """What `check` says of a candidate policy."""

    policy: Policy
    compiled: CompiledPolicy


class PolicyState:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.policy: Policy | None = None
        self.generation = 0
        self._compiled: CompiledPolicy | None = None
        self._compiled_gen = -1
        # Called with the ids whose view may have changed, or None for everyone.
        self.on_stale: list[Callable[[frozenset[NodeId] | None], None]] = []
        # Topology changes not yet notified: node ids, or None once everyone is due.
        self._pending: set[NodeId] | None = set()
        self._settle_scheduled = False
        # The compilation the last notification was made against: the "before"
        # side of the next one (who saw a node that has since left).
        self._notified: CompiledPolicy | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._compile_s = 0.0  # how long the last recompilation took
        self._settled_at = 0.0  # loop time of the last settle
        # None: liveness not tracked, every node counts as online
        self._online: set[NodeId] | None = None
        # nodes primary for some subnet route in the compilation in force
        self._incumbents: frozenset[NodeId] = frozenset()
        # node id -> (what the engine reads of the node, its TopoNode)
        self._topo_nodes: dict[NodeId, tuple[tuple[Any, ...], TopoNode]] = {}
        # the last topology built and its node ids in order; and the node id
        # of each topology index of the compilation in force
        self._topo_ids: tuple[Topology | None, list[NodeId]] = (None, [])
        self._ids: list[NodeId] = []
        record = store.current_policy()
        if record is not None:
            self.policy = load_policy(record.text)
        store.subscribe(self._on_change)

    # ------------------------------------------------------------- topology
    def topology(self) -> Topology:
        """The tailnet as the engine sees it. A node's TopoNode is reused while
        what the engine reads of it is unchanged, so the engine's per-node
        derived values (address texts, ...) survive a recompilation: after
        one join, recompiling costs little per unchanged node."""
        store = self._store
        users = tuple(
            TopoUser(id=u.id, name=u.name, email=u.name if "@" in u.name else "")
            for u in store.users().values()
        )
        names = {u.id: u.name for u in store.users().values()}
        prev = self._topo_nodes
        cache: dict[NodeId, tuple[tuple[Any, ...], TopoNode]] = {}
        nodes = []
        for n in sorted(store.nodes().values(), key=lambda n: n.id):
            user = names.get(n.user_id) if n.user_id is not None and not n.tags else None
            priority = self._route_priority(n.id)
            key = (
                n.ipv4, n.ipv6, user, n.tags, n.approved_routes, n.hostinfo_json, n.given_name, priority,
            )  # fmt: skip
            hit = prev.get(n.id)
            if hit is not None and hit[0] == key:
                topo = hit[1]
            else:
                topo = TopoNode(
                    name=topo_name(n.id),
                    ipv4=n.ipv4,
                    ipv6=n.ipv6,
                    user=user,
                    tags=n.tags,
                    routable_ips=_networks(n.advertised_routes()),
                    approved_routes=_networks(n.approved_routes),
                    hostname=n.given_name,
                    route_priority=priority,
                )
            cache[n.id] = (key, topo)
            nodes.append(topo)
        self._topo_nodes = cache
        topology = Topology(users=users, nodes=tuple(nodes))
        self._topo_ids = (topology, [n.id for n in sorted(store.nodes().values(), key=lambda n: n.id)])
        return topology

    def _route_priority(self, node_id: NodeId) -> int:
        """Lower wins an HA election: online first, then the sitting primary,
        then the first registered."""
        offline = self._online is not None and node_id not in self._online
        challenger = node_id not in self._incumbents
        return (2 * offline + challenger) * _ID_SPAN + int(node_id)

    def _retire(self, old: CompiledPolicy | None) -> None:
        """`old` left service: break its cycles unless it is still in use."""
        if old is not None and old is not self._compiled and old is not self._notified:
            old.release()

    def _set_in_force(self, compiled: CompiledPolicy) -> None:
        old, self._compiled = self._compiled, compiled
        self._retire(old)
        self._compiled_gen = self.generation
        built, ids = self._topo_ids
        if built is not compiled.topology:
            ids = [NodeId(int(n.name[1:])) for n in compiled.topology.nodes]
        self._ids = ids
        self._incumbents = frozenset(NodeId(int(name[1:])) for name in compiled.primary_routers())

    # ------------------------------------------------------------- liveness
    def track_liveness(self) -> None:
        """From now on `node_online` reports liveness; nobody is online yet."""
        if self._online is None:
            self._online = set()

    def node_online(self, node_id: NodeId, online: bool) -> None:
        if self._online is None:
            return
        if (node_id in self._online) == online:
            return
        if online:
            self._online.add(node_id)
        else:
            self._online.discard(node_id)
        if self._shares_a_route(node_id):
            self.mark_stale(None)  # a primary may move: anyone may see it

    def _shares_a_route(self, node_id: NodeId) -> bool:
        """Does another node advertise one of this node's subnet routes?"""
        nodes = self._store.nodes()
        node = nodes.get(node_id)
        if node is None:
            return False
        mine = {r for r in node.advertised_routes() if not r.endswith("/0")}
        if not mine:
            return False
        return any(
            nid != node_id and not mine.isdisjoint(other.advertised_routes())
            for nid, other in nodes.items()
        )

    def _on_change(self, change: NodeChange) -> None:
        now = self._store.nodes().get(change.node_id)
        before = change.before

        def scope() -> tuple[NodeId, ...] | None:
            """Who may see this change: a router's can move a primary anyone sees.
            (Only asked for topology changes: endpoint updates, the common case,
            never parse Hostinfo here.)"""
            router = any(
                n is not None and bool(n.approved_routes or n.advertised_routes())
                for n in (before, now)
            )
            return None if router else (change.node_id,)

        if change.kind in ("added", "removed"):
            if change.kind == "removed" and self._online is not None:
                self._online.discard(change.node_id)  # ids can be reused
            self.mark_stale(scope())
            return
        fields = change.fields
        if fields & TOPOLOGY_FIELDS:
            self.mark_stale(scope())
        elif "hostinfo_json" in fields and before is not None:
            if now is not None and now.advertised_routes() != before.advertised_routes():
                self.mark_stale(None)

    def mark_stale(self, nodes: Iterable[NodeId] | None = None) -> None:
        """The topology changed for `nodes` (None: in a way anyone may see)."""
        self.generation += 1
        if self.policy is None:
            # Allow-all: visibility and filters do not depend on the topology,
            # so joins and leaves travel the ordinary delta path alone.
            return
        if nodes is None:
            self._pending = None
        elif self._pending is not None:
            self._pending.update(nodes)
        if self._settle_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (tools, unit tests): at once
            self.settle()
            return
        self._settle_scheduled = True
        # Recompiling costs O(tailnet) (~0.1 s at 10k nodes): keep it to at
        # most about half the loop's time, so a burst of joins (bring-up, a
        # reconnect storm) shares one compilation instead of one each.
        delay = self._settled_at + self._compile_s - loop.time()
        if delay > 0:
            loop.call_later(min(delay, MAX_SETTLE_DELAY_S), self.settle)
        else:
            loop.call_soon(self.settle)

    def settle(self) -> None:
        """Recompile, and notify the sessions whose view the pending changes may alter."""
        self._settle_scheduled = False
        pending, self._pending = self._pending, set()
        before = self._notified
        t = time.monotonic()
        stale = self._compiled_gen != self.generation
        after = self.compiled(fresh=True)
        if stale:
            self._compile_s = time.monotonic() - t
        self._settled_at = _loop_time()
        self._notified = after
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if pending is not None and not pending:
            self._retire(before)
            return
        if pending is None or before is None:  # nothing to compare with: everyone
            affected = None
        else:
            affected = self._affected(pending, before, after)
        self._retire(before)
        for cb in self.on_stale:
            cb(affected)

    @staticmethod
    def _affected(
        nodes: set[NodeId], before: CompiledPolicy | None, after: CompiledPolicy | None
    ) -> frozenset[NodeId]:
        out = set(nodes)
        for compiled in (before, after):
            if compiled is None:
                continue
            for nid in nodes:
                try:
                    view = compiled.node(topo_name(nid))
                except KeyError:  # not in that compilation (joined after / left before)
                    continue
                out.update(NodeId(int(name[1:])) for name in view.visible_peers)
        return frozenset(out)

    def compiled(self, fresh: bool = False) -> CompiledPolicy | None:
        """The compilation in force. Between a topology change and the settle
        that follows it (at most MAX_SETTLE_DELAY_S) that is the previous one,
        unless `fresh` is asked for; map sessions are told when it changes."""
        if self.policy is None:
            return None
        if self._compiled is None or (fresh and self._compiled_gen != self.generation):
            self._set_in_force(compile_for(self.policy, self.topology()))
        return self._compiled

    async def settled(self) -> None:
        """Return once the compilation in force covers every change so far
        (a new node's first map waits here rather than compile on its own)."""
        if self.policy is None or self._compiled_gen == self.generation:
            return
        if not self._settle_scheduled:
            self.settle()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    # ------------------------------------------------------------ changing it
    def check(self, text: str) -> Verdict:
        """Parse, compile against the live tailnet and run the policy's tests."""
        policy = load_policy(text)
        compiled = compile_for(policy, self.topology())
        run_policy_tests(compiled)
        return Verdict(policy, compiled)

    def apply(self, verdict: Verdict) -> None:
        self.policy = verdict.policy
        self.generation += 1
        old_notified, self._notified = self._notified, verdict.compiled
        self._set_in_force(verdict.compiled)
        self._retire(old_notified)
        self._pending = set()
        for cb in self.on_stale:
            cb(None)

    # ---------------------------------------------------------- per node
    def view(self, node_id: NodeId, fresh: bool = False) -> NodeView | None:
        compiled = self.compiled(fresh)
        if compiled is None:
            return None
        try:
            return compiled.node(topo_name(node_id))
        except KeyError:  # joined after this compilation; stale already marked
            return None

    def visible(self, viewer: NodeId, node: NodeId) -> bool:
        if self.policy is None:  # hot path: every change asks this per viewer
            return True
        view = self.view(viewer)
        return view is not None and topo_name(node) in view.visible_peers

    def peer_view(self, viewer: NodeId, peer: NodeId) -> Any:
        """What the policy makes of `peer` for `viewer` (a comparable value), or None."""
        view = self.view(viewer)
        return None if view is None else view.visible_peers.get(topo_name(peer))

    def visible_ids(self, viewer: NodeId) -> set[NodeId] | None:
        """The peers `viewer` may see, or None for "everyone" (no policy)."""
        if self.policy is None:
            return None
        view = self.view(viewer)
        if view is None:
            return set()
        ids = self._ids
        return {ids[j] for j in view.visible_peers.indices}

    def peer_views(self, viewer: NodeId) -> list[tuple[NodeId, Any]] | None:
        """Every peer `viewer` may see with the policy's view of it (AllowedIPs,
        PrimaryRoutes), or None without a policy. One lookup of the viewer,
        none per peer: a policy change walks every session's peers."""
        if self.policy is None:
            return None
        view = self.view(viewer)
        if view is None:
            return []
        ids = self._ids
        return [(ids[j], pv) for j, pv in view.visible_peers.by_index()]

    def packet_filter(self, node_id: NodeId) -> list[dict[str, Any]]:
        if self.policy is None:
            return ALLOW_ALL_FILTER
        view = self.view(node_id)
        return [] if view is None else [r.to_json() for r in view.packet_filter]

    def ssh_policy(self, node_id: NodeId) -> dict[str, Any] | None:
        view = self.view(node_id)
        if view is None or view.ssh_policy is None:
            return None
        out: dict[str, Any] = view.ssh_policy.to_json()
        return out

    def peer_overlay(self, viewer: NodeId, peer: Node) -> dict[str, Any]:
        """AllowedIPs / PrimaryRoutes of `peer` as `viewer` sees it."""
        view = self.view(viewer)
        if view is None:
            return {}
        try:
            pv = view.visible_peers[topo_name(peer.id)]
        except KeyError:
            return {}
        out: dict[str, Any] = {"AllowedIPs": list(pv.allowed_ips)}
        if pv.primary_routes:
            out["PrimaryRoutes"] = list(pv.primary_routes)
        return out

    def self_overlay(self, node_id: NodeId) -> dict[str, Any]:
        view = self.view(node_id)
        cap_map: dict[str, Any] = {SSH_CAP: []}
        if view is None:
            return {"CapMap": cap_map}
        sv = view.self_view
        cap_map.update(sv.cap_map)
        out: dict[str, Any] = {"AllowedIPs": list(sv.allowed_ips), "CapMap": cap_map}
        if sv.primary_routes:
            out["PrimaryRoutes"] = list(sv.primary_routes)
        return out


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0


def _networks(routes: tuple[str, ...]) -> tuple[Any, ...]:
    out = []
    for r in routes:
        try:
            out.append(ipaddress.ip_network(r, strict=False))
        except ValueError:
            continue
    return tuple(out)


__all__ = ["PolicyError", "PolicyState", "Verdict"]
