"""What the console knows about its link to the server (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Connection:
    ok: bool | None = None  # None: not checked yet
    error: str = ""
    status: dict[str, Any] = field(default_factory=dict)  # last good /v1/status
    checked_at: datetime | None = None
    retry_s: float = 0.0

    def summary(self) -> str:
        at = self.checked_at.strftime("%H:%M:%S") if self.checked_at else "--:--:--"
        if self.ok is None:
            return "Connecting to the server..."
        if not self.ok:
            return f"SERVER UNREACHABLE (retrying every {self.retry_s:g}s, last try {at}): {self.error}"
        s = self.status
        pending = int(s.get("pending_registrations") or 0)
        text = f"Connected | {s.get('nodes_online', 0)}/{s.get('nodes_total', 0)} nodes online"
        if pending:
            text += f" | {pending} WAITING FOR APPROVAL: press 2"
        return f"{text} | last change {at}"
