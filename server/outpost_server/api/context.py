"""What the admin API handlers may reach: services, never the database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    audit_sink: Callable[[str, str, dict[str, Any]], None] | None = None
    audit_chain: Any = None  # outpost_server.audit.AuditLog, for reading and verifying
    backups: Any = None  # outpost_server.backup.service.BackupService
    request_restart: Callable[[], None] | None = None  # stop so the service manager restarts us
    bundles: Any = None  # outpost_server.bundles.service.BundleService
    root_pem: Callable[[], bytes] | None = None  # the Outpost CA root certificate (public)
    certs: Any = None  # outpost_server.ca.service.ServerCertificates
    data_dir: Path | None = None  # for the disk-use figure in /v1/status
    media: Any = None  # outpost_server.bundles.desk.MediaDesk (the watcher's devices, export requests)
    site: Any = None  # outpost_server.site.SiteService (site.json, first-boot setup state)
    # The last explicit chain verification (POST /v1/audit/verify), shared by
    # every request's copy of the context: /v1/status reports it rather than
    # re-verifying the whole chain on every poll.
    audit_verified: dict[str, Any] = field(default_factory=dict)
    actor: str = "admin-api"

    def audit(self, action: str, **details: Any) -> None:
        """Record an administrative action: who, what, and the details."""
        audit_log.info("%s by %s: %s", action, self.actor, details)
        if self.audit_sink is not None:
            self.audit_sink(self.actor, action, details)
