"""Two-appliance site: official clients homed on two meshed relays reach each other through the mesh.

Server A (198.18.0.1) is the control appliance and a relay; server B
(198.18.0.250) is a relay-only appliance that admits the node keys A
registered (--admission-from) and meshes with A (--mesh-with, shared
--mesh-key-file). A's DERP map lists B as the region's second node. Client
c2 cannot open TCP 443 to A, so it homes on B; UDP between the clients is
dropped, so every packet between them crosses the A<->B mesh.

Everything runs in network namespaces (netns) with no route out; see conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import netns
from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import SERVER_IP, OutpostServer
from .tailnet import wait_peer
from .tsclient import unregister_log, wait_until

pytestmark = pytest.mark.interop

RELAY_B_IP = "198.18.0.250"


class MeshedOutpost(OutpostServer):
    extra: list[str]

    def argv(self) -> list[str]:
        return [*super().argv(), *self.extra]


@pytest.fixture(scope="module")
def mesh_key(workdir: Path) -> Path:
    f = workdir / "mesh.key"
    f.write_text(os.urandom(32).hex() + "\n")
    f.chmod(0o600)
    return f


@pytest.fixture(scope="module")
def server(
    topology: netns.Topology, workdir: Path, outpost_bin: Path, clients: dict[str, Path], mesh_key: Path
) -> Iterator[OutpostServer]:
    host = topology.add_host("srv", SERVER_IP)
    srv = MeshedOutpost(host=host, data_dir=workdir / "data", log_path=workdir / "outpost.log", outpost_bin=outpost_bin)
    srv.extra = [
        "--mesh-key-file", str(mesh_key),
        "--mesh-with", f"https://{RELAY_B_IP}:443",
        "--mesh-ca", str(workdir / "data-b" / "tls" / "root.pem"),  # exists once B has started
    ]  # fmt: skip
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        unregister_log(srv.label)


@pytest.fixture(scope="module")
def relay_b(
    topology: netns.Topology, workdir: Path, outpost_bin: Path, server: OutpostServer, mesh_key: Path
) -> Iterator[OutpostServer]:
    host = topology.add_host("relayb", RELAY_B_IP)
    b = MeshedOutpost(host=host, data_dir=workdir / "data-b", log_path=workdir / "outpost-b.log", outpost_bin=outpost_bin)
    b.extra = [
        "--mesh-key-file", str(mesh_key),
        "--mesh-with", f"https://{SERVER_IP}:443",
        "--mesh-ca", str(server.ca_file),
        "--admission-from", f"https://{SERVER_IP}:443",
    ]  # fmt: skip
    try:
        b.start()
        yield b
    finally:
        b.stop()
        unregister_log(b.label)


def block_tcp(ns: str, ip: str, port: int) -> None:
    """In `ns`, refuse TCP to ip:port at once (a reset, so the client tries its next node fast)."""
    netns._check_safe_ip(ip)
    script = (
        f"add table inet {netns.NFT_TABLE}\n"
        f"add chain inet {netns.NFT_TABLE} tcpout {{ type filter hook output priority -10; policy accept; }}\n"
        f"add rule inet {netns.NFT_TABLE} tcpout ip daddr {ip} tcp dport {port} counter reject with tcp reset\n"
    )
    netns.sh(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)


def derp(srv: OutpostServer) -> dict[str, int]:
    return dict(srv.admin_json("status")["relay"]["derp"])


def test_clients_on_two_meshed_relays_talk_through_the_mesh(
    server: OutpostServer, relay_b: OutpostServer, nodes: Nodes, user: str, workdir: Path
) -> None:
    roots = workdir / "site-roots.pem"  # a site with two appliances hands clients both roots
    roots.write_text(server.ca_file.read_text() + relay_b.ca_file.read_text())
    key = server.create_key(user, reusable=True, expires="1h")
    new, old = DAEMON_VERSIONS[0], DAEMON_VERSIONS[-1]
    c1 = nodes.daemon(new, tag=f"ma{short(new)}", start=False)
    c2 = nodes.daemon(old, tag=f"mb{short(old)}", start=False)
    try:
        for c in (c1, c2):
            c.ca_file = roots
        netns.drop_udp_between(c1.host.ns, c2.host.ip)
        netns.drop_udp_between(c2.host.ns, c1.host.ip)
        block_tcp(c2.host.ns, SERVER_IP, 443)  # c2 cannot use A's relay: it homes on B
        for c in (c1, c2):
            c.start()
            c.up(server.url, key, hostname=c.host.role)
            c.wait_running()
        wait_until(lambda: derp(relay_b)["keys_current"] >= 1, 90, desc="c2 connected to relay B")
        wait_until(lambda: derp(server)["watchers"] == 1 and derp(relay_b)["watchers"] == 1, 60,
                   desc="A and B watching each other")  # fmt: skip
        wait_peer(c1, c2.ip4(), lambda p: p.get("Online") is True, desc="online")
        result = c1.ping(c2.ip4(), count=8, timeout_s=3, until_direct=False)
        assert result.ok and result.via_derp, f"{result.output}\n{server.log_tail(4000)}\n{relay_b.log_tail(4000)}"
        fwd = derp(server)["packets_forwarded_out"] + derp(relay_b)["packets_forwarded_out"]
        assert fwd > 0, (derp(server), derp(relay_b))
        back = c2.ping(c1.ip4(), count=5, timeout_s=3, until_direct=False)
        assert back.ok and back.via_derp, back.output
    finally:
        nodes.remove(c1)
        nodes.remove(c2)
