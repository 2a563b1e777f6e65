"""DERP relay core: connection registry, routing, queues, admission, counters.

Pure Python with no sockets; `outpost_server.net.derp` is its asyncio adapter.
"""

from .router import AdmissionFn, Relay
from .stats import DropReason, RelayStats

__all__ = ["AdmissionFn", "DropReason", "Relay", "RelayStats"]
