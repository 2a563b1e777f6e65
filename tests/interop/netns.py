"""Closed network topology for the interop tests, built from network namespaces.

Theory of operation
-------------------
Official Tailscale clients reach for the public Internet as soon as they get a
chance (log upload, bootstrap DNS, captive-portal probes; docs
``reference/derp-stun-offline.md`` §7). The tests therefore run every client,
and the Outpost server, inside a network namespace of its own (``netns``)
whose only interfaces are ``lo`` and one veth link into a bridge. The bridge
lives in a dedicated *hub* namespace, so building the topology never adds an
interface, address or route to the root namespace::

    hub ns:   br0 ── v1 ── v2 ── v3 ...        (no addresses at all)
               │      │     │
    host ns:  eth0   eth0  eth0                (198.18.0.N/24, lo up)
              srv    n1    n2

* Addresses come from 198.18.0.0/24 (inside the benchmarking range
  198.18.0.0/15), assigned here. No namespace has a default route, so any
  packet for an address outside the test subnet fails locally with "network
  unreachable".
* IPv6 is disabled on every veth (no link-local addresses): nothing
  unplanned can leak over v6 and clients cannot discover v6 endpoints that the
  "relay only" filter would have to know about.
* ``/etc/netns/<ns>/resolv.conf`` is written empty for every namespace, so
  anything started with ``ip netns exec`` has no DNS resolver.
* Names are ``opt-<pid>-<tag>-<role>``; :func:`cleanup_stale` removes
  namespaces whose creating process is gone (a crashed earlier run).

Everything runs through ``ip``/``nft`` with ``-n``/``ip netns exec``; the
module needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

NS_PREFIX = "opt-"
# Matches only namespaces this module created: opt-<pid>-<tag>-<role>.
_OWN_NS_RE = re.compile(r"^opt-(\d+)-[0-9a-f]{4}-[a-z0-9-]+$")
NETNS_ETC = Path("/etc/netns")
SUBNET = ipaddress.ip_network("198.18.0.0/24")
# Guard rail: every address the harness assigns or targets lies in here.
SAFE_RANGE = ipaddress.ip_network("198.18.0.0/15")
HOST_IFNAME = "eth0"
BRIDGE = "br0"
NFT_TABLE = "outpost_test"
CMD_TIMEOUT_S = 30

# Minimal environment for processes started in a namespace: no proxies, no
# inherited knobs from the developer's shell.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

# Run inside the mount namespace that `ip netns exec` creates: hide the
# system D-Bus socket (if the machine has one), so no client can reach a
# root-namespace daemon (resolved, NetworkManager) and change host settings.
# `ip netns exec` marks / as slave, so this mount never propagates out.
_NS_WRAPPER = (
    "if [ -d /run/dbus ]; then mount -t tmpfs -o size=64k,mode=0755 outpost-nodbus /run/dbus "
    '2>/dev/null; fi; exec "$@"'
)


class NetnsError(RuntimeError):
    """A namespace command failed."""


def _check_safe_ip(ip: str) -> None:
    addr = ipaddress.ip_address(ip.split("/", maxsplit=1)[0])
    if addr not in SAFE_RANGE:
        raise NetnsError(f"refusing to use {ip}: not inside {SAFE_RANGE}")


def sh(
    argv: Sequence[str],
    *,
    timeout: float = CMD_TIMEOUT_S,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a root-namespace admin command (``ip``, ``nft``) and capture output."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
        env=dict(BASE_ENV),
    )
    if check and proc.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def _ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, "sh", "-c", _NS_WRAPPER, "sh", *argv]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(BASE_ENV)
    if env:
        merged.update(env)
    return merged


def run(
    ns: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = CMD_TIMEOUT_S,
    check: bool = False,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` and wait for it (output captured)."""
    proc = subprocess.run(
        _ns_argv(ns, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(env),
        input=input,
    )
    if check and proc.returncode != 0:
        raise NetnsError(
            f"[{ns}] {' '.join(argv)} exited {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return proc


def popen(
    ns: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    stdout: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in namespace ``ns`` in its own session.

    Output goes to ``log_path`` (appended) unless ``stdout`` is given. The
    returned process's pid is the program's own pid (``ip netns exec`` and the
    wrapper shell both ``exec``).
    """
    out: int | IO[bytes] | None = stdout
    log_file = None
    if out is None and log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        out = log_file
    try:
        return subprocess.Popen(
            _ns_argv(ns, argv),
            env=_env(env),
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log_file is not None:
            log_file.close()


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10
) -> int | None:
    """Signal a process started by :func:`popen`, escalate to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def list_namespaces() -> list[str]:
    out = sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    out = sh(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_namespace_processes(ns: str, *, grace_s: float = 3.0) -> None:
    """SIGTERM every process in ``ns``, then SIGKILL what is left."""
    pids = ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        time.sleep(0.2)


def delete_namespace(ns: str) -> None:
    """Kill what runs in ``ns``, delete it and its /etc/netns directory."""
    if ns in list_namespaces():
        kill_namespace_processes(ns)
        sh(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete ``opt-<pid>-…`` namespaces whose creating process has exited."""
    removed = []
    for ns in list_namespaces():
        m = _OWN_NS_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            delete_namespace(ns)
            removed.append(ns)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            m = _OWN_NS_RE.match(d.name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)
    return removed


def new_run_prefix() -> str:
    """``opt-<pid>-<4 hex>``: unique per run, recognisable by cleanup_stale."""
    return f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(2)}"


def _add_namespace(ns: str) -> None:
    if ns in list_namespaces():
        delete_namespace(ns)
    sh(["ip", "netns", "add", ns])
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    # Empty resolv.conf: `ip netns exec` bind-mounts it over /etc/resolv.conf.
    (etc / "resolv.conf").write_text("")
    sh(["ip", "-n", ns, "link", "set", "lo", "up"])


def _sysctl(ns: str, key: str, value: str) -> None:
    sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])


@dataclass
class Host:
    """One namespace attached to the bridge."""

    role: str
    ns: str
    ip: str
    index: int

    def run(self, argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return run(self.ns, argv, **kw)  # type: ignore[arg-type]


@dataclass
class Topology:
    """A hub namespace with a bridge and any number of attached hosts."""

    prefix: str = field(default_factory=new_run_prefix)
    hub: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    _next_index: int = 1

    def __post_init__(self) -> None:
        if not _OWN_NS_RE.match(f"{self.prefix}-hub"):
            raise NetnsError(f"bad topology prefix {self.prefix!r}")
        self.hub = f"{self.prefix}-hub"

    # -- construction ---------------------------------------------------------------
    def create(self) -> Topology:
        _add_namespace(self.hub)
        _sysctl(self.hub, "net.ipv6.conf.all.disable_ipv6", "1")
        _sysctl(self.hub, "net.ipv6.conf.default.disable_ipv6", "1")
        sh(["ip", "-n", self.hub, "link", "add", BRIDGE, "type", "bridge"])
        sh(["ip", "-n", self.hub, "link", "set", BRIDGE, "up"])
        return self

    def add_host(self, role: str, ip: str | None = None) -> Host:
        """Create namespace ``<prefix>-<role>`` with ``eth0`` on the bridge."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,20}", role):
            raise NetnsError(f"bad role name {role!r}")
        if role in self.hosts:
            raise NetnsError(f"host {role!r} exists")
        index = self._next_index
        self._next_index += 1
        used = {h.ip for h in self.hosts.values()}
        if ip is None:
            # .1 is kept for the server; clients take the lowest free address.
            ip = next(str(a) for a in list(SUBNET.hosts())[1:] if str(a) not in used)
        elif ip in used:
            raise NetnsError(f"address {ip} already in use")
        _check_safe_ip(ip)
        ns = f"{self.prefix}-{role}"
        _add_namespace(ns)
        hub_if = f"v{index}"
        # Both ends are created directly inside their namespaces: the root
        # namespace never sees the veth pair.
        sh(
            [
                "ip",
                "-n",
                self.hub,
                "link",
                "add",
                hub_if,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IFNAME,
                "netns",
                ns,
            ]
        )
        sh(["ip", "-n", self.hub, "link", "set", hub_if, "master", BRIDGE])
        sh(["ip", "-n", self.hub, "link", "set", hub_if, "up"])
        _sysctl(ns, f"net.ipv6.conf.{HOST_IFNAME}.disable_ipv6", "1")
        sh(["ip", "-n", ns, "addr", "add", f"{ip}/{SUBNET.prefixlen}", "dev", HOST_IFNAME])
        sh(["ip", "-n", ns, "link", "set", HOST_IFNAME, "up"])
        host = Host(role=role, ns=ns, ip=ip, index=index)
        self.hosts[role] = host
        assert_isolated(ns)
        return host

    def add_lan(
        self,
        role: str,
        router: Host,
        subnet: str,
        *,
        router_if: str = "lan0",
        router_ip: str | None = None,
        host_ip: str | None = None,
    ) -> Host:
        """A namespace ``<prefix>-<role>`` on a private LAN behind ``router``.

        The LAN is one veth pair, ``router_if`` in the router's namespace and
        ``eth0`` in the new one, both created directly inside their
        namespaces (the root namespace and the hub bridge never see it).
        ``subnet`` must lie in 198.18.0.0/15 (e.g. 198.19.1.0/24); the router
        takes the first address, the LAN host the tenth unless given. The LAN
        host has no routes beyond its own subnet (so it relies on the
        router's SNAT to answer tailnet clients). Removed by
        :meth:`remove_host` / :meth:`teardown` like any other host; the
        router's end disappears with either namespace.
        """
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,20}", role):
            raise NetnsError(f"bad role name {role!r}")
        if role in self.hosts:
            raise NetnsError(f"host {role!r} exists")
        net = ipaddress.ip_network(subnet)
        if not net.subnet_of(SAFE_RANGE) or net.overlaps(SUBNET):  # type: ignore[arg-type]
            raise NetnsError(f"LAN {subnet} must be inside {SAFE_RANGE} and outside {SUBNET}")
        hosts = list(net.hosts())
        router_ip = router_ip or str(hosts[0])
        host_ip = host_ip or str(hosts[9])
        for ip in (router_ip, host_ip):
            _check_safe_ip(ip)
            if ipaddress.ip_address(ip) not in net:
                raise NetnsError(f"{ip} is not in {subnet}")
        ns = f"{self.prefix}-{role}"
        _add_namespace(ns)
        # Record it before wiring, so teardown removes it even if wiring fails.
        host = Host(role=role, ns=ns, ip=host_ip, index=0)
        self.hosts[role] = host
        sh(
            [
                "ip",
                "-n",
                router.ns,
                "link",
                "add",
                router_if,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IFNAME,
                "netns",
                ns,
            ]
        )
        for side, ifname, ip in ((router.ns, router_if, router_ip), (ns, HOST_IFNAME, host_ip)):
            _sysctl(side, f"net.ipv6.conf.{ifname}.disable_ipv6", "1")
            sh(["ip", "-n", side, "addr", "add", f"{ip}/{net.prefixlen}", "dev", ifname])
            sh(["ip", "-n", side, "link", "set", ifname, "up"])
        assert_isolated(ns)
        return host

    def remove_host(self, role: str) -> None:
        host = self.hosts.pop(role, None)
        if host is not None:
            delete_namespace(host.ns)
            if host.index:  # LAN hosts (index 0) have no link on the hub bridge
                sh(["ip", "-n", self.hub, "link", "del", f"v{host.index}"], check=False)

    def teardown(self) -> None:
        """Kill everything and delete every namespace; safe to call twice."""
        for role in list(self.hosts):
            with contextlib.suppress(Exception):
                self.remove_host(role)
        delete_namespace(self.hub)
        # Anything else carrying our prefix (half-created hosts).
        for ns in list_namespaces():
            if ns.startswith(self.prefix + "-"):
                delete_namespace(ns)

    def __enter__(self) -> Topology:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.teardown()


# -- checks and filters ---------------------------------------------------------------


def routes(ns: str, *, table: str = "main", family: str = "-4") -> list[str]:
    out = sh(["ip", family, "-n", ns, "route", "show", "table", table], check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def interfaces(ns: str) -> list[str]:
    out = sh(["ip", "-o", "-n", ns, "link", "show"]).stdout
    names = []
    for line in out.splitlines():
        # "2: eth0@if3: <...>"
        name = line.split(":", 2)[1].strip().split("@")[0]
        names.append(name)
    return names


def assert_isolated(
    ns: str, *, allowed_ifaces: Iterable[str] = ("lo", HOST_IFNAME, "tailscale0")
) -> None:
    """Raise unless ``ns`` has no default route and only the expected links.

    Checks every routing table (tailscaled adds table 52 in kernel TUN mode;
    it must never hold a default route in these tests, as no exit node is
    used).
    """
    for fam in ("-4", "-6"):
        for line in routes(ns, table="all", family=fam):
            first = line.split()[0]
            if first in ("default", "0.0.0.0/0", "::/0"):
                raise NetnsError(f"{ns} has a default route: {line}")
            if first in ("unreachable", "throw", "blackhole", "prohibit"):
                continue
    for line in routes(ns, table="main"):
        dst = line.split()[0]
        if dst in ("local", "broadcast", "multicast"):
            continue
        net = ipaddress.ip_network(dst, strict=False)
        if not net.subnet_of(SAFE_RANGE) and not net.subnet_of(
            ipaddress.ip_network("100.64.0.0/10")
        ):
            raise NetnsError(f"{ns} routes outside the test topology: {line}")
    extra = set(interfaces(ns)) - set(allowed_ifaces)
    if extra:
        raise NetnsError(f"{ns} has unexpected interfaces {sorted(extra)}")


def drop_udp_between(ns_a: str, ip_b: str) -> None:
    """In ``ns_a``, drop all UDP to and from ``ip_b`` (both directions).

    Used for "relay only" tests: the WireGuard/disco traffic between two
    clients is UDP, their DERP connection is TCP to the server, and STUN is
    UDP to the server, which stays untouched. Call it in both namespaces.
    """
    _check_safe_ip(ip_b)
    script = (
        f"add table inet {NFT_TABLE}\n"
        f"add chain inet {NFT_TABLE} out {{ type filter hook output priority -10; "
        f"policy accept; }}\n"
        f"add chain inet {NFT_TABLE} in {{ type filter hook input priority -10; "
        f"policy accept; }}\n"
        f"add rule inet {NFT_TABLE} out ip daddr {ip_b} meta l4proto udp counter drop\n"
        f"add rule inet {NFT_TABLE} in ip saddr {ip_b} meta l4proto udp counter drop\n"
    )
    sh(["ip", "netns", "exec", ns_a, "nft", "-f", "-"], input=script)


def restore_udp(ns: str) -> None:
    """Remove every filter :func:`drop_udp_between` installed in ``ns``."""
    sh(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", NFT_TABLE], check=False)


def nft_drop_counters(ns: str) -> str:
    """The test table's rules with their counters (for failure messages)."""
    return sh(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", NFT_TABLE], check=False
    ).stdout
