"""Interactive login: ``tailscale up`` without a key, approved by the admin.

Clients run in their own network namespaces (netns); see conftest.py.
"""

from __future__ import annotations

import subprocess

import pytest

from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import OutpostServer
from .tailnet import server_node, wait_peer
from .tsclient import tail, wait_until

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("version", DAEMON_VERSIONS)
def test_interactive_login_is_pending_until_approved(
    server: OutpostServer, nodes: Nodes, user: str, version: str
) -> None:
    hostname = f"int{short(version)}"
    node = nodes.daemon(version, tag=hostname)
    proc, auth_url = node.up_interactive(server.url, hostname=hostname)
    try:
        assert auth_url.startswith(server.url + "/"), auth_url
        st = node.status()
        assert st["BackendState"] == "NeedsLogin"

        entry = wait_until(
            lambda: next((p for p in server.pending() if p.get("hostname") == hostname), None),
            30,
            desc=f"pending login for {hostname}",
        )
        assert entry["auth_id"]
        assert entry["auth_id"] in auth_url, (entry, auth_url)
        assert server.node(hostname=hostname) is None  # not a node until approved

        server.approve(entry["auth_id"], user)

        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"`tailscale up` still waiting after approval:\n"
                f"{tail(node.last_up_output) if node.last_up_output else ''}\n"
                f"{node.log_tail()}"
            )
        assert rc == 0, node.log_tail()
        st = node.wait_running()
        srv = server_node(server, hostname)
        assert srv["ipv4"] in st["TailscaleIPs"]
        assert srv["user"] == user
        assert all(p.get("hostname") != hostname for p in server.pending())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_interactively_approved_nodes_see_each_other(server: OutpostServer, nodes: Nodes) -> None:
    running = [n for n in nodes.live if n.alive() and hasattr(n, "ip4")]
    if len(running) < 2:
        pytest.skip("needs both interactive logins above")
    a, b = running[0], running[1]
    wait_peer(a, b.ip4(), lambda p: p.get("Online") is True, desc="online")  # type: ignore[union-attr]
    wait_peer(b, a.ip4(), lambda p: p.get("Online") is True, desc="online")  # type: ignore[union-attr]
