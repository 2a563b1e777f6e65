"""Shared steps and checks for the interop tests (enrol many, compare views).

A :class:`Tailnet` enrols a set of nodes in parallel and remembers per-node
enrolment failures, so one client version failing to enrol fails only the
tests that use that node instead of erroring the whole module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import netns
from .outpost import OutpostServer
from .tsclient import (
    DEFAULT_WAIT_S,
    TailscaleNode,
    TsnetCaddyNode,
    _brief_status,
    peer_by_ip,
    wait_until,
)

HTTP_PORT = 8080


def dns_label(dns_name: str | None) -> str:
    """'a196.outpost.internal.' -> 'a196'."""
    return (dns_name or "").split(".")[0]


@dataclass
class Tailnet:
    server: OutpostServer
    daemons: dict[str, TailscaleNode] = field(default_factory=dict)
    caddies: dict[str, TsnetCaddyNode] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def node(self, name: str) -> TailscaleNode:
        if name in self.errors:
            pytest.fail(f"enrolment of {name} failed earlier:\n{self.errors[name]}", pytrace=False)
        return self.daemons[name]

    def caddy(self, name: str) -> TsnetCaddyNode:
        if name in self.errors:
            pytest.fail(f"tsnet node {name} failed earlier:\n{self.errors[name]}", pytrace=False)
        return self.caddies[name]

    def enrolled_names(self) -> list[str]:
        return [n for n in [*self.daemons, *self.caddies] if n not in self.errors]


def enrol_all(
    tailnet: Tailnet,
    nodes_factory: Any,
    spec: dict[str, str],
    key: str,
    caddy_names: tuple[str, ...] = (),
) -> Tailnet:
    """Start ``{hostname: version}`` daemons, ``up`` them concurrently, wait Running.

    tsnet Caddy nodes in ``caddy_names`` join with the same key and are waited
    for in the server's node list.
    """
    for hostname, version in spec.items():
        tailnet.daemons[hostname] = nodes_factory.daemon(version, tag=hostname)

    def up_one(hostname: str) -> None:
        node = tailnet.daemons[hostname]
        try:
            node.up(tailnet.server.url, key, hostname=hostname)
            node.wait_running()
        except Exception as exc:  # recorded; tests that need the node fail with it
            tailnet.errors[hostname] = f"{exc}"

    with ThreadPoolExecutor(max_workers=len(spec) or 1) as pool:
        list(pool.map(up_one, spec))
    for name in caddy_names:
        try:
            tailnet.caddies[name] = nodes_factory.caddy(name, key)
        except Exception as exc:
            tailnet.errors[name] = f"{exc}"
    for name in caddy_names:
        if name in tailnet.errors:
            continue
        try:
            wait_server_node(tailnet.server, name, lambda n: n.get("online") is True, desc="online")
        except Exception as exc:
            tailnet.errors[name] = f"{exc}\n{tailnet.caddies[name].log_tail()}"
    return tailnet


def wait_server_node(
    server: OutpostServer, hostname: str, pred: Any, timeout: float = DEFAULT_WAIT_S, desc: str = ""
) -> dict[str, Any]:
    """Wait until the server's node list has ``hostname`` satisfying ``pred``."""
    last: list[dict[str, Any]] = []

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = server.nodes()
        for n in last:
            if hostname in (n.get("hostname"), n.get("name")) and pred(n):
                return n
        return None

    return wait_until(
        check,
        timeout,
        desc=f"server node {hostname} {desc}",
        on_timeout=lambda: json.dumps(last, indent=1, default=str) + "\n" + server.log_tail(6000),
    )


def server_node(server: OutpostServer, hostname: str) -> dict[str, Any]:
    n = server.node(hostname=hostname)
    assert n is not None, f"server has no node {hostname}: {server.nodes()}"
    return n


def wait_peer(
    observer: TailscaleNode,
    ip: str,
    pred: Any = None,
    *,
    timeout: float = DEFAULT_WAIT_S,
    desc: str = "",
) -> dict[str, Any]:
    """Wait until ``observer``'s status has a peer with tailnet ``ip`` (and ``pred``)."""

    def check(st: dict[str, Any]) -> dict[str, Any] | None:
        p = peer_by_ip(st, ip)
        if p is not None and (pred is None or pred(p)):
            return p
        return None

    return observer.wait_until(check, timeout, desc=f"peer {ip} {desc}")


