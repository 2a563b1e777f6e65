"""The tailnet policy as official clients enforce it: ACLs, visibility, subnet
routes, Tailscale SSH, and refused policies.

Every client runs in its own network namespace (netns) with no route out of
198.18.0.0/15 (see conftest.py and netns.py); tailscaled is started by the
harness with ``--no-logs-no-support`` and ``TS_NO_LOGS_NO_SUPPORT=true``. One
topology and one server for the whole module::

    srv       Outpost                                   198.18.0.1
    alice196  1.96.4, user alice, --accept-routes
    alice178  1.78.1, user alice
    bob196    1.96.4, user bob, --accept-routes
    web196    1.96.4, tag:server, --ssh; HTTP on :80 and :8080 (tailnet address)
    rtr196    1.96.4, tag:router, advertises 198.19.1.0/24, ip_forward=1
    lan       plain namespace 198.19.1.10 behind rtr196 (veth lan0), HTTP :8000

The LAN host has no route back to the tailnet: the router masquerades
(``--snat-subnet-routes`` defaults to true on Linux).

Every test puts the policy it needs in force first (``outpost policy set``),
so the tests do not depend on each other's leftovers; nothing is restarted
between policies (the tests check the processes stay the same).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import netns
from .conftest import Nodes
from .outpost import OutpostServer
from .tailnet import _HTTP_SERVER, Tailnet, TinyHTTP, curl_until_ok, server_node
from .tsclient import TailscaleNode, _brief_status, tail, wait_until

pytestmark = pytest.mark.interop

V196, V178 = "1.96.4", "1.78.1"
LAN = "198.19.1.0/24"
LAN_HOST = "198.19.1.10"
LAN_PORT = 8000
LAN_URL = f"http://{LAN_HOST}:{LAN_PORT}/"
POLICY_WAIT_S = 30.0  # policy change -> every client's filter / peers
CURL_FAIL_S = 3  # curl --max-time when a request is expected to fail


# -- policies ----------------------------------------------------------------------------
# HuJSON on purpose: comments and trailing commas must be accepted.


def _policy(*acls: tuple[str, str], extra: str = "") -> str:
    rules = "\n".join(
        f'    {{"action": "accept", "src": ["{src}"], "dst": ["{dst}"]}},' for src, dst in acls
    )
    return (
        "// Outpost interop test policy\n"
        "{\n"
        '  "tagOwners": {\n'
        '    "tag:server": [],\n'
        '    "tag:router": [],\n'
        "  },\n"
        '  "acls": [\n'
        f"{rules}\n"
        "  ],\n"
        f"{textwrap.indent(extra, '  ')}"
        "}\n"
    )


ALICE_TESTS = """\
"tests": [
  {"src": "alice@", "accept": ["tag:server:80"], "deny": ["tag:server:8080"]},
  {"src": "bob@", "deny": ["tag:server:80"]},
],
"""
# alice@ -> tag:server:80 only; bob may reach nobody and nobody reaches bob.
ALICE_ONLY = _policy(("alice@", "tag:server:80"), extra=ALICE_TESTS)
ALICE_AND_BOB = _policy(("alice@", "tag:server:80"), ("bob@", "tag:server:80"))
ROUTES_MANUAL = _policy(("alice@", f"{LAN}:*"))
ROUTES_AUTO = _policy(
    ("alice@", f"{LAN}:*"),
    extra=f'"autoApprovers": {{"routes": {{"{LAN}": ["tag:router"]}}}},\n',
)
# Both users may open TCP 22 on the server (so bob's refusal comes from the
# ssh section, not from the network filter); only alice may log in.
SSH = _policy(
    ("alice@", "tag:server:22"),
    ("bob@", "tag:server:22"),
    extra=(
        '"ssh": [\n'
        '  {"action": "accept", "src": ["alice@"], "dst": ["tag:server"], "users": ["root"]},\n'
        "],\n"
    ),
)
# Missing comma at the end of line 8: the error is at line 9 (the next element).
SYNTAX_ERROR = """\
// broken on purpose
{
  "tagOwners": {
    "tag:server": [],
    "tag:router": [],
  },
  "acls": [
    {"action": "accept", "src": ["bob@"], "dst": ["tag:server:80"]}
    {"action": "accept", "src": ["alice@"], "dst": ["tag:server:80"]},
  ],
}
"""
SYNTAX_ERROR_LINE = 9
# Valid, but would take alice's access away; its own test says it must not.
BOB_ONLY = _policy(("bob@", "tag:server:80"))
BOB_ONLY_FAILING_TEST = _policy(
    ("bob@", "tag:server:80"),
    extra='"tests": [\n  {"src": "alice@", "accept": ["tag:server:80"]},\n],\n',
)


# -- topology ----------------------------------------------------------------------------

NODE_SPEC: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # hostname: (version, key name, extra `up` flags)
    "alice196": (V196, "alice", ("--accept-routes",)),
    "alice178": (V178, "alice", ()),
    "bob196": (V196, "bob", ("--accept-routes",)),
    "web196": (V196, "tag:server", ("--ssh",)),
    "rtr196": (V196, "tag:router", (f"--advertise-routes={LAN}",)),
}
ALICES = ("alice196", "alice178")


@dataclass
class PolicyNet:
    server: OutpostServer
    tailnet: Tailnet
    ips: dict[str, str] = field(default_factory=dict)
    web80: TinyHTTP | None = None
    web8080: TinyHTTP | None = None
    lan: netns.Host | None = None
    lan_http: subprocess.Popen[bytes] | None = None
    ids: dict[str, str] = field(default_factory=dict)  # hostname -> server node id
    in_force: str | None = None  # the policy text this module last put in force

    def node(self, name: str) -> TailscaleNode:
        return self.tailnet.node(name)

    def url(self, name: str, port: int) -> str:
        return f"http://{self.ips[name]}:{port}/"

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {
            n: (d.proc.pid if d.alive() and d.proc else None)
            for n, d in self.tailnet.daemons.items()
        }
        out["outpost"] = self.server.proc.pid if self.server.alive() and self.server.proc else None
        return out


def _tag_key(server: OutpostServer, tag: str) -> str:
    data = server.admin_json("keys", "create", "--tags", tag, "--reusable", "--expires", "2h")
    key = data.get("key") if isinstance(data, dict) else None
    assert key, f"keys create --tags {tag} printed no key: {data!r}"
    return str(key)


def _sysctl(ns: str, setting: str) -> None:
    netns.sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", setting])


def _wait_listening(ns: str, ip: str, port: int, proc: subprocess.Popen[bytes], log: Any) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"http server exited: {log.read_text()}")
        return f"{ip}:{port}" in netns.run(ns, ["ss", "-ltn", f"sport = :{port}"]).stdout

    wait_until(listening, 15, interval=0.2, desc=f"http server on {ip}:{port}")


@pytest.fixture(scope="module")
def net(
    server: OutpostServer, nodes: Nodes, topology: netns.Topology, workdir: Any
) -> Iterator[PolicyNet]:
    # Admin CLI calls are independent processes: run them side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(server.create_user, ("alice", "bob")))
        futures = {
            "alice": pool.submit(server.create_key, "alice", reusable=True, expires="2h"),
            "bob": pool.submit(server.create_key, "bob", reusable=True, expires="2h"),
            "tag:server": pool.submit(_tag_key, server, "tag:server"),
            "tag:router": pool.submit(_tag_key, server, "tag:router"),
        }
        keys = {k: f.result() for k, f in futures.items()}
    pn = PolicyNet(server, Tailnet(server))
    try:
        # Namespaces one after the other (the topology allocates addresses),
        # then the daemons start and join side by side.
        for name, (version, _key, _extra) in NODE_SPEC.items():
            node = nodes.daemon(version, tag=name, start=False)
            pn.tailnet.daemons[name] = node
            if name == "rtr196":
                # The router's LAN and forwarding exist before tailscaled starts.
                pn.lan = topology.add_lan("lan", node.host, LAN, host_ip=LAN_HOST)
                _sysctl(node.host.ns, "net.ipv4.ip_forward=1")

        def up_one(name: str) -> None:
            _version, key_name, extra = NODE_SPEC[name]
            node = pn.tailnet.daemons[name]
            try:
                node.start()
                node.up(server.url, keys[key_name], hostname=name, extra=extra)
                node.wait_running()
                pn.ips[name] = node.ip4()
            except Exception as exc:  # recorded; the tests that need the node fail with it
                pn.tailnet.errors[name] = f"{exc}"

        with ThreadPoolExecutor(max_workers=len(NODE_SPEC)) as pool:
            list(pool.map(up_one, NODE_SPEC))
        pn.ids = {str(n.get("hostname")): str(n["id"]) for n in server.nodes() if n.get("hostname")}

        # The LAN's plain HTTP server (no tailnet there), and a sanity check
        # that the router itself reaches it.
        assert pn.lan is not None
        lan_log = workdir / "lan-http.log"
        pn.lan_http = netns.popen(
            pn.lan.ns,
            [sys.executable, "-c", _HTTP_SERVER, LAN_HOST, str(LAN_PORT), "hello from lan"],
            log_path=lan_log,
        )
        _wait_listening(pn.lan.ns, LAN_HOST, LAN_PORT, pn.lan_http, lan_log)
        rtr = pn.tailnet.daemons["rtr196"]
        direct = rtr.curl(LAN_URL, timeout_s=5)
        assert direct.stdout == "hello from lan", direct
        netns.assert_isolated(rtr.host.ns, allowed_ifaces=("lo", "eth0", "tailscale0", "lan0"))

        if "web196" not in pn.tailnet.errors:
            web = pn.tailnet.daemons["web196"]
            pn.web80 = TinyHTTP(web, "web port 80", port=80)
            pn.web8080 = TinyHTTP(web, "web port 8080", port=8080)
        yield pn
    finally:
        for http in (pn.web80, pn.web8080):
            if http is not None:
                http.stop()
        if pn.lan_http is not None:
            netns.stop_process(pn.lan_http)


# -- helpers -----------------------------------------------------------------------------


def set_policy(pn: PolicyNet, text: str) -> None:
    """Put ``text`` in force (``outpost policy set``) unless it already is."""
    if pn.in_force == text:
        return
    pn.in_force = None
    pn.server.set_policy(text)
    pn.in_force = text


def peer_v4s(node: TailscaleNode) -> set[str]:
    return _v4s(node.status())


def wait_peers(pn: PolicyNet, name: str, expect: set[str], timeout: float = POLICY_WAIT_S) -> None:
    """Wait until ``name``'s status lists exactly the peers ``expect`` (hostnames)."""
    node = pn.node(name)
    want = {pn.ips[n] for n in expect}
    names = {ip: n for n, ip in pn.ips.items()}
    node.wait_until(
        lambda st: _v4s(st) == want,
        timeout,
        desc=f"peers == {sorted(expect)} (by address; known: {names})",
    )


