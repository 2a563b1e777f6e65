"""The C allocator's settings for a long-running server (glibc only).

glibc serves allocations above its mmap threshold with their own mappings,
returned to the system when freed; below it, from the heap, where a freed
block leaves a hole that only an allocation of the same size or smaller can
reuse. The threshold starts at 128 KiB and *rises* to the size of each large
block freed (up to 32 MiB), so after the first full maps of a bring-up every
multi-hundred-KiB temporary (the JSON and compressed frames of full maps) is
cut from the heap, and the holes stay between the long-lived objects of the
connections: bench/memprofile.py showed ~8 KiB per connected node held free
in the heap at 600 nodes, ~3.5 KiB with the threshold fixed.

Fixed at 512 KiB: above asyncio's 256 KiB receive buffers (every socket read
allocates one and shrinks it; a mapping each time would cost two system calls
per read on the relay's hot path), below a full map's temporaries. Fixing it
also stops glibc raising the trim threshold (free memory at the top of the
heap beyond it is handed back) along with it, up to 64 MiB. With it at 1 MiB
the relay benchmark relayed 6-19 % fewer packets in a quick A/B (two runs
each, noisy; likely the heap top shrinking and regrowing under the receive
buffers, faulting fresh pages in), and as many as before at 64 MiB, the value
glibc would reach on its own: set to that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 512 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024  # glibc: 2 x DEFAULT_MMAP_THRESHOLD_MAX
_M_TRIM_THRESHOLD = -1  # malloc.h
_M_MMAP_THRESHOLD = -3

_tuned = False


def tune_allocator() -> bool:
    """Apply the settings above once per process; False where there is no glibc."""
    global _tuned  # noqa: PLW0603 - a process-wide setting, applied once
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    # gnu_get_libc_version: glibc's own (musl has a mallopt that does nothing)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)
    ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1) and ok
    if not ok:
        log.info("could not set the allocator's mmap/trim thresholds")
    _tuned = ok
    return ok
