"""`make bench`: run the load benchmarks and append the results to docs/benchmarks.md.

    python -m outpost_server.bench                 # full: 1k, 5k, 10k; 10 min idle at 10k
    python -m outpost_server.bench --quick         # 1k allow-all + 1k/5k scoped; 100 s idle
    python -m outpost_server.bench --sizes 1000:0,5000:100 --idle 120
    python -m outpost_server.bench --relay-only --no-write   # DERP relay vs forwarder, ~1 min

A size is NODES[:GROUP[:IDLE_S]]. GROUP 0 is allow-all (no policy); GROUP 100 is
"~100 peers each": the server gets a real policy of disjoint tag groups of
about 100 nodes (`serve.group_policy`), so the policy engine is measured too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import gcstats
from .relay import RelayResult, run_relay
from .report import loadavg, markdown, plots
from .scenarios import SizeResult, run_size
from .serve import raise_nofile

# The ten-minute idle window runs where it means most (10k); the smaller sizes
# idle for two minutes (> one keep-alive interval) to keep a full run ~40 min.
FULL_SIZES = "1000:0:120,1000:100:120,5000:100:120,10000:100:600"
QUICK_SIZES = "1000:0,1000:100,5000:100"
FULL_IDLE_S = 600.0
QUICK_IDLE_S = 100.0  # > one keep-alive interval (75 s + up to 15 s jitter)
HEADER = """# Benchmarks

Appended by `make bench` (`python -m outpost_server.bench`); newest run last.
Method and caveats: see the module docstrings in `server/outpost_server/bench/`.
"""


RUN_STAMP = time.strftime("%Y%m%d-%H%M%S")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def parse_sizes(text: str) -> list[tuple[int, int, float | None]]:
    """NODES[:GROUP[:IDLE_S]], comma-separated; IDLE_S overrides --idle for that size."""
    out = []
    for part in filter(None, text.split(",")):
        n, _, rest = part.partition(":")
        g, _, idle = rest.partition(":")
        out.append((int(n), int(g or 0), float(idle) if idle else None))
    return out


async def run(args: argparse.Namespace) -> tuple[list[SizeResult], list[RelayResult], list[str]]:
    sizes: list[SizeResult] = []
    notes: list[str] = []
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for n, group, idle in parse_sizes(args.sizes):
        if n * 1.1 > nofile:
            notes.append(f"{n} nodes skipped: open-files limit {nofile} in the load generator")
            continue
        try:
            r = await run_size(
                n,
                group=group,
                probes=args.probes,
                concurrency=args.concurrency,
                idle_s=args.idle if idle is None else idle,
                storm=not args.no_storm,
                log=log,
            )
            sizes.append(r)
            notes += r.notes
            _save_partial(args, r)
        except Exception as exc:
            notes.append(f"{n} nodes (group {group}) failed: {type(exc).__name__}: {exc}")
            log(notes[-1])
    relay: list[RelayResult] = []
    if not args.no_relay:
        try:
            relay = await run_relay(pairs=args.relay_pairs, seconds=args.relay_seconds, log=log)
        except Exception as exc:  # the control-plane figures must not be lost with it
            notes.append(f"relay benchmark failed: {type(exc).__name__}: {exc}")
            log(notes[-1])
    return sizes, relay, notes


def _save_partial(args: argparse.Namespace, r: SizeResult) -> None:
    """Each size's raw figures as soon as it is done: a run of an hour is not
    lost to a failure in a later stage (it was, once)."""
    if args.no_write:
        return
    out = args.docs / "bench" / f"partial-{RUN_STAMP}-{r.nodes}-{r.group}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r.as_dict()))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m outpost_server.bench")
    p.add_argument("--quick", action="store_true", help="smaller sizes, 100 s idle")
    p.add_argument("--sizes", help=f"NODES[:GROUP],... (full: {FULL_SIZES}; quick: {QUICK_SIZES})")
    p.add_argument("--idle", type=float, help="idle measurement in seconds (full 600, quick 65)")
    p.add_argument("--probes", type=int, default=20, help="changes timed per kind and size")
    p.add_argument(
        "--concurrency", type=int, default=32, help="registrations in flight during bring-up"
    )
    p.add_argument("--no-storm", action="store_true")
    p.add_argument("--no-relay", action="store_true")
    p.add_argument(
        "--relay-only", action="store_true", help="only the DERP relay benchmark (no sizes)"
    )
    p.add_argument("--relay-pairs", type=int, default=16)
    p.add_argument("--relay-seconds", type=float, default=10.0)
    p.add_argument(
        "--docs", type=Path, default=Path("docs"), help="where benchmarks.md and bench/*.png go"
    )
    p.add_argument(
        "--no-write", action="store_true", help="print the markdown instead of appending it"
    )
    args = p.parse_args()
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    if args.relay_only:
        args.sizes = ""
    args.idle = (
        args.idle if args.idle is not None else (QUICK_IDLE_S if args.quick else FULL_IDLE_S)
    )
    raise_nofile()
    # The load generator holds a large long-lived heap (thousands of nodes'
    # netmaps) and decodes big maps: the server's collector policy, or full
    # collections show up as decode time (they did: 60 % of a storm).
    gc.set_threshold(gcstats.YOUNG_THRESHOLD, gcstats.MIDDLE_THRESHOLD, gcstats.OLD_THRESHOLD)
    load_before = loadavg()
    sizes, relay, notes = asyncio.run(run(args))
    stamp = RUN_STAMP
    docs: Path = args.docs
    pngs = [] if args.no_write else plots(sizes, relay, docs / "bench", stamp)
    if args.relay_only:
        mode = "relay only"
    else:
        kind = "quick" if args.quick else "full"
        mode = f"{kind} (sizes {args.sizes}, idle {args.idle:.0f} s, {args.probes} probes per kind)"
    text = markdown(sizes, relay, pngs, docs, mode, load_before, notes)
    raw = {
        "sizes": [r.as_dict() for r in sizes],
        "relay": [asdict(x) for x in relay],
        "notes": notes,
    }
    if args.no_write:
        print(text)
        return
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    (docs / "bench" / f"{stamp}-raw.json").write_text(json.dumps(raw))
    for part in (docs / "bench").glob(f"partial-{stamp}-*.json"):
        part.unlink()  # all of it is in the raw file now
    md = docs / "benchmarks.md"
    if not md.exists():
        md.write_text(HEADER)
    with md.open("a") as f:
        f.write("\n" + text)
    print(text)
    log(f"appended to {md}; plots and raw data in {docs / 'bench'}")


if __name__ == "__main__":
    main()