def _v4s(st: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for p in (st.get("Peer") or {}).values():
        out.update(ip for ip in (p.get("TailscaleIPs") or []) if ":" not in ip)
    return out


def wait_curl_fails(client: TailscaleNode, url: str, timeout: float = POLICY_WAIT_S) -> None:
    last: list[subprocess.CompletedProcess[str]] = []

    def attempt() -> bool:
        r = client.curl(url, timeout_s=CURL_FAIL_S)
        last[:] = [r]
        return r.returncode != 0

    wait_until(
        attempt,
        timeout,
        interval=0.5,
        desc=f"curl {url} from {client.label} to fail",
        on_timeout=lambda: f"last: {last[0] if last else None}",
    )


def assert_curl_fails(client: TailscaleNode, url: str, attempts: int = 2) -> None:
    for _ in range(attempts):
        r = client.curl(url, timeout_s=CURL_FAIL_S)
        assert r.returncode != 0, (
            f"{client.label} reached {url} although the policy forbids it: {r.stdout!r}\n"
            f"{json.dumps(_brief_status(client.status()), indent=1)}"
        )


def node_routes(pn: PolicyNet, name: str) -> dict[str, Any]:
    data = pn.server.admin_json("nodes", "routes", _id(pn, name))
    assert isinstance(data, dict), data
    return data


def wait_routes(pn: PolicyNet, name: str, pred: Any, desc: str) -> dict[str, Any]:
    last: list[dict[str, Any]] = []

    def check() -> dict[str, Any] | None:
        r = node_routes(pn, name)
        last[:] = [r]
        return r if pred(r) else None

    return wait_until(
        check, POLICY_WAIT_S, desc=f"{name} routes {desc}", on_timeout=lambda: f"last: {last}"
    )


def router_peer_serves_lan(st: dict[str, Any], rtr_ip: str) -> bool:
    for p in (st.get("Peer") or {}).values():
        if rtr_ip in (p.get("TailscaleIPs") or []):
            return LAN in (p.get("PrimaryRoutes") or []) or LAN in (p.get("AllowedIPs") or [])
    return False


# -- 1. ACLs and visibility ----------------------------------------------------------------


@pytest.mark.parametrize("alice", ALICES)
def test_alice_reaches_server_port_80_but_not_8080(net: PolicyNet, alice: str) -> None:
    set_policy(net, ALICE_ONLY)
    client = net.node(alice)
    net.node("web196")
    # Before the policy, everything was allowed: wait for the new filter to land.
    wait_curl_fails(client, net.url("web196", 8080))
    assert curl_until_ok(client, net.url("web196", 80), "web port 80") == "web port 80"
    assert_curl_fails(client, net.url("web196", 8080))


def test_bob_denied_and_sees_no_peers(net: PolicyNet) -> None:
    set_policy(net, ALICE_ONLY)
    # bob may reach nobody and nobody may reach bob: he sees no peers at all.
    wait_peers(net, "bob196", set())
    assert_curl_fails(net.node("bob196"), net.url("web196", 80))
    # The others see exactly what the policy lets them talk to (either way).
    wait_peers(net, "alice196", {"web196"})
    wait_peers(net, "alice178", {"web196"})
    wait_peers(net, "web196", {"alice196", "alice178"})
    wait_peers(net, "rtr196", set())


def test_policy_change_grants_and_revokes_without_restart(net: PolicyNet) -> None:
    bob = net.node("bob196")
    set_policy(net, ALICE_ONLY)
    wait_peers(net, "bob196", set())
    before = net.pids()

    set_policy(net, ALICE_AND_BOB)
    wait_peers(net, "bob196", {"web196"})
    assert curl_until_ok(bob, net.url("web196", 80), "web port 80", timeout=POLICY_WAIT_S)
    assert_curl_fails(bob, net.url("web196", 8080), attempts=1)
    wait_peers(net, "web196", {"alice196", "alice178", "bob196"})

    set_policy(net, ALICE_ONLY)
    wait_curl_fails(bob, net.url("web196", 80))
    wait_peers(net, "bob196", set())
    assert_curl_fails(bob, net.url("web196", 80), attempts=1)
    # alice is unaffected throughout.
    assert curl_until_ok(net.node("alice196"), net.url("web196", 80), "web port 80")

    assert net.pids() == before, "a client or the server was restarted"
    assert all(v is not None for v in before.values()), before


# -- 2. subnet routes --------------------------------------------------------------------


def test_unapproved_subnet_route_is_not_reachable(net: PolicyNet) -> None:
    set_policy(net, ROUTES_MANUAL)
    net.server.admin("nodes", "approve-routes", _id(net, "rtr196"), "--routes", "")
    r = wait_routes(
        net, "rtr196", lambda r: LAN in r["advertised"] and not r["serving"], "advertised only"
    )
    assert LAN not in r["approved"], r
    alice = net.node("alice196")
    wait_peers(net, "alice196", set())  # the router serves nothing alice may reach
    assert_curl_fails(alice, LAN_URL)


def test_manually_approved_subnet_route_is_reachable(net: PolicyNet) -> None:
    set_policy(net, ROUTES_MANUAL)
    rid = _id(net, "rtr196")
    net.server.admin("nodes", "approve-routes", rid, "--routes", LAN)
    try:
        r = wait_routes(net, "rtr196", lambda r: LAN in r["serving"], "serving")
        assert LAN in r["approved"], r
        alice = net.node("alice196")
        alice.wait_until(
            lambda st: router_peer_serves_lan(st, net.ips["rtr196"]),
            POLICY_WAIT_S,
            desc=f"router peer with {LAN}",
        )
        assert curl_until_ok(alice, LAN_URL, "hello from lan") == "hello from lan"
    finally:
        net.server.admin("nodes", "approve-routes", rid, "--routes", "")
    wait_routes(net, "rtr196", lambda r: not r["serving"], "not serving after un-approval")
    wait_curl_fails(net.node("alice196"), LAN_URL)


def test_auto_approved_subnet_route_is_reachable(net: PolicyNet) -> None:
    net.server.admin("nodes", "approve-routes", _id(net, "rtr196"), "--routes", "")
    set_policy(net, ROUTES_MANUAL)
    wait_routes(net, "rtr196", lambda r: not r["serving"], "not serving")
    wait_curl_fails(net.node("alice196"), LAN_URL)

    set_policy(net, ROUTES_AUTO)
    r = wait_routes(net, "rtr196", lambda r: LAN in r["serving"], "auto-approved")
    assert LAN in r["advertised"], r
    alice = net.node("alice196")
    alice.wait_until(
        lambda st: router_peer_serves_lan(st, net.ips["rtr196"]),
        POLICY_WAIT_S,
        desc=f"router peer with {LAN}",
    )
    assert curl_until_ok(alice, LAN_URL, "hello from lan") == "hello from lan"
    # The accepted route stays inside the test ranges (no default route appeared).
    netns.assert_isolated(alice.host.ns)
    # bob (also --accept-routes) is not in the ACL: no router, no LAN.
    wait_peers(net, "bob196", set())
    assert_curl_fails(net.node("bob196"), LAN_URL)

    # Without autoApprovers (and no manual approval) the route goes away again.
    set_policy(net, ROUTES_MANUAL)
    wait_routes(net, "rtr196", lambda r: not r["serving"], "no longer auto-approved")
    wait_curl_fails(alice, LAN_URL)


def _id(pn: PolicyNet, name: str) -> str:
    if name not in pn.ids:
        pn.ids[name] = str(server_node(pn.server, name)["id"])
    return pn.ids[name]


# -- 3. Tailscale SSH --------------------------------------------------------------------

SSH_MARK = "ssh-ran-42"
SSH_CMD = "echo ssh-ran-$((6*7))"  # the shell computes the marker: proof a shell ran


@pytest.fixture(scope="session")
def ssh_client() -> str:
    path = shutil.which("ssh", path=netns.BASE_ENV["PATH"])
    if path is None:
        try:
            proc = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "openssh-client"],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
                env={**netns.BASE_ENV, "DEBIAN_FRONTEND": "noninteractive"},
            )
            detail = (proc.stderr or proc.stdout)[-500:]
        except (OSError, subprocess.SubprocessError) as exc:
            detail = str(exc)
        path = shutil.which("ssh", path=netns.BASE_ENV["PATH"])
        if path is None:
            pytest.skip(f"OpenSSH client not installed and apt-get could not install it: {detail}")
    return path


