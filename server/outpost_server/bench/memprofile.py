"""Where a connected node's server memory goes: a tracemalloc breakdown.

    python -m outpost_server.bench.memprofile --nodes 300 [--group 100] [--depth 1]

Starts the bench server (`bench/serve.py`) with tracemalloc on, takes one
snapshot before bring-up and one after N nodes hold a map stream, and prints
the difference per node: by source line, by file, by object type (GC-tracked
objects only), and the allocator's view (glibc `mallinfo2`: bytes in use vs
held free, which is what RSS adds on top of live objects). tracemalloc slows
the server and adds its own memory, so RSS here is not the benchmark's figure:
`python -m outpost_server.bench` measures that without tracing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from ..sim.client import fetch_server_key
from .memdump import MEMPROFILE_ENV
from .procstat import ServerProcess
from .scenarios import free_port
from .swarm import Swarm

SETTLE_S = 3.0
DUMP_TIMEOUT_S = 120.0


Dump = tuple[tracemalloc.Snapshot, dict[str, Any]]


def _load(prefix: str, n: int) -> Dump | None:
    done = Path(f"{prefix}.{n}.json")
    if not done.exists():
        return None
    return tracemalloc.Snapshot.load(f"{prefix}.{n}.tm"), json.loads(done.read_text())


async def _take(pid: int, prefix: str, n: int) -> Dump:
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + DUMP_TIMEOUT_S
    while (got := _load(prefix, n)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not write its snapshot")
        await asyncio.sleep(0.2)
    return got


def _kib(x: float) -> str:
    return f"{x / 1024:8.2f}"


def report(before: Dump, after: Dump, nodes: int, top: int) -> str:
    (s0, i0), (s1, i1) = before, after
    filt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    s0, s1 = s0.filter_traces(filt), s1.filter_traces(filt)
    out = [f"per node, {nodes} nodes (KiB)"]
    out.append(f"traced      {_kib((i1['traced'] - i0['traced']) / nodes)}")
    out.append(f"rss (traced run) {_kib((i1['rss'] - i0['rss']) / nodes)}")
    m0, m1 = i0["mallinfo"], i1["mallinfo"]
    for k in ("arena", "uordblks", "fordblks", "hblkhd"):
        if k in m0:
            total = f"(total {m1[k] / 2**20:.1f} MiB)"
            out.append(f"malloc {k:9s} {_kib((m1[k] - m0[k]) / nodes)}  {total}")
    p0, p1 = i0.get("pymalloc", {}), i1.get("pymalloc", {})
    for k in p1:
        if k in p0:
            out.append(f"pymalloc {k:26s} {(p1[k] - p0[k]) / nodes:10.2f}  (total {p1[k]:,})")
    if not s1.traces:
        return "\n".join(out)
    for key in ("lineno", "filename"):
        out.append(f"\n-- by {key}")
        for st in s1.compare_to(s0, key)[:top]:
            blocks = st.count_diff / nodes
            out.append(f"{_kib(st.size_diff / nodes)}  {blocks:7.1f} blk  {st.traceback}")
    out.append("\n-- GC-tracked objects by type (count, getsizeof KiB, per node)")
    t0, t1 = i0["types"], i1["types"]
    rows = []
    for k, (c, sz) in t1.items():
        c0, sz0 = t0.get(k, [0, 0])
        rows.append(((sz - sz0) / nodes, (c - c0) / nodes, k))
    for sz, c, k in sorted(rows, reverse=True)[:top]:
        out.append(f"{c:8.2f} {_kib(sz)}  {k}")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="outpost-memprofile-") as tmp:
        prefix = f"{tmp}/snap"
        os.environ[MEMPROFILE_ENV] = prefix
        os.environ[MEMPROFILE_ENV + "_DEPTH"] = str(args.depth)
        groups = -(-args.nodes // args.group) if args.group else 0
        server = ServerProcess(Path(tmp) / "data", free_port(), groups)
        await server.start(make_key=True)
        try:
            key = await fetch_server_key("127.0.0.1", server.port)
            swarm = Swarm(server.port, key, server.keys)
            await asyncio.sleep(1.0)
            before = await _take(server.pid, prefix, 0)
            await swarm.bring_up(args.nodes, args.concurrency)
            if swarm.failed_joins:
                first = swarm.failed_joins[0]
                print(f"{len(swarm.failed_joins)} joins failed: {first}", file=sys.stderr)
            await asyncio.sleep(SETTLE_S)
            after = await _take(server.pid, prefix, 1)
            text = report(before, after, args.nodes, args.top)
            if args.save:
                after[0].dump(args.save)
            await swarm.close()
        finally:
            await server.stop()
    return text


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m outpost_server.bench.memprofile")
    p.add_argument("--nodes", type=int, default=300)
    p.add_argument("--group", type=int, default=0, help="0: allow-all; G: ~G peers each")
    p.add_argument(
        "--depth",
        type=int,
        default=1,
        help="tracemalloc frames per allocation (0: no tracing, allocator figures only)",
    )
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--save", help="keep the loaded snapshot here (tracemalloc format)")
    args = p.parse_args()
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
