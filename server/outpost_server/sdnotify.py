"""systemd readiness and watchdog notifications (sd_notify), stdlib only.

Theory of operation: systemd passes a unix datagram socket in NOTIFY_SOCKET
(a path, or an abstract name written with a leading "@"). A service started
with Type=notify is "started" only once it sends READY=1; with WatchdogSec=
set, systemd also passes WATCHDOG_USEC and restarts the service unless
WATCHDOG=1 arrives at least that often. We ping at half the interval, from a
task on the server's own event loop, so a wedged loop stops the pings and
systemd restarts the process: exactly the failure the watchdog is for.

Without NOTIFY_SOCKET (a developer's shell, tests, `make up`) every call is a
no-op. A notification that cannot be delivered is logged, never raised:
readiness reporting must not take the server down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 200  # one line in `systemctl status`; longer text is cut


class Notifier:
    """Sends sd_notify datagrams to the socket systemd named, if any."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # abstract namespace socket
        elif raw.startswith("/"):
            self.address = raw
        self.watchdog_interval_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send `fields` as one datagram ("READY=1", "STATUS=..."); False if not delivered."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(message)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        fields = ["READY=1"]
        if status:
            fields.append("STATUS=" + _one_line(status))
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        return self.notify("STATUS=" + _one_line(text))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def watchdog_loop(self) -> None:
        """Ping WATCHDOG=1 at half the interval systemd asked for, until cancelled."""
        if self.address is None or self.watchdog_interval_s is None:
            return
        period = self.watchdog_interval_s / 2
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(period)


    def watchdog_thread(self, alive: Callable[[], bool] = lambda: True) -> threading.Thread | None:
        """For services without an event loop (the USB watcher, the scheduler): a daemon
        thread pings at half the interval while `alive()` holds, so a main loop that
        reports itself stuck stops the pings and systemd restarts the process."""
        if self.address is None or self.watchdog_interval_s is None:
            return None
        period = self.watchdog_interval_s / 2

        def run() -> None:
            while True:
                if alive():
                    self.notify("WATCHDOG=1")
                time.sleep(period)

        t = threading.Thread(target=run, name="sd-watchdog", daemon=True)
        t.start()
        return t


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, if it is meant for this process (WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # inherited from a parent that is the real watchdog client
    return int(usec) / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_STATUS_CHARS]
