"""TLS everywhere with official clients: an https:// login server, DERP over TLS, the Outpost root.

Server and clients run in their own network namespaces (netns) with no route
out; see conftest.py. Clients get the Outpost root through SSL_CERT_FILE (the
harness's default); one test starts a client without it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import netns
from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import SERVER_IP, OutpostServer
from .tailnet import wait_peer
from .tsclient import unregister_log, wait_until

pytestmark = pytest.mark.interop


class HttpsOutpost(OutpostServer):
    """The same server, but clients are told https:// (the control plane over TLS on 443)."""

    @property
    def url(self) -> str:
        return f"https://{self.ip}"


@pytest.fixture(scope="module")
def server(
    topology: netns.Topology, workdir: Path, outpost_bin: Path, clients: dict[str, Path]
) -> Iterator[OutpostServer]:
    host = topology.add_host("srv", SERVER_IP)
    srv = HttpsOutpost(host=host, data_dir=workdir / "data", log_path=workdir / "outpost.log", outpost_bin=outpost_bin)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        unregister_log(srv.label)


@pytest.fixture(scope="module")
def key(server: OutpostServer, user: str) -> str:
    return server.create_key(user, reusable=True, expires="2h")


def relay(server: OutpostServer) -> dict[str, int]:
    return dict(server.admin_json("status")["relay"]["derp"])


def test_https_login_and_tls_derp_with_udp_dropped(server: OutpostServer, nodes: Nodes, key: str) -> None:
    new, old = DAEMON_VERSIONS[0], DAEMON_VERSIONS[-1]
    a = nodes.daemon(new, tag=f"ha{short(new)}", start=False)
    b = nodes.daemon(old, tag=f"hb{short(old)}", start=False)
    try:
        netns.drop_udp_between(a.host.ns, b.host.ip)
        netns.drop_udp_between(b.host.ns, a.host.ip)
        for n in (a, b):
            n.start()
            n.up(server.url, key, hostname=n.host.role)
            n.wait_running()
            prefs = n.cli("debug", "prefs", timeout=10).stdout
            assert f'"ControlURL": "{server.url}"' in prefs, prefs[:400]
        wait_peer(a, b.ip4(), lambda p: p.get("Online") is True, desc="online")
        result = a.ping(b.ip4(), count=6, timeout_s=3, until_direct=False)
        assert result.ok and result.via_derp, result.output
        # netcheck inside the namespace measures our region (STUN and the TLS latency probe)
        nc = a.cli("netcheck", timeout=60)
        assert nc.returncode == 0, nc.stderr
        assert re.search(r"Nearest DERP:\s*Outpost outpost", nc.stdout), nc.stdout
        assert "UDP: true" in nc.stdout, nc.stdout
    finally:
        nodes.remove(a)
        nodes.remove(b)


def test_client_without_the_root_fails_naming_the_certificate(server: OutpostServer, nodes: Nodes, key: str) -> None:
    before = server.admin_json("status")["listener"]
    c = nodes.daemon(DAEMON_VERSIONS[0], tag="noroot", start=False)
    c.ca_file = None  # no SSL_CERT_FILE: only the (empty) system store
    try:
        c.start()
        proc = c.up(server.url, key, hostname="noroot", timeout=20, check=False)
        assert proc.returncode != 0
        said = (proc.stdout + proc.stderr + c.log_tail(20000)).lower()
        assert "x509" in said or "certificate" in said, said[-2000:]
        after = server.admin_json("status")["listener"]
        assert after["tls_handshake_failures"] > before["tls_handshake_failures"]
        assert after["tls_untrusted_root"] > before["tls_untrusted_root"]
        assert "does not trust the Outpost root" in server.log_tail(200000)
        assert server.node(hostname="noroot") is None  # it never registered
    finally:
        nodes.remove(c)


def test_deleted_node_is_cut_from_the_relay_within_seconds(server: OutpostServer, nodes: Nodes, key: str) -> None:
    n = nodes.enroll(DAEMON_VERSIONS[0], key, "cutme")
    try:
        row = server.node(hostname="cutme")
        assert row is not None
        wait_until(lambda: relay(server)["keys_current"] >= 1, 30, desc="client on the relay")
        before = relay(server)
        server.delete_node(row["id"])
        t0 = time.monotonic()
        wait_until(
            lambda: relay(server)["keys_disconnected"] > before["keys_disconnected"], 10, desc="relay cut"
        )
        assert time.monotonic() - t0 < 10
        # ... and it does not come back: its key is unregistered, so any reconnect would be
        # refused at ClientInfo (tests/integration/test_relay_derp.py shows the refusal).
        time.sleep(5)
        now = relay(server)
        assert now["keys_current"] == before["keys_current"] - 1, (before, now)
    finally:
        nodes.remove(n)


def test_certificate_renewal_while_clients_relay_through_tls_derp(
    server: OutpostServer, nodes: Nodes, key: str
) -> None:
    from outpost_appliance.apiclient import AdminClient

    a = nodes.daemon(DAEMON_VERSIONS[0], tag="rena", start=False)
    b = nodes.daemon(DAEMON_VERSIONS[-1], tag="renb", start=False)
    try:
        netns.drop_udp_between(a.host.ns, b.host.ip)
        netns.drop_udp_between(b.host.ns, a.host.ip)
        for n in (a, b):
            n.start()
            n.up(server.url, key, hostname=n.host.role)
            n.wait_running()
        wait_peer(a, b.ip4(), lambda p: p.get("Online") is True, desc="online")
        assert a.ping(b.ip4(), count=4, timeout_s=3, until_direct=False).via_derp
        api = AdminClient(server.admin_socket)
        before = api.get("/v1/certs")
        renewed = api.post("/v1/certs/renew", {})
        after = api.get("/v1/certs")
        assert renewed["serial"] != before["leaf"]["serial"]
        assert after["leaf"]["serial"] == renewed["serial"]
        accepted = relay(server)["connections_accepted"]
        # The DERP connections made with the old certificate carry on ...
        again = a.ping(b.ip4(), count=4, timeout_s=3, until_direct=False)
        assert again.ok and again.via_derp, again.output
        assert relay(server)["connections_accepted"] == accepted  # ... without reconnecting
        # ... and a client that connects afresh gets the new certificate and is fine with it.
        b.restart_daemon()
        b.wait_running()
        wait_until(lambda: relay(server)["connections_accepted"] > accepted, 60, desc="b reconnects over TLS")
        wait_peer(a, b.ip4(), lambda p: p.get("Online") is True, desc="online after reconnect")
        final = a.ping(b.ip4(), count=6, timeout_s=3, until_direct=False)
        assert final.ok and final.via_derp, final.output
    finally:
        nodes.remove(a)
        nodes.remove(b)
