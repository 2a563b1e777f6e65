"""The server side of bench/memprofile.py: what a dump holds.

With OUTPOST_BENCH_MEMPROFILE set, bench/serve.py starts tracemalloc (unless
the depth is 0) and calls `dump_snapshot` on SIGUSR1: `<prefix>.<n>.tm` is a
tracemalloc snapshot, `<prefix>.<n>.json` has RSS, counts and sizes of
GC-tracked objects by type, glibc's `mallinfo2` and pymalloc's figures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

# A path prefix for the dumps; its _DEPTH twin is tracemalloc's frame count.
MEMPROFILE_ENV = "OUTPOST_BENCH_MEMPROFILE"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def mallinfo() -> dict[str, int]:
    """glibc's heap figures (empty elsewhere): `arena` bytes from brk, of which
    `uordblks` in use and `fordblks` free; `hblkhd` in mmapped chunks."""
    name = ctypes.util.find_library("c")
    if name is None:
        return {}
    libc = ctypes.CDLL(name)
    fn = getattr(libc, "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {f[0]: int(getattr(info, f[0])) for f in _MallInfo2._fields_}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's own figures (`sys._debugmallocstats` writes them to fd 2)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        label, _, value = line.rpartition("=")
        label = label.strip().lstrip("#").strip()
        if label in (
            "arenas allocated current",
            "bytes in allocated blocks",
            "bytes in available blocks",
            "Total",
        ):
            out[label] = int(value.strip().replace(",", ""))
    return out


def dump_snapshot(path: Path) -> None:
    """In the server: write `path.tm` (tracemalloc) and `path.json` (the rest)."""
    gc.collect()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    snap = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else tracemalloc.Snapshot([], 1)
    snap.dump(str(path) + ".tm")
    info = {
        "rss": _rss_bytes(),
        "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        "mallinfo": mallinfo(),
        "pymalloc": pymalloc_stats(),
        "types": {k: [counts[k], sizes[k]] for k in counts},
    }
    tmp = Path(str(path) + ".json.tmp")
    tmp.write_text(json.dumps(info))
    tmp.rename(str(path) + ".json")
