"""CI smoke for the load harness: a small swarm, correctness only.

Runs the same scenario code as `make bench` at ~200 nodes with the server in
its own process: every node registers and gets its map, every timed change
(join, endpoint change, leave) reaches every peer that may see it, and a
policy change reaches every node. Speed is never asserted
here; the figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

from outpost_server.bench.scenarios import run_size

SMOKE_NODES = 200
SMOKE_PROBES = 3


@pytest.mark.parametrize("group", [0, 50], ids=["allow-all", "groups-of-50"])
async def test_swarm_correctness(group: int) -> None:
    # No idle window and no restart storm: those are about speed (and the
    # server's shutdown time would dominate a CI budget).
    r = await run_size(
        SMOKE_NODES,
        group=group,
        probes=SMOKE_PROBES,
        concurrency=32,
        idle_s=0,
        storm=False,
        log=lambda _m: None,
    )
    assert r.bulk_failed == 0, r.notes
    assert len(r.bulk_register_s) == SMOKE_NODES - SMOKE_PROBES
    assert len(r.register_s) == SMOKE_PROBES
    # the policy change reached every connected node
    assert r.policy_nodes == SMOKE_NODES - SMOKE_PROBES
    assert r.policy_missing == 0 and len(r.policy_node_s) == r.policy_nodes
    for kind in ("join", "endpoint", "leave"):
        assert r.fanout_missing.get(kind) == 0, (kind, r.fanout_missing)
        assert len(r.fanout_s.get(kind, [])) == SMOKE_PROBES, kind
