"""An asynchronous client for the admin API on its unix socket.

The console's only way to the server. Every call has a short timeout so a busy
or stopped server turns into an exception the caller reports, never a hang:
screens call these from workers, so the interface stays responsive either way.

Two kinds of failure, because the console treats them differently:

* `ServerUnreachable`: no socket, connection refused, timeout. The status bar
  says so and the connection monitor retries.
* `ApiError`: the server answered with a 4xx/5xx. Its `{"error": "..."}` text
  is shown to the admin as is (e.g. "user 'alice' already exists").
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT_S = 5.0
RESTORE_TIMEOUT_S = 600.0  # decrypting and checking a large backup on a slow box
# Renewing or revoking a certificate makes a key and fsyncs several files.
SLOW_TIMEOUT_S = 20.0


def console_actor() -> str:
    """Who acts, for the server's audit record (the CLI sends cli:<login>)."""
    try:
        return f"console:{getpass.getuser()}"
    except (KeyError, OSError):
        return "console"


class ApiError(Exception):
    """The admin API refused a request."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ServerUnreachable(ApiError):
    """The admin API could not be reached (not running, busy, wrong socket)."""


class AsyncAdminClient:
    """Typed-ish wrappers over the `/v1/...` endpoints (see server api/app.py)."""

    def __init__(
        self, socket_path: Path | str, timeout: float = DEFAULT_TIMEOUT_S, actor: str | None = None
    ) -> None:
        self.socket_path = Path(socket_path)
        self.actor = actor or console_actor()  # X-Outpost-Actor: who the audit log names
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
            self._client = httpx.AsyncClient(
                transport=transport,
                base_url="http://outpost",
                timeout=self.timeout,
                headers={"X-Outpost-Actor": self.actor},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        if not self.socket_path.exists():
            raise ServerUnreachable(f"no admin socket at {self.socket_path}")
        try:
            r = await self._http().request(
                method, path, json=body, timeout=timeout_s or self.timeout
            )
        except httpx.TimeoutException:
            raise ServerUnreachable("the server did not answer in time (busy?)") from None
        except httpx.TransportError as exc:
            # A dead pooled connection after a server restart lands here too:
            # drop the pool so the next call opens a fresh connection.
            await self.aclose()
            raise ServerUnreachable(
                f"cannot reach the server: {exc or type(exc).__name__}"
            ) from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            msg = data.get("error") if isinstance(data, dict) else None
            raise ApiError(str(msg or r.text or f"HTTP {r.status_code}"), r.status_code)
        return data

    # ------------------------------------------------------------- endpoints
    async def status(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/status"))

    async def users(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/users"))

    async def create_user(self, name: str, display_name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if display_name:
            body["display_name"] = display_name
        return dict(await self.request("POST", "/v1/users", body))

    async def delete_user(self, name: str) -> dict[str, Any]:
        return dict(await self.request("DELETE", f"/v1/users/{quote(name, safe='')}"))

    async def keys(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/enrolment-keys"))

    async def create_key(
        self,
        *,
        user: str | None,
        tags: list[str],
        expires_in: str | None,
        reusable: bool,
        ephemeral: bool,
        description: str = "",
    ) -> dict[str, Any]:
        body = {
            "user": user or None,
            "tags": tags,
            "expires_in": expires_in or None,
            "reusable": reusable,
            "ephemeral": ephemeral,
            "description": description,
        }
        return dict(await self.request("POST", "/v1/enrolment-keys", body))

    async def revoke_key(self, key_id: int) -> dict[str, Any]:
        return dict(await self.request("DELETE", f"/v1/enrolment-keys/{int(key_id)}"))

    async def nodes(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/nodes"))

    async def node(self, node_id: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/nodes/{int(node_id)}"))

    async def rename_node(self, node_id: int, name: str) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/nodes/{int(node_id)}/rename", {"name": name}))

    async def set_node_tags(self, node_id: int, tags: list[str]) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/nodes/{int(node_id)}/tags", {"tags": tags}))

    async def node_routes(self, node_id: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/nodes/{int(node_id)}/routes"))

    async def approve_routes(self, node_id: int, routes: list[str]) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/nodes/{int(node_id)}/routes", {"routes": routes}))

    async def expire_node(self, node_id: int) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/nodes/{int(node_id)}/expire", {}))

    async def delete_node(self, node_id: int) -> dict[str, Any]:
        return dict(await self.request("DELETE", f"/v1/nodes/{int(node_id)}"))

    async def pending(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/nodes/pending"))

    async def approve(self, auth_id: str, *, user: str | None, tags: list[str]) -> dict[str, Any]:
        path = f"/v1/nodes/pending/{quote(auth_id, safe='')}/approve"
        return dict(await self.request("POST", path, {"user": user or None, "tags": tags}))

    async def reject(self, auth_id: str) -> dict[str, Any]:
        path = f"/v1/nodes/pending/{quote(auth_id, safe='')}/reject"
        return dict(await self.request("POST", path, {}))

    # backups (restores run offline with `outpost backup restore`, never from here)
    async def backup_status(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/backup"))

    async def backups(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/backup/list"))

    async def backup_run(self, label: str = "") -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/backup/run", {"label": label}))

    async def backup_job(self, job_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/backup/jobs/{quote(job_id, safe='')}"))

    async def backup_verify(self, name: str) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/backup/verify/{quote(name, safe='')}", {}))

    async def backup_restore(self, request: dict[str, Any]) -> dict[str, Any]:
        """Decrypt and check in full, then restart the server to swap the state in."""
        return dict(await self.request("POST", "/v1/backup/restore", request, timeout_s=RESTORE_TIMEOUT_S))

    async def backup_prune(self, dry_run: bool) -> list[str]:
        return list((await self.request("POST", "/v1/backup/prune", {"dry_run": dry_run}))["pruned"])

    async def bundles(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/bundles"))

    async def bundle(self, bundle_id: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/bundles/{int(bundle_id)}"))

    async def approve_bundle(self, bundle_id: int) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/bundles/{int(bundle_id)}/approve", {}))

    async def reject_bundle(self, bundle_id: int, reason: str) -> dict[str, Any]:
        path = f"/v1/bundles/{int(bundle_id)}/reject"
        return dict(await self.request("POST", path, {"reason": reason}))

    # policy (the server checks syntax and the policy's own tests; errors carry line and column)
    async def policy(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/policy"))

    async def policy_history(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/v1/policy/history"))

    async def policy_version(self, version: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/policy/{int(version)}"))

    async def policy_diff(self, a: int, b: int) -> str:
        return str((await self.request("GET", f"/v1/policy/diff/{int(a)}/{int(b)}"))["diff"])

    async def policy_check(self, text: str) -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/policy/check", {"text": text}))

    async def set_policy(self, text: str, comment: str = "") -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/policy", {"text": text, "comment": comment}))

    async def policy_rollback(self, version: int) -> dict[str, Any]:
        return dict(await self.request("POST", f"/v1/policy/rollback/{int(version)}", {}))

    # removable media the root USB watcher holds: export requests, first-trust candidates
    async def media(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/media"))

    async def request_export(self, kind: str, device: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {**params, "kind": kind, "device": device}
        return dict(await self.request("POST", "/v1/media/exports", body, timeout_s=SLOW_TIMEOUT_S))

    async def export_request(self, request_id: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/media/exports/{int(request_id)}"))

    async def install_candidate(self, candidate_id: int) -> dict[str, Any]:
        path = f"/v1/media/candidates/{int(candidate_id)}/install"
        return dict(await self.request("POST", path, {}, timeout_s=SLOW_TIMEOUT_S))

    # audit log (exports to a device go through the media requests above)
    async def audit(self, start: int = 0, limit: int = 100) -> dict[str, Any]:
        path = f"/v1/audit?start={int(start)}&limit={int(limit)}"
        return dict(await self.request("GET", path))

    async def audit_verify(self) -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/audit/verify", {}, timeout_s=SLOW_TIMEOUT_S))

    # certificates (anything needing the root key stays with `outpost ca` on the box)
    async def certs(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/certs"))

    async def renew_leaf(self) -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/certs/renew", {}, timeout_s=SLOW_TIMEOUT_S))

    async def revoke_cert(self, serial: str, reason: str) -> dict[str, Any]:
        body = {"serial": serial, "reason": reason}
        return dict(await self.request("POST", "/v1/certs/revoke", body, timeout_s=SLOW_TIMEOUT_S))

    # site settings and first-boot setup (see the server's site.py)
    async def site(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/site"))

    async def set_site(self, **fields: Any) -> dict[str, Any]:
        return dict(await self.request("PUT", "/v1/site", fields))

    async def complete_setup(self) -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/site/complete", {}))

    async def trust(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/bundles/trust"))

    async def init_trust(self, document: str) -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/bundles/trust/init", {"document": document}))

    async def add_recovery_key(self, public: str, label: str) -> dict[str, Any]:
        body = {"public": public, "label": label}
        return dict(await self.request("POST", "/v1/backup/recipients", body))
