"""Targets, the markdown section appended to docs/benchmarks.md, and PNG plots."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .relay import RelayResult
from .scenarios import SizeResult

KIB = 1024


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: p99 of 20 samples is the max)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.1f} ms"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    return (
        f"{model or platform.processor()}, {os.cpu_count()} CPUs, {mem_kib / 2**20:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


@dataclass
class Target:
    name: str
    measured: float | None
    limit: float
    unit: str
    where: str
    lower_is_better: bool = True

    def row(self) -> str:
        if self.measured is None:
            return f"| {self.name} | not measured | {self.limit:g} {self.unit} | — | {self.where} |"
        ok = self.measured <= self.limit if self.lower_is_better else self.measured >= self.limit
        if self.lower_is_better:
            by = f"{self.measured / self.limit:.2f}× the limit" if self.limit else ""
        else:
            by = f"{self.measured / self.limit:.2f}× the minimum"
        verdict = "**met**" if ok else "**missed**"
        return f"| {self.name} | {self.measured:.4g} {self.unit} | {'≤' if self.lower_is_better else '≥'} {self.limit:g} {self.unit} | {verdict} ({by}) | {self.where} |"


def fanout_p99(r: SizeResult) -> float | None:
    all_last = [x for v in r.fanout_s.values() for x in v]
    return percentile(all_last, 99)


def idle_pct_per_100(r: SizeResult) -> float | None:
    if not r.idle_s or not r.idle_nodes:
        return None
    return r.idle_cpu_s / r.idle_s * 100 / (r.idle_nodes / 100)


def mem_per_node(r: SizeResult) -> float | None:
    return (r.rss_loaded - r.rss_base) / r.nodes / KIB if r.nodes else None


def label(r: SizeResult) -> str:
    return f"{r.nodes} ({'allow-all' if not r.group else f'{r.group - 1} peers'})"


def targets(sizes: list[SizeResult], relay: list[RelayResult]) -> list[Target]:
    out: list[Target] = []
    allow = [r for r in sizes if not r.group]
    biggest = max(sizes, key=lambda r: r.nodes, default=None)
    if biggest is not None:
        out.append(
            Target(
                "registration p99 (at 10k)",
                _s(percentile(biggest.register_s, 99), 1000),
                20,
                "ms",
                f"measured at {label(biggest)}"
                + ("" if biggest.nodes >= 10000 else "; 10k not run"),
            )
        )
    for n, limit in ((1000, 100), (10000, 500)):
        cand = [r for r in sizes if r.nodes == n] or (
            [] if n == 1000 else [biggest] if biggest else []
        )
        for r in cand:
            where = label(r) + ("" if r.nodes == n else f"; {n} not run")
            out.append(
                Target(
                    f"one-node change → all peers p99 (at {n // 1000}k)",
                    _s(fanout_p99(r), 1000),
                    limit,
                    "ms",
                    where,
                )
            )
    scoped = [r for r in sizes if r.group]
    top = max(scoped or sizes, key=lambda r: r.nodes, default=None)
    if top is not None:
        out.append(
            Target(
                "policy change → every node (at 10k)",
                top.policy_s,
                5,
                "s",
                f"{label(top)}, {top.policy_nodes} nodes"
                + ("" if top.nodes >= 10000 else "; 10k not run")
                + (f"; {top.policy_missing} never got it" if top.policy_missing else ""),
            )
        )
    for r in allow:
        if r.nodes == 1000:
            out.append(
                Target(
                    "reconnect storm, 1k allow-all",
                    r.storm_s,
                    5,
                    "s",
                    "SIGTERM → every node has a new full map",
                )
            )
    for r in sizes:
        out.append(Target("server memory per node", mem_per_node(r), 32, "KiB", label(r)))
    for r in sizes:
        out.append(
            Target(
                "idle CPU per 100 nodes",
                idle_pct_per_100(r),
                0.02,
                "% of a core",
                f"{label(r)}, {r.idle_s:.0f} s",
            )
        )
    derp = {x.name: x for x in relay}
    for batch in sorted({x.batch for x in relay}):
        d, f = derp.get(f"outpost-derp/b{batch}"), derp.get(f"asyncio-forwarder/b{batch}")
        if d and f and f.pps:
            out.append(
                Target(
                    f"relay packet rate vs forwarder (batch {batch})",
                    d.pps / f.pps * 100,
                    70,
                    "%",
                    f"{d.pairs} pairs, 1280 B",
                    lower_is_better=False,
                )
            )
    return out


def _s(v: float | None, scale: float) -> float | None:
    return None if v is None else v * scale


def size_table(sizes: list[SizeResult]) -> list[str]:
    lines = [
        "| nodes (visibility) | bulk bring-up | reg p50 / p99 | first byte → full map p50 / p99 | join → last peer p50 / p99 | endpoint → last peer p50 / p99 | leave → last peer p50 / p99 | policy change → node p50 / last | missed receipts | RSS base → loaded | per node | idle CPU | storm (from SIGTERM / from ready) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        fk = {
            k: f"{ms(percentile(r.fanout_s.get(k, []), 50))} / {ms(percentile(r.fanout_s.get(k, []), 99))}"
            for k in ("join", "endpoint", "leave")
        }
        missing = sum(r.fanout_missing.values())
        idle = idle_pct_per_100(r)
        storm = (
            f"{r.storm_s:.1f} s / {r.storm_from_ready_s:.1f} s ({r.storm_reconnected}/{r.storm_nodes})"
            if r.storm_s is not None and r.storm_from_ready_s is not None
            else f"— ({r.storm_reconnected}/{r.storm_nodes})"
        )
        lines.append(
            f"| {label(r)} | {len(r.bulk_register_s)} in {r.bulk_wall_s:.1f} s "
            f"(reg p50 {ms(percentile(r.bulk_register_s, 50))}) "
            f"| {ms(percentile(r.register_s, 50))} / {ms(percentile(r.register_s, 99))} "
            f"| {ms(percentile(r.first_map_s, 50))} / {ms(percentile(r.first_map_s, 99))} "
            f"| {fk['join']} | {fk['endpoint']} | {fk['leave']} "
            f"| {ms(percentile(r.policy_node_s, 50))} / {ms(r.policy_s)} "
            f"({len(r.policy_node_s)}/{r.policy_nodes}) | {missing} "
            f"| {r.rss_base / 2**20:.0f} → {r.rss_loaded / 2**20:.0f} MiB | {mem_per_node(r) or 0:.1f} KiB "
            f"| {'—' if idle is None else f'{idle:.4f} %/100 nodes'} ({r.idle_cpu_s:.2f} CPU-s in {r.idle_s:.0f} s) | {storm} |"
        )
    return lines


def gc_table(sizes: list[SizeResult]) -> list[str]:
    """The server's collector per size: how often each generation ran and its
    longest pause, after the probes and at the end (storm and policy change
    included). A full collection's pause delays every session."""
    lines = [
        "| nodes (visibility) | stage | young / middle / full collections "
        "| longest young / middle / full pause | scheduled rounds (longest) | frozen objects |",
        "|---|---|---|---|---|---|",
    ]
    for r in sizes:
        for stage, doc in (("after probes", r.gc_probes), ("end", r.gc_end)):
            if not doc:
                continue
            gens = doc.get("generations") or []
            counts = " / ".join(str(g.get("collections", 0)) for g in gens)
            pauses = " / ".join(f"{g.get('max_ms', 0):.1f} ms" for g in gens)
            rounds = doc.get("rounds") or {}
            lines.append(
                f"| {label(r)} | {stage} | {counts} | {pauses} "
                f"| {rounds.get('count', 0)} ({rounds.get('max_ms', 0):.1f} ms) "
                f"| {doc.get('frozen_objects', 0):,} |"
            )
    return lines if len(lines) > 2 else []