def ssh(pn: PolicyNet, client: TailscaleNode, ssh_bin: str) -> subprocess.CompletedProcess[str]:
    """OpenSSH from ``client``'s namespace (netns) to the server node's tailnet address."""
    return netns.run(
        client.host.ns,
        [
            ssh_bin,
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-F", "/dev/null",
            f"root@{pn.ips['web196']}",
            SSH_CMD,
        ],
        env={"HOME": str(client.workdir)},
        timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("alice", ALICES)
def test_ssh_policy_accepts_alice(net: PolicyNet, ssh_client: str, alice: str) -> None:
    set_policy(net, SSH)
    client = net.node(alice)
    last: list[subprocess.CompletedProcess[str]] = []

    def attempt() -> bool:
        r = ssh(net, client, ssh_client)
        last[:] = [r]
        return r.returncode == 0 and SSH_MARK in r.stdout

    wait_until(
        attempt,
        POLICY_WAIT_S + 15,
        interval=1.0,
        desc=f"ssh root@web196 from {alice}",
        on_timeout=lambda: (
            f"last: {last[0] if last else None}\n{net.node('web196').log_tail(5000)}"
        ),
    )


def test_ssh_policy_refuses_bob(net: PolicyNet, ssh_client: str) -> None:
    set_policy(net, SSH)
    bob = net.node("bob196")
    # bob may open TCP 22 on the server (network ACL), so he does reach its SSH server...
    wait_peers(net, "bob196", {"web196"})
    # ...and is refused by the ssh section; no shell runs.
    results = []
    for _ in range(2):
        r = ssh(net, bob, ssh_client)
        results.append(r)
        assert r.returncode != 0, f"bob's ssh succeeded: {r}"
        assert SSH_MARK not in r.stdout, r
    # A policy refusal, not a network timeout: the server node's SSH server
    # took the connection from bob's address and rejected it by policy.
    err = results[-1].stderr
    assert not re.search(r"timed out", err, re.I), (
        f"bob's ssh timed out instead of being refused: {err}"
    )
    web = net.node("web196")
    wait_until(
        lambda: ssh_rejected_in_log(tail(web.log_path, 200_000), net.ips["bob196"]),
        10,
        desc="web196 logs the policy rejection of bob's connection",
        on_timeout=lambda: f"bob's ssh: {results[-1]}\n{web.log_tail(4000)}",
    )


def ssh_rejected_in_log(log: str, src_ip: str) -> bool:
    """Whether tailscaled's log shows a connection from ``src_ip`` refused by policy."""
    conns = re.findall(rf"(ssh-conn-\S+): handling conn: {re.escape(src_ip)}:\d+->", log)
    return any(
        re.search(rf"{re.escape(c)}: tailnet policy does not permit you to SSH", log) for c in conns
    )


# -- 4. refused policies -------------------------------------------------------------------


def _put_alice_only(pn: PolicyNet) -> str:
    set_policy(pn, ALICE_ONLY)
    wait_peers(pn, "bob196", set())
    assert curl_until_ok(pn.node("alice196"), pn.url("web196", 80), "web port 80")
    return pn.server.policy("get").stdout


def _assert_alice_only_still_applies(pn: PolicyNet, stored: str) -> None:
    assert pn.server.policy("get").stdout == stored
    assert curl_until_ok(pn.node("alice196"), pn.url("web196", 80), "web port 80", timeout=10)
    assert_curl_fails(pn.node("bob196"), pn.url("web196", 80), attempts=1)
    assert not peer_v4s(pn.node("bob196")), "bob sees peers after a refused policy"


def test_policy_with_syntax_error_is_refused(net: PolicyNet) -> None:
    stored = _put_alice_only(net)
    assert "alice@" in stored, stored

    r = net.server.set_policy(SYNTAX_ERROR, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert re.search(rf"\bline {SYNTAX_ERROR_LINE}\b", out), (
        f"error does not name line {SYNTAX_ERROR_LINE}: {out}"
    )
    chk = net.server.policy("check", _write(net, "syntax.hujson", SYNTAX_ERROR), check=False)
    assert chk.returncode != 0, chk
    _assert_alice_only_still_applies(net, stored)


def test_policy_with_failing_test_is_refused(net: PolicyNet) -> None:
    stored = _put_alice_only(net)

    r = net.server.set_policy(BOB_ONLY_FAILING_TEST, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "alice@" in out and "tag:server:80" in out, (
        f"error does not name the failing assertion: {out}"
    )
    # `policy check` agrees, and validates a good file without storing it.
    failing = _write(net, "failing.hujson", BOB_ONLY_FAILING_TEST)
    chk = net.server.policy("check", failing, check=False)
    assert chk.returncode != 0, chk
    assert net.server.policy("check", _write(net, "bob.hujson", BOB_ONLY)).returncode == 0
    _assert_alice_only_still_applies(net, stored)


def _write(pn: PolicyNet, name: str, text: str) -> str:
    path = pn.server.data_dir.parent / name
    path.write_text(text)
    return str(path)
