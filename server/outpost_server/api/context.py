"""What the admin API handlers may reach: services, never the database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..control.fanout import Fanout
from ..control.register import Registrar
from ..control.service import ControlService
from ..net.listener import ListenerCounters
from ..state.store import Store

audit_log = logging.getLogger("outpost.audit")


@dataclass
class ApiContext:
    store: Store
    registrar: Registrar
    fanout: Fanout
    control: ControlService
    server_url: str
    listener_counters: ListenerCounters
    relay_stats: Callable[[], dict[str, Any]]
    actor: str = "admin-api"

    def audit(self, action: str, **details: Any) -> None:
        """Record an administrative action. The tamper-evident audit chain
        (issue 6) replaces this log line with a hash-chained entry."""
        audit_log.info("%s by %s: %s", action, self.actor, details)
