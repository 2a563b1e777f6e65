"""A small synchronous client for the admin API over its unix socket."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import httpx

REQUEST_TIMEOUT_S = 30.0


def actor() -> str:
    """Who is acting, for the audit log: the login behind sudo if any."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"


class ApiError(Exception):
    """The admin API refused a request or could not be reached."""


class AdminClient:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        if not self.socket_path.exists():
            raise ApiError(
                f"no admin socket at {self.socket_path}: is the server running? "
                "(use --data-dir or --admin-socket)"
            )
        transport = httpx.HTTPTransport(uds=str(self.socket_path))
        try:
            with httpx.Client(
                transport=transport,
                base_url="http://outpost",
                timeout=REQUEST_TIMEOUT_S,
                headers={"X-Outpost-Actor": actor()},
            ) as c:
                r = c.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the server at {self.socket_path}: {exc}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            msg = data.get("error") if isinstance(data, dict) else r.text
            raise ApiError(f"{msg} (HTTP {r.status_code})")
        return data

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)
