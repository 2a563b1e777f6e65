"""Backup, wipe, restore: official clients come back without re-enrolling.

Server and clients run in their own network namespaces (netns) with no route
out; see conftest.py. The backup is made through the admin CLI while the
clients are connected, the appliance's data directory is then deleted
entirely, and the state is restored from the backup file with the offline
recovery key, as a site would onto a replacement box.
"""

from __future__ import annotations

import json
import shutil
import signal
from typing import Any

import pytest

from .conftest import DAEMON_VERSIONS, Nodes, short
from .outpost import OutpostServer
from .tailnet import Tailnet, enrol_all, wait_server_node, wait_view_matches_server
from .tsclient import wait_until

pytestmark = pytest.mark.interop

SPEC = {f"b{short(v)}": v for v in DAEMON_VERSIONS}


@pytest.fixture(scope="module")
def key(server: OutpostServer, user: str) -> str:
    return server.create_key(user, reusable=True, expires="2h")


@pytest.fixture(scope="module")
def tailnet(server: OutpostServer, nodes: Nodes, key: str) -> Tailnet:
    return enrol_all(Tailnet(server), nodes, SPEC, key)


def _view(tailnet: Tailnet) -> dict[str, Any]:
    rows = {n["name"]: n for n in tailnet.server.nodes()}
    out: dict[str, Any] = {}
    for name in SPEC:
        st = tailnet.node(name).status()
        out[name] = {
            "ips": sorted(st["TailscaleIPs"] or []),
            "nodekey": st["Self"]["PublicKey"],
            "id": rows[name]["id"],
            "ipv4": rows[name]["ipv4"],
            "ipv6": rows[name]["ipv6"],
        }
    return out


def test_clients_reconnect_after_wipe_and_restore(tailnet: Tailnet) -> None:
    server = tailnet.server
    for name in SPEC:
        wait_view_matches_server(tailnet.node(name), server, name, list(SPEC))
    before = _view(tailnet)

    keyfile = server.data_dir.parent / "recovery.key"
    keyfile.unlink(missing_ok=True)
    gen = server.admin("backup", "keygen", "--out", str(keyfile))
    public = next(w for w in gen.stdout.split() if w.startswith("opr1:"))
    server.admin("backup", "recipients", "add", public, "--label", "interop safe")
    made = json.loads(server.admin("backup", "create", "--json", timeout=120).stdout)
    assert made["ok"] is True, made
    backup = server.data_dir.parent / made["result"]["name"]
    shutil.copy2(made["result"]["path"], backup)  # off the box, as onto removable media

    server.stop(signal.SIGTERM)
    shutil.rmtree(server.data_dir)  # the appliance is gone
    restored = server.admin(
        "--data-dir", str(server.data_dir), "backup", "restore", str(backup),
        "--recovery-key", str(keyfile), "--yes", timeout=120,
    )  # fmt: skip
    assert "audit chain intact" in restored.stdout, restored.stdout
    server.start()

    for name in SPEC:
        row = wait_server_node(server, name, lambda n: n.get("online") is True, timeout=90, desc="online after restore")
        assert row["id"] == before[name]["id"] and row["ipv4"] == before[name]["ipv4"]
    assert len(server.nodes()) == len(SPEC)  # nobody enrolled again
    for name in SPEC:
        wait_view_matches_server(tailnet.node(name), server, name, list(SPEC), timeout=60)
    after = _view(tailnet)
    assert after == before
    a, b = (tailnet.node(n) for n in SPEC)
    wait_until(lambda: a.ping(b.ip4(), count=5, timeout_s=2).ok, 45, desc="peers ping each other after restore")
    audit = server.admin_json("audit", "show", "--limit", "5")
    assert "backup.restored" in [e["action"] for e in audit["entries"]]
