"""Thousands of simulated nodes in one event loop, timing when changes arrive.

Each `BenchNode` is a `SimNode` (one Noise connection per node, like a real
tailscaled) that decodes every map frame but keeps only what the harness
checks: per peer its endpoints and online flag. Keeping whole peer objects
would cost O(N²) memory in the *generator* (10k nodes x 10k peers).

A `Probe` watches one change (a join, an endpoint change, a leave) until every
node that should see it has seen it; each node reports each peer it was told
about to the swarm right after applying a message, so the receipt time is
taken when the frame has been decoded and applied, as a client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..sim.client import NoiseH2Client, SimNode

SOURCE_ADDRESSES = 40  # 127.0.0.2..41: each (src, dst) pair has ~28k ephemeral ports
RECONNECT_BACKOFF_S = (0.05, 0.5)  # first retry delay range; doubles up to the cap
RECONNECT_BACKOFF_CAP_S = 2.0
CONNECT_TIMEOUT_S = 60.0  # generous: the generator shares cores with the server


def has_new_ports(packet_filter: list[dict[str, Any]] | None) -> bool:
    """The policy-change scenario's marker: a port range starting at 1
    (the bench policies start with `*`, rendered 0-65535)."""
    return any(
        p.get("Ports", {}).get("First") == 1
        for rule in packet_filter or ()
        for p in rule.get("DstPorts") or ()
    )


@dataclass
class PolicyProbe:
    """A policy change, until every expected node applied a filter with the marker."""

    expected: set[int]
    t0: float = field(default_factory=time.monotonic)
    receipts: dict[int, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, node: BenchNode, packet_filter: Any, now: float) -> None:
        if node.node_id in self.receipts or not has_new_ports(packet_filter):
            return
        self.receipts[node.node_id] = now
        if self.expected <= self.receipts.keys():
            self.done.set()

    def latencies(self) -> list[float]:
        return [t - self.t0 for v, t in self.receipts.items() if v in self.expected]


@dataclass
class Probe:
    kind: str  # "join" | "endpoint" | "leave"
    target: int | None  # None for a join until registration tells us the id
    check: Callable[[BenchNode, int], bool]
    t0: float = field(default_factory=time.monotonic)
    expected: set[int] | None = None
    receipts: dict[int, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, viewer: BenchNode, pid: int, now: float) -> None:
        if viewer.node_id in self.receipts:
            return
        if self.target is not None and pid != self.target:
            return
        if self.check(viewer, pid):
            self.receipts[viewer.node_id] = now
            self._maybe_done()

    def expect(self, viewers: set[int]) -> None:
        self.expected = viewers
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.expected is not None and self.expected <= self.receipts.keys():
            self.done.set()

    def latencies(self) -> list[float]:
        """Per-viewer delay in seconds, only for viewers that were expected."""
        want = self.expected or set()
        return [t - self.t0 for v, t in self.receipts.items() if v in want]


class BenchNode(SimNode):
    def __init__(self, hostname: str, swarm: Swarm, group: int = 0) -> None:
        super().__init__(hostname)
        self.swarm = swarm
        self.group = group  # the enrolment key (policy tag) it joined with
        self.node_id = 0
        self.peer_eps: dict[int, tuple[str, ...]] = {}
        self.peer_online: dict[int, bool | None] = {}
        self.full_maps = 0
        self.first_map_at = 0.0
        self.map_ready = asyncio.Event()

    def apply(self, msg: dict[str, Any]) -> None:
        now = time.monotonic()
        self.messages += 1
        if msg.get("KeepAlive"):
            return
        node = msg.get("Node")
        if node:
            self.node_id = int(node["ID"])
            self.swarm.group_of[self.node_id] = self.group
        if "PacketFilter" in msg and self.swarm.policy_probe is not None:
            self.swarm.policy_probe.note(self, msg["PacketFilter"], now)
        touched: list[int] = []
        if "DERPMap" in msg:  # only the first message of a stream carries the DERP map
            self.peer_eps = {}
            self.peer_online = {}
            for p in msg.get("Peers") or []:
                self.peer_eps[p["ID"]] = tuple(p.get("Endpoints") or ())
                self.peer_online[p["ID"]] = p.get("Online")
            self.full_maps += 1
            self.first_map_at = now
            self.map_ready.set()
        else:
            for pid in msg.get("PeersRemoved") or []:
                self.peer_eps.pop(pid, None)
                self.peer_online.pop(pid, None)
                touched.append(pid)
            for p in msg.get("PeersChanged") or []:
                self.peer_eps[p["ID"]] = tuple(p.get("Endpoints") or ())
                self.peer_online[p["ID"]] = p.get("Online")
                touched.append(p["ID"])
            for patch in msg.get("PeersChangedPatch") or []:
                pid = patch["NodeID"]
                if pid not in self.peer_eps:
                    continue
                if "Endpoints" in patch:
                    self.peer_eps[pid] = tuple(patch["Endpoints"] or ())
                if "Online" in patch:
                    self.peer_online[pid] = patch["Online"]
                touched.append(pid)
        self.last_update_at = now
        self.updated.set()
        probe = self.swarm.probe
        if probe is not None and self.node_id:
            for pid in touched:
                probe.note(self, pid, now)

    @property
    def connected(self) -> bool:
        return self.map_ready.is_set() and not self.conn.closed.is_set()


@dataclass
class JoinTiming:
    connect_s: float  # TCP + HTTP upgrade + Noise handshake
    register_s: float  # /machine/register request to response
    first_map_s: float  # first byte sent to first full map applied


class Swarm:
    def __init__(self, port: int, server_key: bytes, auth_keys: list[str]) -> None:
        """`auth_keys`: one key (allow-all) or one per policy group; node i of a
        bring-up joins group i mod len(auth_keys)."""
        self.host = "127.0.0.1"
        self.port = port
        self.server_key = server_key
        self.auth_keys = auth_keys
        self.group_of: dict[int, int] = {}  # node id -> group, as the policy sees it
        self.nodes: list[BenchNode] = []
        self.probe: Probe | None = None
        self.policy_probe: PolicyProbe | None = None
        self.failed_joins: list[str] = []  # one bring-up failure must not void the size
        self._next_src = 0

    def _source(self) -> tuple[str, int]:
        self._next_src += 1
        return (f"127.0.0.{2 + self._next_src % SOURCE_ADDRESSES}", 0)

    def by_id(self) -> dict[int, BenchNode]:
        return {n.node_id: n for n in self.nodes if n.node_id}

    def visible(self, viewer: int, node: int) -> bool:
        """The bench policies' rule, evaluated on the client side."""
        return len(self.auth_keys) == 1 or self.group_of.get(viewer) == self.group_of.get(node)

    def viewers_of(self, node_id: int) -> set[int]:
        return {
            n.node_id
            for n in self.nodes
            if n.connected and n.node_id != node_id and self.visible(n.node_id, node_id)
        }

    async def join(
        self, name: str, group: int = 0, connected: Callable[[], None] | None = None
    ) -> tuple[BenchNode, JoinTiming]:
        """Connect, register, open the map stream; `connected` is called just
        before the registration is sent (where a join probe's clock starts)."""
        group %= len(self.auth_keys)
        node = BenchNode(name, self, group)
        t0 = time.monotonic()
        await asyncio.wait_for(
            node.connect(self.host, self.port, self.server_key, self._source()), CONNECT_TIMEOUT_S
        )
        if connected is not None:
            connected()
        t1 = time.monotonic()
        resp = await node.register(self.auth_keys[group])
        t2 = time.monotonic()
        if not resp.get("MachineAuthorized"):
            raise RuntimeError(f"registration refused: {resp}")
        status = await node.start_map()
        if status != 200:
            raise RuntimeError(f"map stream refused: HTTP {status}")
        await asyncio.wait_for(node.map_ready.wait(), CONNECT_TIMEOUT_S)
        self.nodes.append(node)
        return node, JoinTiming(t1 - t0, t2 - t1, node.first_map_at - t0)

    async def bring_up(self, count: int, concurrency: int, prefix: str = "n") -> list[JoinTiming]:
        sem = asyncio.Semaphore(concurrency)
        timings: list[JoinTiming] = []

        async def one(i: int) -> None:
            async with sem:
                try:
                    _, t = await self.join(f"{prefix}{i}", i)
                except Exception as exc:
                    self.failed_joins.append(f"{type(exc).__name__}: {exc}")
                    return
                timings.append(t)

        await asyncio.gather(*(one(i) for i in range(count)))
        return timings

    async def run_probe(self, probe: Probe, action: Callable[[], Any], timeout: float) -> Probe:
        """Install the probe, do the change, wait until every expected viewer saw it."""
        self.probe = probe
        probe.t0 = time.monotonic()
        try:
            await action()
            if probe.expected is None and probe.target is not None:
                probe.expect(self.viewers_of(probe.target))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe.done.wait(), timeout)
        finally:
            self.probe = None
        return probe

    async def reconnect_all(self, deadline_s: float) -> dict[int, float]:
        """Every node whose connection dropped dials again with jittered,
        doubling back-off and re-opens its map stream; returns when each
        node got a new full map (node id -> monotonic time)."""
        got: dict[int, float] = {}
        # per node: (connected, map headers received) of the successful attempt
        self.storm_phases: dict[int, tuple[float, float]] = {}

        async def one(node: BenchNode) -> None:
            await node.conn.closed.wait()
            with contextlib.suppress(Exception):
                await node.close()
            before = node.full_maps
            delay = random.uniform(*RECONNECT_BACKOFF_S)  # noqa: S311
            while True:
                node.conn = NoiseH2Client(node.machine, node.capver)
                node.map_ready.clear()
                try:
                    await asyncio.wait_for(
                        node.connect(self.host, self.port, self.server_key, self._source()), 10
                    )
                    t_conn = time.monotonic()
                    if await node.start_map() == 200:
                        t_head = time.monotonic()
                        await asyncio.wait_for(node.map_ready.wait(), 60)
                        if node.full_maps > before:
                            got[node.node_id] = node.first_map_at
                            self.storm_phases[node.node_id] = (t_conn, t_head)
                            return
                except Exception:  # noqa: S110 - any failure means: back off and dial again
                    pass
                with contextlib.suppress(Exception):
                    await node.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_BACKOFF_CAP_S)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(n) for n in self.nodes)), deadline_s)
        return got

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)