def relay_table(relay: list[RelayResult]) -> list[str]:
    lines = [
        "| path | pairs | batch | received pkt/s | Mbit/s | sent pkt/s | delivered | server CPU-µs / delivered pkt | relay drops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in relay:
        sent = x.sent / x.seconds if x.seconds else 0
        lines.append(
            f"| {x.name} | {x.pairs} | {x.batch} | {x.pps:,.0f} | {x.mbit_s:,.0f} | {sent:,.0f} "
            f"| {x.packets / x.sent * 100 if x.sent else 0:.0f} % | {x.cpu_us_per_packet:.1f} | {x.drops or '—'} |"
        )
    return lines


def plots(
    sizes: list[SizeResult], relay: list[RelayResult], outdir: Path, stamp: str
) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, kind in zip(axes, ("join", "endpoint", "leave"), strict=True):
        for r in sizes:
            vals = sorted(v * 1000 for v in r.fanout_peer_s.get(kind, []))
            if vals:
                ax.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], label=label(r))
        ax.set_title(f"{kind}: change → each peer's receipt")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of receipts")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    p = outdir / f"{stamp}-fanout-cdf.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    made.append(p)

    def cdf(name: str, series: list[tuple[str, list[float]]], limit: float, limit_label: str,
            title: str, xlabel: str, log: bool = False) -> None:  # fmt: skip
        """One CDF per size on one axis, with the target as a red line."""
        if not any(vals for _, vals in series):
            return
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for lab, vals in series:
            vals = sorted(vals)
            if vals:
                ax.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], label=lab)
        ax.axvline(limit, color="red", linestyle="--", label=limit_label)
        if log:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = outdir / f"{stamp}-{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)

    cdf("registration-cdf",
        [(label(r), [v * 1000 for v in r.bulk_register_s + r.register_s]) for r in sizes],
        20, "target p99 20 ms", "/machine/register latency (bulk, 32 concurrent, and probes)",
        "ms (log)", log=True)  # fmt: skip
    cdf("policy-cdf", [(label(r), list(r.policy_node_s)) for r in sizes],
        5, "target: all within 5 s at 10k", "policy change → each node applied its new filter",
        "s")  # fmt: skip

    if relay:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        names = [f"{x.name}" for x in relay]
        ax.bar(
            names,
            [x.pps for x in relay],
            color=["tab:blue" if "derp" in n else "tab:gray" for n in names],
        )
        ax.set_ylabel("received packets/s (1280 B)")
        ax.set_title("DERP relay vs plain asyncio forwarder")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        fig.tight_layout()
        p = outdir / f"{stamp}-relay.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    return made


def markdown(
    sizes: list[SizeResult],
    relay: list[RelayResult],
    pngs: list[Path],
    docs: Path,
    mode: str,
    load_before: str,
    notes: list[str],
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"## Run {now} — commit `{commit()}` — {mode}",
        "",
        f"- Machine: {machine()}",
        f"- Load average before / after: {load_before} / {loadavg()} (the load generator shares the machine with the server)",
        "- Server: its own process (`outpost_server.bench.serve`); CPU and RSS from `/proc/<pid>`. Load generator: one process, one Noise connection per simulated node.",
        "",
        "### Targets",
        "",
        "| target | measured | limit | verdict | where |",
        "|---|---|---|---|---|",
        *(t.row() for t in targets(sizes, relay)),
        "",
        "### Control plane",
        "",
        *size_table(sizes),
        "",
        *(["### Garbage collector", "", *gc, ""] if (gc := gc_table(sizes)) else []),
        "### Relay",
        "",
        *relay_table(relay),
        "",
    ]
    if notes:
        out += ["### Notes", "", *(f"- {n}" for n in notes), ""]
    for p in pngs:
        out.append(f"![{p.stem}]({p.relative_to(docs).as_posix()})")
    out.append("")
    return "\n".join(out)
