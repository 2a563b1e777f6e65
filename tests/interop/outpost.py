"""Run the Outpost server inside the test topology and drive its admin CLI.

The server runs in its own network namespace (netns) at 198.18.0.1 with the
command line agreed with the server's author::

    outpost --data-dir D serve --listen 198.18.0.1:80 --tls-listen 198.18.0.1:443 \\
        --stun-listen 198.18.0.1:3478 --server-url http://198.18.0.1 --log-level debug

(``--data-dir`` is a global option of the ``outpost`` CLI, before the subcommand.)

The admin CLI (``outpost --admin-socket D/admin.sock ...``) runs in the root
namespace: it only opens the unix socket, which is a filesystem object and
therefore reachable across network namespaces. Clients trust
``D/tls/root.pem`` for DERP over TLS (passed to them as ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import netns
from .tsclient import ProcessDied, register_log, tail, wait_until

REPO = Path(__file__).resolve().parents[2]
OUTPOST_BIN = REPO / ".venv" / "bin" / "outpost"
SERVER_IP = "198.18.0.1"
READY_TIMEOUT_S = 60.0
ADMIN_TIMEOUT_S = 30.0


def server_available(outpost_bin: Path = OUTPOST_BIN) -> tuple[bool, str]:
    """Whether ``outpost serve --help`` works (the server is wired up)."""
    if not outpost_bin.exists():
        return False, f"{outpost_bin} does not exist"
    try:
        proc = subprocess.run(
            [str(outpost_bin), "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"{outpost_bin} serve --help: {exc}"
    if proc.returncode != 0:
        return False, (
            f"{outpost_bin} serve --help exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout)[-800:]}"
        )
    return True, proc.stdout


class AdminError(AssertionError):
    """An admin CLI command failed."""


@dataclass
class OutpostServer:
    host: netns.Host
    data_dir: Path
    log_path: Path
    outpost_bin: Path = OUTPOST_BIN
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env_extra: dict[str, str] = field(default_factory=dict)
    log_level: str = "debug"

    @property
    def ip(self) -> str:
        return self.host.ip

    @property
    def url(self) -> str:
        return f"http://{self.ip}"

    @property
    def admin_socket(self) -> Path:
        return self.data_dir / "admin.sock"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "root.pem"

    @property
    def label(self) -> str:
        return "outpost serve"

    def argv(self) -> list[str]:
        return [
            str(self.outpost_bin),
            "--data-dir",
            str(self.data_dir),
            "serve",
            "--listen",
            f"{self.ip}:80",
            "--tls-listen",
            f"{self.ip}:443",
            "--stun-listen",
            f"{self.ip}:3478",
            "--server-url",
            self.url,
            "--log-level",
            self.log_level,
        ]

    def env(self) -> dict[str, str]:
        env = {
            "HOME": str(self.data_dir.parent),
            "PYTHONPATH": ":".join(str(REPO / d) for d in ("server", "appliance", "tui")),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.env_extra)
        return env

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = READY_TIMEOUT_S) -> OutpostServer:
        """Start the server in its network namespace (netns) and wait for readiness."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(
                f"\n=== start #{self.starts} {time.strftime('%H:%M:%S')} "
                f"{' '.join(self.argv())}\n".encode()
            )
        self.proc = netns.popen(
            self.host.ns, self.argv(), env=self.env(), log_path=self.log_path, cwd=REPO
        )
        register_log(self.label, self.log_path)
        wait_until(
            self._ready,
            timeout,
            interval=0.3,
            desc="outpost admin status",
            on_timeout=self.log_tail,
        )
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessDied(f"outpost serve exited {self.proc.returncode}\n{self.log_tail()}")
        if not self.admin_socket.exists():
            return False
        return self.admin("status", "--json", check=False, timeout=10).returncode == 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        rc = netns.stop_process(self.proc, sig=sig, timeout=timeout)
        self.proc = None
        return rc

    def restart(self, sig: int = signal.SIGTERM) -> OutpostServer:
        self.stop(sig)
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, max_bytes: int = 12000) -> str:
        return f"--- outpost serve log ({self.log_path}) ---\n{tail(self.log_path, max_bytes)}"

    # -- admin CLI (root namespace, unix socket) ------------------------------------
    def admin(
        self, *args: str, check: bool = True, timeout: float = ADMIN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.outpost_bin), "--admin-socket", str(self.admin_socket), *args]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
            env={**netns.BASE_ENV, **self.env()},
        )
        if check and proc.returncode != 0:
            raise AdminError(
                f"outpost {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def admin_json(self, *args: str) -> Any:
        proc = self.admin(*args, "--json")
        try:
            return json.loads(proc.stdout)
        except ValueError as exc:
            raise AdminError(
                f"outpost {' '.join(args)} --json printed non-JSON: {proc.stdout[:500]!r}"
            ) from exc

    def create_user(self, name: str) -> None:
        self.admin("users", "create", name)

    def create_key(
        self,
        user: str,
        *,
        reusable: bool = False,
        ephemeral: bool = False,
        expires: str | None = None,
        tags: str | None = None,
    ) -> str:
        args = ["keys", "create", "--user", user]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        if expires:
            args += ["--expires", expires]
        if tags:
            args += ["--tags", tags]
        data = self.admin_json(*args)
        key = data.get("key") if isinstance(data, dict) else None
        if not key:
            raise AdminError(f"keys create printed no key: {data!r}")
        return str(key)

    def nodes(self) -> list[dict[str, Any]]:
        data = self.admin_json("nodes", "list")
        if isinstance(data, dict) and "nodes" in data:
            data = data["nodes"]
        return list(data)

    def node(
        self, *, hostname: str | None = None, ipv4: str | None = None
    ) -> dict[str, Any] | None:
        for n in self.nodes():
            if hostname is not None and hostname in (n.get("hostname"), n.get("name")):
                return n
            if ipv4 is not None and n.get("ipv4") == ipv4:
                return n
        return None

    def delete_node(self, node_id: object) -> None:
        self.admin("nodes", "delete", str(node_id), "--yes")

    def rename_node(self, node_id: object, new_name: str) -> None:
        self.admin("nodes", "rename", str(node_id), new_name)

    def expire_node(self, node_id: object) -> None:
        self.admin("nodes", "expire", str(node_id), "--yes")

    def policy(
        self, *args: str, check: bool = True, timeout: float = ADMIN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``outpost --data-dir D policy ARGS`` (``set FILE``, ``get``, ``check FILE``)."""
        argv = [
            str(self.outpost_bin),
            "--data-dir",
            str(self.data_dir),
            "--admin-socket",
            str(self.admin_socket),
            "policy",
            *args,
        ]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
            env={**netns.BASE_ENV, **self.env()},
        )
        if check and proc.returncode != 0:
            raise AdminError(
                f"outpost policy {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def set_policy(self, text: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Write ``text`` to a file under the data dir's parent and ``policy set`` it."""
        path = self.data_dir.parent / f"policy-{time.monotonic_ns()}.hujson"
        path.write_text(text)
        return self.policy("set", str(path), check=check)

    def pending(self) -> list[dict[str, Any]]:
        data = self.admin_json("nodes", "pending")
        if isinstance(data, dict) and "pending" in data:
            data = data["pending"]
        return list(data)

    def approve(self, auth_id: str, user: str) -> None:
        self.admin("nodes", "approve", auth_id, "--user", user)