def wait_peer_gone(observer: TailscaleNode, ip: str, *, timeout: float = DEFAULT_WAIT_S) -> None:
    observer.wait_until(lambda st: peer_by_ip(st, ip) is None, timeout, desc=f"peer {ip} gone")


def check_view_matches_server(
    observer: TailscaleNode, server_nodes: list[dict[str, Any]], self_name: str
) -> None:
    """Assert ``observer``'s status agrees with the server's node list."""
    st = observer.status()
    me = next(n for n in server_nodes if self_name in (n.get("hostname"), n.get("name")))
    assert st["BackendState"] == "Running"
    assert me["ipv4"] in st["TailscaleIPs"], (me, st["TailscaleIPs"])
    if me.get("ipv6"):
        assert me["ipv6"] in st["TailscaleIPs"], (me, st["TailscaleIPs"])
    assert dns_label(st["Self"]["DNSName"]) == me["name"], (st["Self"]["DNSName"], me)
    problems = []
    for n in server_nodes:
        if n is me or not n.get("online") or n.get("expired"):
            continue
        p = peer_by_ip(st, n["ipv4"])
        if p is None:
            problems.append(f"{n['name']} ({n['ipv4']}) missing")
            continue
        if dns_label(p.get("DNSName")) != n["name"]:
            problems.append(f"{n['name']}: DNSName {p.get('DNSName')!r}")
        if n.get("ipv6") and n["ipv6"] not in (p.get("TailscaleIPs") or []):
            problems.append(f"{n['name']}: addresses {p.get('TailscaleIPs')} lack {n['ipv6']}")
        if p.get("Online") is not True:
            problems.append(f"{n['name']}: Online={p.get('Online')!r}")
    assert not problems, (
        f"{observer.label} view differs from server: {problems}\n"
        f"status: {json.dumps(_brief_status(st), indent=1)}\n"
        f"server: {json.dumps(server_nodes, indent=1, default=str)}"
    )


def wait_view_matches_server(
    observer: TailscaleNode,
    server: OutpostServer,
    self_name: str,
    expect_names: list[str],
    timeout: float = DEFAULT_WAIT_S,
) -> None:
    """Wait until the server lists ``expect_names`` online and ``observer`` agrees."""

    def check() -> bool:
        ns = server.nodes()
        online = {n["name"] for n in ns if n.get("online")} | {
            n.get("hostname") for n in ns if n.get("online")
        }
        missing = [n for n in expect_names if n not in online]
        assert not missing, f"server does not list {missing} online"
        check_view_matches_server(observer, ns, self_name)
        return True

    wait_until(
        check,
        timeout,
        interval=1.0,
        desc=f"{observer.label} view == server view",
        on_timeout=observer.log_tail,
    )


# -- data path -----------------------------------------------------------------------

_HTTP_SERVER = textwrap.dedent("""
    import http.server, sys
    body = sys.argv[3].encode()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
""")


class TinyHTTP:
    """A one-response HTTP server bound to a node's tailnet address."""

    def __init__(self, node: TailscaleNode, body: str, port: int = HTTP_PORT) -> None:
        self.node = node
        self.ip = node.ip4()
        self.port = port
        self.body = body
        self.proc = netns.popen(
            node.host.ns,
            [sys.executable, "-c", _HTTP_SERVER, self.ip, str(port), body],
            log_path=node.workdir / "http.log",
        )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"http server exited: {(node.workdir / 'http.log').read_text()}"
                )
            out = netns.run(node.host.ns, ["ss", "-ltn", f"sport = :{port}"]).stdout
            return f"{self.ip}:{port}" in out

        wait_until(listening, 15, interval=0.2, desc="tiny http server listening")

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}/"

    def stop(self) -> None:
        netns.stop_process(self.proc)

    def __enter__(self) -> TinyHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def curl_until_ok(
    client: TailscaleNode, url: str, expect: str, timeout: float = DEFAULT_WAIT_S
) -> str:
    last: subprocess.CompletedProcess[str] | None = None

    def attempt() -> str | None:
        nonlocal last
        last = client.curl(url, timeout_s=5)
        return last.stdout if last.returncode == 0 and expect in last.stdout else None

    return wait_until(
        attempt,
        timeout,
        interval=1.0,
        desc=f"curl {url} from {client.label}",
        on_timeout=lambda: (
            f"last curl: rc={last.returncode if last else None} "
            f"out={last.stdout[-500:] if last else ''} err={last.stderr[-500:] if last else ''}\n"
            f"{client.log_tail(4000)}"
        ),
    )
