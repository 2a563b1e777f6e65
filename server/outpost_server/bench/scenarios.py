"""One benchmark run at one size: bring-up, registration, fan-out, idle, storm.

Order of a run (server in its own process, fresh data directory):
1. bulk: N - probes nodes register and open map streams, `concurrency` at a time;
2. memory: server RSS after settling, minus RSS before the bulk, per node;
3. join probes: one at a time, a new node connects, registers (timed alone,
   so this is the registration latency *at* N nodes) and maps; the change is
   timed until every peer that may see it has it;
4. endpoint probes: a random node sends a lite update with new endpoints;
5. leave probes: the probe nodes disconnect one at a time (peers see Online=false);
6. idle: server CPU over `idle_s` with nothing but keep-alives;
7. reconnect storm: SIGTERM, restart on the same port and data, until every
   node applied a new full map;
8. policy change (last, so that at allow-all the idle window and the storm
   ran with no policy at all): a new policy text through the admin API
   (every node's filter changes, visibility does not), until every connected
   node applied a packet filter with the new port range.

Visibility: `group` 0 runs with no policy (allow-all); `group` G gives the
server a real policy of ceil(N/G) disjoint tag groups (`serve.group_policy`),
so each node sees about G-1 peers, through the policy engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import gcstats
from ..sim.client import fetch_server_key
from .procstat import ServerProcess
from .serve import allow_all_policy, group_policy
from .swarm import BenchNode, PolicyProbe, Probe, Swarm

PROBE_TIMEOUT_S = 60.0
POLICY_TIMEOUT_S = 120.0
SETTLE_S = 3.0  # let writes and GC settle before reading RSS


@dataclass
class SizeResult:
    nodes: int
    group: int  # 0 = allow-all, else a policy of disjoint groups of about `group` nodes
    bulk_register_s: list[float] = field(default_factory=list)
    bulk_first_map_s: list[float] = field(default_factory=list)
    bulk_wall_s: float = 0.0
    bulk_failed: int = 0
    register_s: list[float] = field(default_factory=list)
    first_map_s: list[float] = field(default_factory=list)
    fanout_s: dict[str, list[float]] = field(default_factory=dict)  # kind -> per-probe last receipt
    fanout_peer_s: dict[str, list[float]] = field(default_factory=dict)  # kind -> every receipt
    fanout_missing: dict[str, int] = field(default_factory=dict)
    policy_s: float | None = None  # admin request -> last node applied the new filter
    policy_node_s: list[float] = field(default_factory=list)  # every node's receipt
    policy_missing: int = 0
    policy_nodes: int = 0
    rss_base: int = 0
    rss_loaded: int = 0
    idle_s: float = 0.0
    idle_cpu_s: float = 0.0
    idle_nodes: int = 0
    storm_s: float | None = None  # SIGTERM to last node with a new full map
    storm_from_ready_s: float | None = None
    storm_reconnected: int = 0
    storm_node_s: list[float] = field(default_factory=list)  # from ready, each node, sorted
    storm_nodes: int = 0
    storm_server_cpu_s: float = 0.0  # the restarted server's CPU until every node is back
    storm_loadgen_cpu_s: float = 0.0  # this (load generator) process's CPU over the storm
    notes: list[str] = field(default_factory=list)
    # the server's garbage-collector figures (/v1/status runtime.gc) after the
    # probes and at the end of the size
    gc_probes: dict[str, Any] | None = None
    gc_end: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_size(
    nodes: int,
    *,
    group: int = 0,
    probes: int = 20,
    concurrency: int = 32,
    idle_s: float = 60.0,
    storm: bool = True,
    log: Any = print,
) -> SizeResult:
    res = SizeResult(nodes=nodes, group=group)
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as tmp:
        groups = -(-nodes // group) if group else 0
        server = ServerProcess(Path(tmp) / "data", free_port(), groups)
        await server.start(make_key=True)
        try:
            key = await fetch_server_key("127.0.0.1", server.port)
            swarm = Swarm(server.port, key, server.keys)
            await asyncio.sleep(1.0)
            res.rss_base = server.sample().rss_bytes

            bulk = max(0, nodes - probes)
            log(f"[{nodes}] bringing up {bulk} nodes ({concurrency} at a time)")
            t = time.monotonic()
            timings = await swarm.bring_up(bulk, concurrency)
            res.bulk_wall_s = time.monotonic() - t
            res.bulk_register_s = [x.register_s for x in timings]
            res.bulk_first_map_s = [x.first_map_s for x in timings]
            res.bulk_failed = len(swarm.failed_joins)
            if swarm.failed_joins:
                res.notes.append(
                    f"{nodes} nodes: {res.bulk_failed} joins failed, first: {swarm.failed_joins[0]}"
                )
            log(f"[{nodes}] bulk done in {res.bulk_wall_s:.1f} s")
            # The load generator's own heap (every node's view of its peers)
            # is long-lived too: out of its collector's walks, as the server does.
            gcstats.freeze()

            # -- joins: registration latency at ~N, and join fan-out
            joined: list[BenchNode] = []
            rng_groups = random.Random(nodes + 1)
            for i in range(probes):
                probe = Probe("join", None, _has_peer)

                async def do_join(i: int = i, probe: Probe = probe) -> None:
                    # The change is the registration: the clock starts as it is
                    # sent, not before the joiner's own TCP and Noise handshake.
                    node, timing = await swarm.join(
                        f"probe{i}",
                        rng_groups.randrange(1 << 30),
                        lambda probe=probe: setattr(probe, "t0", time.monotonic()),
                    )
                    joined.append(node)
                    res.register_s.append(timing.register_s)
                    res.first_map_s.append(timing.first_map_s)
                    # The joiner's id is known only once it registered.
                    probe.expect(swarm.viewers_of(node.node_id))

                await swarm.run_probe(probe, do_join, PROBE_TIMEOUT_S)
                _record(res, probe)
            # Memory after everything is connected (before leaves).
            await asyncio.sleep(SETTLE_S)
            res.rss_loaded = server.sample().rss_bytes
            log(f"[{nodes}] joins done; rss {res.rss_loaded / 2**20:.0f} MiB")

            # -- endpoint changes via lite updates
            rng = random.Random(nodes)
            candidates = [n for n in swarm.nodes if n not in joined]
            for i in range(probes):
                node = rng.choice(candidates)
                eps = [f"10.{i // 250}.{i % 250}.{rng.randrange(1, 250)}:{41641 + i}"]
                want = tuple(eps)
                probe = Probe("endpoint", node.node_id, _has_endpoints(want))

                async def do_lite(node: BenchNode = node, eps: list[str] = eps) -> None:
                    status = await node.lite_update(eps)
                    if status != 200:
                        raise RuntimeError(f"lite update: HTTP {status}")

                probe.expected = swarm.viewers_of(node.node_id)
                await swarm.run_probe(probe, do_lite, PROBE_TIMEOUT_S)
                _record(res, probe)
            log(f"[{nodes}] endpoint probes done")

            # -- leaves: the probe nodes disconnect
            for node in joined:
                probe = Probe("leave", node.node_id, lambda v, pid: v.peer_online.get(pid) is False)
                probe.expected = swarm.viewers_of(node.node_id)
                await swarm.run_probe(probe, node.close, PROBE_TIMEOUT_S)
                _record(res, probe)
            swarm.nodes = [n for n in swarm.nodes if n not in joined]
            log(f"[{nodes}] leave probes done")
            res.gc_probes = await _gc_stats(server)

            # -- idle
            if idle_s > 0:
                await asyncio.sleep(SETTLE_S)
                a = server.sample()
                t = time.monotonic()
                await asyncio.sleep(idle_s)
                b = server.sample()
                res.idle_s = time.monotonic() - t
                res.idle_cpu_s = b.cpu_s - a.cpu_s
                res.idle_nodes = sum(1 for n in swarm.nodes if n.connected)
                log(f"[{nodes}] idle {res.idle_s:.0f} s: {res.idle_cpu_s:.2f} CPU-s")

            # -- reconnect storm
            if storm:
                res.storm_nodes = len(swarm.nodes)
                gcstats.freeze()
                waiting = asyncio.ensure_future(swarm.reconnect_all(deadline_s=300))
                own_before = resource.getrusage(resource.RUSAGE_SELF)
                t_kill = time.monotonic()
                await server.stop()
                res.notes += [f"{nodes} nodes storm: {x}" for x in server.stop_log]
                await server.start()
                t_ready = time.monotonic()
                got = await waiting
                res.storm_server_cpu_s = server.sample().cpu_s
                own = resource.getrusage(resource.RUSAGE_SELF)
                res.storm_loadgen_cpu_s = (own.ru_utime + own.ru_stime) - (
                    own_before.ru_utime + own_before.ru_stime
                )
                res.storm_reconnected = len(got)
                if got:
                    last = max(got.values())
                    res.storm_s = last - t_kill
                    res.storm_from_ready_s = last - t_ready
                    res.storm_node_s = sorted(t - t_ready for t in got.values())
                    def quantiles(xs: list[float]) -> str:
                        q = sorted(xs)
                        return (
                            f"10 % {q[len(q) // 10]:.1f} s, 50 % {q[len(q) // 2]:.1f} s, "
                            f"90 % {q[len(q) * 9 // 10]:.1f} s"
                        )

                    phases = swarm.storm_phases.values()
                    connected = quantiles([c - t_ready for c, _ in phases])
                    headers = quantiles([h - t_ready for _, h in phases])
                    log(
                        f"[{nodes}] storm, from ready: connected {connected}; "
                        f"map headers {headers}; "
                        f"full map {quantiles(res.storm_node_s)}; CPU: server "
                        f"{res.storm_server_cpu_s:.1f} s, load generator {res.storm_loadgen_cpu_s:.1f} s"
                    )
                log(f"[{nodes}] storm: {len(got)}/{res.storm_nodes} back in {res.storm_s} s")

            # -- policy change: every filter changes, visibility stays
            text = group_policy(groups, "1-65535") if groups else allow_all_policy("1-65535")
            expected = {n.node_id for n in swarm.nodes if n.connected}
            pprobe = PolicyProbe(expected)
            swarm.policy_probe = pprobe
            try:
                pprobe.t0 = time.monotonic()
                status, body = await server.admin("POST", "/v1/policy", {"text": text})
                if status not in (200, 201):
                    raise RuntimeError(f"policy change refused: HTTP {status} {body[:200]!r}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pprobe.done.wait(), POLICY_TIMEOUT_S)
            finally:
                swarm.policy_probe = None
            lat = pprobe.latencies()
            res.policy_nodes = len(expected)
            res.policy_missing = len(expected) - len(lat)
            res.policy_node_s = lat
            res.policy_s = max(lat) if lat and not res.policy_missing else None
            log(f"[{nodes}] policy change: {len(lat)}/{len(expected)} in {res.policy_s} s")

            res.gc_end = await _gc_stats(server)
            await swarm.close()
        finally:
            await server.stop()
    return res


async def _gc_stats(server: ServerProcess) -> dict[str, Any] | None:
    """Collections and pauses so far (evidence: a full collection at 10k is a
    pause every session feels)."""
    try:
        status, body = await server.admin("GET", "/v1/status")
        if status != 200:
            return None
        gc_doc: dict[str, Any] = json.loads(body)["runtime"]["gc"]
        return gc_doc
    except Exception:
        return None


def _has_endpoints(want: tuple[str, ...]) -> Callable[[BenchNode, int], bool]:
    def check(viewer: BenchNode, pid: int) -> bool:
        return viewer.peer_eps.get(pid) == want

    return check


def _has_peer(viewer: BenchNode, pid: int) -> bool:
    return pid in viewer.peer_eps


def _record(res: SizeResult, probe: Probe) -> None:
    lat = probe.latencies()
    expected = len(probe.expected or ())
    res.fanout_missing[probe.kind] = res.fanout_missing.get(probe.kind, 0) + (expected - len(lat))
    if lat:
        res.fanout_s.setdefault(probe.kind, []).append(max(lat))
        res.fanout_peer_s.setdefault(probe.kind, []).extend(lat)
