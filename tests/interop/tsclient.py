"""Wrappers that drive unmodified official Tailscale clients inside a netns.

Theory of operation
-------------------
:class:`TailscaleNode` runs one ``tailscaled`` in the network namespace of a
:class:`netns.Host` and talks to it with the matching ``tailscale`` CLI over
a private LocalAPI socket. :class:`TsnetCaddyNode` runs the Caddy build that
embeds tsnet (caddy-tailscale) in its own namespace.

Every process gets the network-safety settings of docs ``real-clients.md``:
``--no-logs-no-support`` + ``TS_NO_LOGS_NO_SUPPORT=true`` (no log upload),
``TS_DISABLE_PORTMAPPER=1`` (no NAT-PMP/UPnP), ``TS_PANIC_IF_HIT_MAIN_CONTROL=1``
(crash rather than log in to Tailscale's control plane), its own
``--statedir``/``--socket``/``--port``, and an IP-literal ``--login-server``
inside the topology (no DNS lookup, hence no bootstrap-DNS fallback).

TUN choice: **kernel TUN** (``tailscale0`` inside the client's namespace).
``/dev/net/tun`` works inside a network namespace and the interface, its
routes (table 52) and its nftables rules all stay in that namespace. The
benefit is that ordinary tools (``curl``, ``python -m http.server``) run in
the namespace and use the tailnet directly, so the tests exercise the real
data path with plain sockets. ``up`` always passes ``--accept-dns=false`` so
tailscaled never rewrites ``/etc/resolv.conf`` (which ``ip netns exec``
bind-mounts from ``/etc/netns/<ns>/``). Set ``tun="userspace-networking"``
to get the netstack mode instead.

tsnet (the Caddy node) is always userspace; it is reached from the other
namespaces over the tailnet, and observed through its peers' status and the
server's node list (tsnet has no LocalAPI socket to query).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import netns

T = TypeVar("T")

DEFAULT_WAIT_S = 45.0
CLI_TIMEOUT_S = 30.0
UP_TIMEOUT_S = 60.0
TAILSCALED_PORT = 41641
STARTUP_S = 20.0

# Environment every client process gets (see module docstring).
SAFE_CLIENT_ENV: Mapping[str, str] = {
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_DISABLE_UPNP": "1",
    "TS_PANIC_IF_HIT_MAIN_CONTROL": "1",
    "TS_DEBUG_LOG_RATE": "all",
}


class WaitTimeout(AssertionError):
    """A condition did not become true in time."""


class ProcessDied(RuntimeError):
    """A process the harness started exited while a wait depended on it."""


def wait_until(
    pred: Callable[[], T | None],
    timeout: float = DEFAULT_WAIT_S,
    *,
    interval: float = 0.5,
    desc: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``pred`` until it returns something truthy; return that value.

    Exceptions raised by ``pred`` count as "not yet" and the last one is
    reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_val: object = None
    while True:
        try:
            val = pred()
            if val:
                return val
            last_val = val
        except (
            AssertionError,
            netns.NetnsError,
            subprocess.SubprocessError,
            OSError,
            ValueError,
            KeyError,
        ) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = on_timeout() if on_timeout else ""
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {desc}; last value "
                f"{last_val!r}; last error {last_exc!r}\n{extra}"
            )
        time.sleep(interval)


def tail(path: Path, max_bytes: int = 12000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"<no log {path}: {exc}>"
    return data[-max_bytes:].decode("utf-8", "replace")


# Logs the conftest hook prints when a test fails.
ACTIVE_LOGS: dict[str, Path] = {}


def register_log(label: str, path: Path) -> None:
    ACTIVE_LOGS[label] = path


def unregister_log(label: str) -> None:
    ACTIVE_LOGS.pop(label, None)


@dataclass(frozen=True)
class PingResult:
    ok: bool
    via: str | None  # "DERP(<region>)", "<ip>:<port>" (direct) or None
    output: str
    returncode: int

    @property
    def via_derp(self) -> bool:
        return self.via is not None and self.via.startswith("DERP")

    @property
    def direct(self) -> bool:
        return self.via is not None and not self.via.startswith("DERP")


_PONG_RE = re.compile(r"pong from \S+ \(([^)]*)\) via (\S+)")


def parse_ping(output: str, returncode: int) -> PingResult:
    """Parse ``tailscale ping`` output; the last pong decides the path."""
    pongs = _PONG_RE.findall(output)
    if not pongs:
        return PingResult(False, None, output, returncode)
    via = pongs[-1][1]
    return PingResult(True, via, output, returncode)


@dataclass
class TailscaleNode:
    """One official ``tailscaled`` + ``tailscale`` CLI in a namespace."""

    host: netns.Host
    bindir: Path
    workdir: Path
    version: str
    ca_file: Path | None = None
    tun: str = "tailscale0"  # or "userspace-networking"
    port: int = TAILSCALED_PORT
    env_extra: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    login_server: str | None = None
    hostname: str | None = None
    last_up_output: Path | None = None  # output file of the last up_interactive

    # -- paths ---------------------------------------------------------------------
    @property
    def statedir(self) -> Path:
        return self.workdir / "state"

    @property
    def socket(self) -> Path:
        return self.workdir / "tailscaled.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tailscaled.log"

    @property
    def label(self) -> str:
        return f"tailscaled {self.version} [{self.host.role}]"

    def env(self) -> dict[str, str]:
        env = dict(SAFE_CLIENT_ENV)
        env["HOME"] = str(self.workdir)
        env["TS_LOGS_DIR"] = str(self.workdir / "logs")
        if self.ca_file is not None:
            # Trust the Outpost root for DERP TLS (Go reads SSL_CERT_FILE).
            env["SSL_CERT_FILE"] = str(self.ca_file)
        env.update(self.env_extra)
        return env

    # -- daemon --------------------------------------------------------------------
    def start(self) -> TailscaleNode:
        """Start tailscaled inside the host's network namespace (netns)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.statedir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        argv = [
            str(self.bindir / "tailscaled"),
            "--no-logs-no-support",
            f"--statedir={self.statedir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            f"--tun={self.tun}",
        ]
        with open(self.log_path, "ab") as f:
            f.write(f"\n=== start {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self.proc = netns.popen(
            self.host.ns, argv, env=self.env(), log_path=self.log_path, cwd=self.workdir
        )
        register_log(self.label, self.log_path)
        wait_until(
            self._responding,
            STARTUP_S,
            interval=0.2,
            desc=f"{self.label} LocalAPI",
            on_timeout=self.log_tail,
        )
        return self

    def _responding(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessDied(f"tailscaled exited with {self.proc.returncode}")
        self.status()
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            netns.stop_process(self.proc, sig=sig)
            self.proc = None

    def restart_daemon(self, sig: int = signal.SIGTERM) -> TailscaleNode:
        self.stop(sig)
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, max_bytes: int = 8000) -> str:
        return f"--- {self.label} log ({self.log_path}) ---\n{tail(self.log_path, max_bytes)}"

    # -- CLI -----------------------------------------------------------------------
    def cli(
        self, *args: str, timeout: float = CLI_TIMEOUT_S, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / "tailscale"), f"--socket={self.socket}", *args]
        return netns.run(self.host.ns, argv, env=self.env(), timeout=timeout, check=check)

    def version_string(self) -> str:
        out = self.cli("version", check=True).stdout
        return out.splitlines()[0].strip()

    def status(self) -> dict[str, Any]:
        proc = self.cli("status", "--json", timeout=10)
        # `status` exits 1 when not running but still prints the JSON.
        if not proc.stdout.strip().startswith("{"):
            raise netns.NetnsError(
                f"status --json: rc={proc.returncode} {proc.stdout[:300]} {proc.stderr[:300]}"
            )
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def backend_state(self) -> str:
        return str(self.status().get("BackendState", ""))

    def up(
        self,
        login_server: str,
        authkey: str | None = None,
        *,
        hostname: str | None = None,
        extra: Sequence[str] = (),
        timeout: float = UP_TIMEOUT_S,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``tailscale up --login-server=... --auth-key=... --reset`` (blocking)."""
        self.login_server = login_server
        if hostname is not None:
            self.hostname = hostname
        args = self._up_args(login_server, authkey, hostname, extra, timeout)
        proc = self.cli(*args, timeout=timeout + 15)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.label}: tailscale {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}\n"
                f"{self.log_tail()}"
            )
        return proc

    def _up_args(
        self,
        login_server: str,
        authkey: str | None,
        hostname: str | None,
        extra: Sequence[str],
        timeout: float,
    ) -> list[str]:
        netns._check_safe_ip(_host_of(login_server))
        args = [
            "up",
            f"--login-server={login_server}",
            "--reset",
            "--accept-dns=false",
            f"--timeout={int(timeout)}s",
        ]
        if authkey:
            args.append(f"--auth-key={authkey}")
        if hostname:
            args.append(f"--hostname={hostname}")
        args.extend(extra)
        return args

    def up_interactive(
        self,
        login_server: str,
        *,
        hostname: str | None = None,
        extra: Sequence[str] = (),
        timeout: float = UP_TIMEOUT_S,
        url_timeout: float = 30.0,
    ) -> tuple[subprocess.Popen[bytes], str]:
        """Run ``up`` without a key in the background; return (process, AuthURL).

        The URL is taken from ``status --json`` (``AuthURL``) or from ``up``'s
        own "To authenticate, visit:" output, whichever shows first.
        """
        self.login_server = login_server
        if hostname is not None:
            self.hostname = hostname
        args = self._up_args(login_server, None, hostname, extra, timeout)
        out_path = self.workdir / f"up-{int(time.time() * 1000)}.out"
        self.last_up_output = out_path
        argv = [str(self.bindir / "tailscale"), f"--socket={self.socket}", *args]
        proc = netns.popen(self.host.ns, argv, env=self.env(), log_path=out_path)
        register_log(f"{self.label} up", out_path)

        def url() -> str | None:
            m = re.search(r"(https?://\S+)", tail(out_path))
            if m:
                return m.group(1)
            with contextlib.suppress(netns.NetnsError, ValueError):
                u = self.status().get("AuthURL")
                if u:
                    return str(u)
            if proc.poll() is not None:
                raise ProcessDied(f"up exited {proc.returncode}: {tail(out_path)}")
            return None

        auth_url = wait_until(
            url,
            url_timeout,
            desc=f"{self.label} AuthURL",
            on_timeout=lambda: tail(out_path) + "\n" + self.log_tail(),
        )
        return proc, auth_url

    def logout(self) -> subprocess.CompletedProcess[str]:
        return self.cli("logout", timeout=30)

    # -- observations --------------------------------------------------------------
    def ip4(self) -> str:
        ips = self.status().get("TailscaleIPs") or []
        for ip in ips:
            if ":" not in ip:
                return str(ip)
        raise AssertionError(f"{self.label} has no IPv4 tailnet address: {ips}")

    def ips(self) -> list[str]:
        return list(self.status().get("TailscaleIPs") or [])

    def peers(self) -> list[dict[str, Any]]:
        return list((self.status().get("Peer") or {}).values())

    def wait_until(
        self,
        pred: Callable[[dict[str, Any]], T | None],
        timeout: float = DEFAULT_WAIT_S,
        desc: str = "status condition",
    ) -> T:
        """Poll ``status --json`` until ``pred(status)`` is truthy."""
        last: dict[str, Any] = {}

        def check() -> T | None:
            nonlocal last
            last = self.status()
            return pred(last)

        def dump() -> str:
            return (
                f"last status of {self.label}:\n"
                f"{json.dumps(_brief_status(last), indent=1)}\n{self.log_tail()}"
            )

        return wait_until(check, timeout, desc=f"{self.label}: {desc}", on_timeout=dump)

    def wait_state(self, state: str, timeout: float = DEFAULT_WAIT_S) -> dict[str, Any]:
        return self.wait_until(
            lambda s: s if s.get("BackendState") == state else None,
            timeout,
            desc=f"BackendState == {state!r}",
        )

    def wait_running(self, timeout: float = DEFAULT_WAIT_S) -> dict[str, Any]:
        return self.wait_until(
            lambda s: s if s.get("BackendState") == "Running" and s.get("TailscaleIPs") else None,
            timeout,
            desc="BackendState == 'Running' with addresses",
        )

    def ping(
        self,
        target: str,
        *,
        count: int = 10,
        timeout_s: int = 5,
        until_direct: bool = True,
        tsmp: bool = False,
    ) -> PingResult:
        """``tailscale ping``; result says whether a pong came and by which path."""
        args = [
            "ping",
            f"--c={count}",
            f"--timeout={timeout_s}s",
            f"--until-direct={'true' if until_direct else 'false'}",
        ]
        if tsmp:
            args.append("--tsmp")
        args.append(target)
        proc = self.cli(*args, timeout=count * (timeout_s + 1) + 15)
        return parse_ping(proc.stdout + proc.stderr, proc.returncode)

    def curl(self, url: str, *, timeout_s: int = 10) -> subprocess.CompletedProcess[str]:
        """Plain ``curl`` from this namespace (uses the kernel TUN routes)."""
        return netns.run(
            self.host.ns,
            ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout_s), url],
            timeout=timeout_s + 10,
        )


def _host_of(url: str) -> str:
    m = re.match(r"^https?://(\[[^\]]+\]|[^/:]+)", url)
    if not m:
        raise ValueError(f"not a URL: {url}")
    return m.group(1).strip("[]")


def _brief_status(st: dict[str, Any]) -> dict[str, Any]:
    """A readable subset of ``status --json`` for failure messages."""
    peers = {}
    for p in (st.get("Peer") or {}).values():
        peers[p.get("DNSName") or p.get("HostName")] = {
            k: p.get(k)
            for k in ("HostName", "TailscaleIPs", "Online", "Expired", "Relay", "CurAddr", "ID")
        }
    self_ = st.get("Self") or {}
    return {
        "BackendState": st.get("BackendState"),
        "AuthURL": st.get("AuthURL"),
        "TailscaleIPs": st.get("TailscaleIPs"),
        "Self": {k: self_.get(k) for k in ("DNSName", "HostName", "Online", "ID")},
        "Health": st.get("Health"),
        "Peers": peers,
    }


def peer_by_ip(status: dict[str, Any], ip: str) -> dict[str, Any] | None:
    for p in (status.get("Peer") or {}).values():
        if ip in (p.get("TailscaleIPs") or []):
            return dict(p)
    return None


CADDYFILE_TEMPLATE = """\
{{
\tadmin off
\tpersist_config off
\ttailscale {{
\t\tcontrol_url {control_url}
\t\tauth_key {auth_key}
\t\tstate_dir {state_dir}
\t}}
}}

:80 {{
\tbind tailscale/{name}
\trespond "hello from {name}"
}}
"""


@dataclass
class TsnetCaddyNode:
    """Caddy with the embedded tsnet client (caddy-tailscale), in a namespace."""

    host: netns.Host
    bindir: Path
    workdir: Path
    name: str
    ca_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    version: str = "tsnet-1.90.9"

    @property
    def log_path(self) -> Path:
        return self.workdir / "caddy.log"

    @property
    def caddyfile(self) -> Path:
        return self.workdir / "Caddyfile"

    @property
    def label(self) -> str:
        return f"caddy/tsnet [{self.host.role}]"

    def env(self) -> dict[str, str]:
        env = dict(SAFE_CLIENT_ENV)
        env.update(
            {
                "HOME": str(self.workdir),
                "XDG_DATA_HOME": str(self.workdir / "data"),
                "XDG_CONFIG_HOME": str(self.workdir / "config"),
            }
        )
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env

    def write_config(self, control_url: str, auth_key: str) -> Path:
        netns._check_safe_ip(_host_of(control_url))
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = self.workdir / "tsnet"
        state.mkdir(exist_ok=True)
        self.caddyfile.write_text(
            CADDYFILE_TEMPLATE.format(
                control_url=control_url, auth_key=auth_key, state_dir=state, name=self.name
            )
        )
        return self.caddyfile

    def adapt(self) -> dict[str, Any]:
        """``caddy adapt`` (offline syntax check) of the written Caddyfile."""
        proc = netns.run(
            self.host.ns,
            [
                str(self.bindir / "caddy"),
                "adapt",
                "--config",
                str(self.caddyfile),
                "--adapter",
                "caddyfile",
            ],
            env=self.env(),
            check=True,
        )
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def start(self, control_url: str, auth_key: str) -> TsnetCaddyNode:
        """Start Caddy inside the host's network namespace (netns)."""
        self.write_config(control_url, auth_key)
        argv = [
            str(self.bindir / "caddy"),
            "run",
            "--config",
            str(self.caddyfile),
            "--adapter",
            "caddyfile",
        ]
        self.proc = netns.popen(
            self.host.ns, argv, env=self.env(), log_path=self.log_path, cwd=self.workdir
        )
        register_log(self.label, self.log_path)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise AssertionError(f"caddy exited {self.proc.returncode}\n{self.log_tail()}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            netns.stop_process(self.proc, sig=sig)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, max_bytes: int = 8000) -> str:
        return f"--- {self.label} log ({self.log_path}) ---\n{tail(self.log_path, max_bytes)}"
