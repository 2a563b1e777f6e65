"""A small synchronous client for the admin API over its unix socket.

Standard library only: the CLI runs often (scripts, tests, the console's
helpers) and importing an HTTP client library cost seconds per call.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

REQUEST_TIMEOUT_S = 30.0


def actor() -> str:
    """Who is acting, for the audit log: OUTPOST_ACTOR for services, else the login behind sudo."""
    if os.environ.get("OUTPOST_ACTOR"):
        return os.environ["OUTPOST_ACTOR"][:128]
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"


class ApiError(Exception):
    """The admin API refused a request or could not be reached."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("outpost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class AdminClient:
    def __init__(self, socket_path: Path, *, acting_as: str | None = None) -> None:
        self.socket_path = socket_path
        self.acting_as = acting_as  # a service names itself; people are found by actor()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        if not self.socket_path.exists():
            raise ApiError(
                f"no admin socket at {self.socket_path}: is the server running? "
                "(use --data-dir or --admin-socket)"
            )
        payload = None if body is None else json.dumps(body).encode()
        headers = {"X-Outpost-Actor": self.acting_as or actor(), "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn = _UnixConnection(self.socket_path, REQUEST_TIMEOUT_S)
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except OSError as exc:
            raise ApiError(f"cannot reach the server at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if status >= 400:
            msg = data.get("error") if isinstance(data, dict) else raw.decode(errors="replace")
            raise ApiError(f"{msg} (HTTP {status})")
        return data

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self._request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)
