"""End to end as a person would: the console under tmux, first-boot setup, an official client joins.

`outpost serve` runs with a fresh data directory in its network namespace
(netns) like every interop test (the module's ``server`` fixture); the
console (`outpost console`) runs in the root namespace under tmux against the
server's admin socket. The test only sends keys and reads the screen: it
sets the console passphrase, walks the first-boot wizard (site name and an
extra address, reissue of the TLS certificate, trust store and recovery key
from files, the first admin, the first enrolment key), reads the printed
``tailscale up --login-server=URL --authkey=KEY`` line off the screen, and an
official 1.96.4 client in its own namespace runs exactly that line (plus the
harness's network-safety flags) and must reach Running and show up in
``outpost nodes list``.

Captures of every screen are saved as text beside the test's logs; with
OUTPOST_UPDATE_SCREENSHOTS=1 the wizard's screens are also rendered to PNG
in docs/console/ (see docs/console.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from outpost_appliance.apiclient import AdminClient
from outpost_server.backup.format import format_public, new_recovery_key
from tests.bundle_env import trust_doc

from . import netns
from .conftest import Nodes, _skip_or_fail
from .outpost import REPO, OutpostServer
from .tmux import TmuxPane, flat, render_png

pytestmark = pytest.mark.interop

CLIENT_VERSION = "1.96.4"
PASSPHRASE = "first-boot-e2e"  # noqa: S105 - a test console lock
EXTRA_NAME = "outpost.e2e.lan"
LINE_RE = re.compile(r"tailscale up --login-server=(\S+) --authkey=(\S+)")
SCREENSHOTS = REPO / "docs" / "console"


def test_first_boot_wizard_under_tmux_prints_a_line_an_official_client_joins_with(
    server: OutpostServer, nodes: Nodes, workdir: Path
) -> None:
    if shutil.which("tmux") is None:
        _skip_or_fail("the console end-to-end test needs tmux (make sysdeps installs it)")
    files = workdir / "usb"
    files.mkdir()
    (files / "trust-store.json").write_text(json.dumps(trust_doc()))
    _, public = new_recovery_key()
    (files / "recovery.pub").write_text(format_public(public) + "\n")
    captures = workdir / "console-e2e"
    captures.mkdir()

    pane = TmuxPane(f"opw-{os.getpid()}", width=100, height=30)
    argv = [str(server.outpost_bin), "--admin-socket", str(server.admin_socket), "console"]
    env = {**netns.BASE_ENV, **server.env(), "TERM": "xterm-256color", "COLORTERM": ""}
    shots: list[tuple[str, str]] = []

    def shot(name: str, *needles: str, timeout: float = 30.0) -> str:
        screen = pane.wait_for(*needles, timeout=timeout)
        (captures / f"{len(shots) + 1:02d}-{name}.txt").write_text(screen)
        shots.append((name, pane.capture(colours=True)))
        return screen

    pane.start(argv, env, REPO)
    try:
        # The console starts locked; on a fresh box it asks for a new passphrase.
        shot("lock", "OUTPOST CONSOLE: set a passphrase")
        pane.type(PASSPHRASE)
        pane.send("Enter")
        pane.type(PASSPHRASE)
        pane.send("Enter")

        # 1: site name and addresses, prefilled with what the server runs as.
        shot("wizard-site", "Step 1 of 5", f"at {server.url}.")
        pane.send("End", "C-u")
        pane.type("e2e")
        pane.send("Tab", "Tab")
        pane.type(EXTRA_NAME)
        pane.send("Enter")

        # 2: the CA the server made, and a reissue for the new name.
        screen = shot("wizard-ca", "Step 2 of 5", "Root SHA-256", f"Needed for step 1: {server.ip}")
        assert EXTRA_NAME in flat(screen)
        pane.send("Enter")

        # 3: signers (trust store) and the recovery public key, from files on the "stick".
        shot("wizard-trust", "Step 3 of 5", "Server certificate reissued", "No trust store yet")
        pane.type(str(files / "trust-store.json"))
        pane.send("Tab")
        pane.type(str(files / "recovery.pub"))
        pane.send("Enter")

        # 4: the first administrator (the default name).
        shot("wizard-admin", "Step 4 of 5", "installed;", "recovery key")
        pane.send("Enter")

        # 5: the first client's key, shown once, in the line to run.
        shot("wizard-client", "Step 5 of 5", "User admin created.")
        pane.send("Enter")
        screen = shot("wizard-key", "SHOWN ONCE", "Finish (Enter)")
        found = LINE_RE.search(flat(screen))
        assert found, screen
        line = found.group(0)
        pane.send("Enter")
        shot("dashboard", "Setup complete", "Connected")
    finally:
        (captures / "last.txt").write_text(pane.capture())
        pane.kill()

    # The server's view of what the wizard did.
    api = AdminClient(server.admin_socket)
    site = api.get("/v1/site")
    assert site["setup_complete"] is True and site["site_name"] == "e2e"
    assert [r["field"] for r in site["restart_required"]] == ["site_name"]
    assert {EXTRA_NAME, server.ip} <= set(api.get("/v1/certs")["leaf"]["names"])
    assert api.get("/v1/bundles/trust")["installed"] is True
    assert [u["name"] for u in api.get("/v1/users")] == ["admin"]

    # An official client runs exactly the printed line (plus the harness's safety flags).
    tokens = shlex.split(line)
    assert tokens[:2] == ["tailscale", "up"] and len(tokens) == 4, tokens
    login_server = found.group(1)
    assert login_server == server.url
    netns._check_safe_ip(server.ip)
    node = nodes.daemon(CLIENT_VERSION, tag="wizard")
    proc = node.cli(
        *tokens[1:], "--hostname=wizard-client", "--accept-dns=false", "--reset", "--timeout=60s",
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}\n{node.log_tail()}"
    node.wait_running()
    listed = server.node(hostname="wizard-client")
    assert listed is not None, server.nodes()
    assert listed["user"] == "admin" and listed["ipv4"] == node.ip4()

    if os.environ.get("OUTPOST_UPDATE_SCREENSHOTS"):
        for name, ansi in shots:
            if name.startswith("wizard-"):
                render_png(ansi, SCREENSHOTS / f"{name}.png", 100, 30, f"Outpost console: {name}")
