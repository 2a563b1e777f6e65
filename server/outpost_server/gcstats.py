"""Garbage-collector pauses: measured, and kept off the hot path.

The server's steady state is a large, long-lived heap (every node's frozen
state and rendered JSON, the compiled policy, one connection with its HTTP/2
and Noise state per node: millions of objects at 10k nodes) and a trickle
of short-lived garbage. CPython's full collection walks every tracked
object, so with default settings a full collection is a pause of a large
fraction of a second that every map update waiting behind it feels, and it
comes round whenever enough new objects survived (a policy recompilation
at 10k nodes leaves ~10^5).

What `Collector` does:
* raises the young-generation threshold (YOUNG_THRESHOLD), so short-lived
  garbage is collected in fewer, still small, passes, and practically turns
  off CPython's own full collections (OLD_THRESHOLD): at 10k nodes the
  benchmark recorded 26 of them of up to 1.1 s each during bring-up;
* instead, every ROUND_EVERY_S, collects what is not frozen yet (the objects
  allocated since the last round: a short walk, nothing to speak of when
  idle; with rounds 10 s apart a 10k bring-up saw rounds of up to 1 s, so
  they are 2 s apart) and then moves the survivors into the permanent
  generation (`gc.freeze`), so no collection walks them again.
  Frozen objects are still reference counted and freed as usual; only
  *cyclic* garbage among them waits, for
* a reclaim every RECLAIM_EVERY_S: unfreeze, one full collection, freeze
  again. That pause is the one a default collector would take many times an
  hour; here it is rare, measured and reported.

`stats()` reports collections per generation, their pause times and the
reclaims, for `/v1/status` and the benchmarks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger(__name__)

YOUNG_THRESHOLD: Final = 10_000  # net allocations between young collections (CPython: 700)
MIDDLE_THRESHOLD: Final = 10  # young collections per middle one (CPython default)
# middle collections per automatic full one (CPython: 10); the rounds below
# do that work, on a schedule and over the unfrozen objects only
OLD_THRESHOLD: Final = 100_000
ROUND_EVERY_S: Final = 2.0
RECLAIM_EVERY_S: Final = 3600.0


@dataclass
class _Gen:
    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0


@dataclass
class _Stats:
    gens: list[_Gen] = field(default_factory=lambda: [_Gen(), _Gen(), _Gen()])
    started: float = 0.0
    freezes: int = 0
    in_round: bool = False
    rounds: _Gen = field(default_factory=_Gen)
    reclaims: int = 0
    reclaim_max_s: float = 0.0


_stats = _Stats()


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _stats.started = time.perf_counter()
        return
    took = time.perf_counter() - _stats.started
    g = _stats.rounds if _stats.in_round else _stats.gens[min(int(info.get("generation", 0)), 2)]
    g.count += 1
    g.total_s += took
    g.max_s = max(g.max_s, took)


def install() -> None:
    """Start measuring collection pauses (idempotent)."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def freeze() -> None:
    """Move every object that survived so far out of the collector's walks."""
    gc.freeze()
    _stats.freezes += 1


def round_() -> None:
    """Collect what is not frozen (cycles among recent objects), then freeze
    the survivors."""
    _stats.in_round = True
    try:
        gc.collect()
    finally:
        _stats.in_round = False
    freeze()


def reclaim() -> float:
    """Unfreeze, collect everything (cyclic garbage among frozen objects
    included), freeze again. Returns the pause in seconds."""
    t = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    took = time.perf_counter() - t
    _stats.reclaims += 1
    _stats.reclaim_max_s = max(_stats.reclaim_max_s, took)
    return took


class Collector:
    """The running server's collector policy (see the module docstring)."""

    def __init__(
        self, round_every_s: float = ROUND_EVERY_S, reclaim_every_s: float = RECLAIM_EVERY_S
    ) -> None:
        self.round_every_s = round_every_s
        self.reclaim_every_s = reclaim_every_s
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        install()
        self._saved = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
        freeze()  # what start-up built (modules, state) is long-lived

    def stop(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        gc.unfreeze()

    async def run(self) -> None:
        since_reclaim = 0.0
        while True:
            await asyncio.sleep(self.round_every_s)
            since_reclaim += self.round_every_s
            if since_reclaim >= self.reclaim_every_s:
                since_reclaim = 0.0
                took = reclaim()
                log.info("garbage collector: full reclaim took %.0f ms", took * 1e3)
            else:
                round_()


def stats() -> dict[str, Any]:
    """Collections per generation with total and longest pause (ms)."""
    return {
        "thresholds": list(gc.get_threshold()),
        "frozen_objects": gc.get_freeze_count(),
        "generations": [
            {
                "collections": g.count,
                "total_ms": round(g.total_s * 1e3, 1),
                "max_ms": round(g.max_s * 1e3, 2),
            }
            for g in _stats.gens
        ],
        "freezes": _stats.freezes,
        "rounds": {
            "count": _stats.rounds.count,
            "total_ms": round(_stats.rounds.total_s * 1e3, 1),
            "max_ms": round(_stats.rounds.max_s * 1e3, 2),
        },
        "reclaims": _stats.reclaims,
        "reclaim_max_ms": round(_stats.reclaim_max_s * 1e3, 1),
    }
