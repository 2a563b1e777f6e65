"""A new issuing CA for a box whose root key is kept offline, end to end.

`outpost ca request-intermediate` (server keeps the key) -> `outpost-sign
create ca-material --csr` with the exported root key -> signed by two officers
-> intake -> approve -> the TLS listener serves a leaf of the new intermediate.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from outpost_appliance import sign
from outpost_appliance.apiclient import ApiError
from outpost_server.ca import OfflineCA
from outpost_server.ca.keystore import ScryptParams
from tests.bundle_env import KEYS

from .conftest import Running, start_server
from .test_bundles_api import api, install_trust, outpost_cli

PASS = "correct horse battery staple"  # noqa: S105 - a test CA's root passphrase
FAST = ScryptParams(n=2**10, r=8, p=1)


def ca_tree(directory: Path) -> dict[str, str]:
    """Every file of the CA with its digest (the lock file carries nothing)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
async def kept_root(tmp_path: Path) -> Any:
    """A server on a CA made with `outpost ca init` whose root key went to a USB stick."""
    data = tmp_path / "data"
    now = dt.datetime.now(dt.UTC)
    ca, _ = OfflineCA.init(
        data / "ca", site="alpha", names=["127.0.0.1"], passphrase=PASS.encode(), now=now,
        actor="test", kdf=FAST,
    )  # fmt: skip
    safe = tmp_path / "safe"
    ca.export_root(safe, now, include_key=True)
    ca.remove_root_key(safe, PASS.encode(), now)
    running = await start_server(data)
    yield running, safe
    await running.server.stop()


def officer_keys(tmp_path: Path) -> list[Path]:
    out = []
    for name in ("A", "B"):
        p = tmp_path / f"officer-{name}.key"
        p.write_bytes(KEYS[name].private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        out.append(p)
    return out


def make_bundle(tmp_path: Path, app: str, seq: int, *ca_args: str) -> Path:
    """What the signing station does: create, then two officers sign."""
    out = tmp_path / f"ca-{seq}.opb"
    (tmp_path / "passphrase").write_text(PASS + "\n")
    assert sign.main([
        "create", "ca-material", "--appliance", app, "--seq", str(seq), "--expires", "1h",
        "--out", str(out), "--passphrase-file", str(tmp_path / "passphrase"), *ca_args,
    ]) == 0  # fmt: skip
    for key in officer_keys(tmp_path):
        assert sign.main(["sign", str(out), "--key", str(key)]) == 0
    return out


async def stage(running: Running, path: Path) -> dict[str, Any]:
    data = await asyncio.to_thread(path.read_bytes)
    files = [{"name": path.name, "data": base64.b64encode(data).decode()}]
    out = await api(running, "post", "/v1/bundles/intake", {"files": files, "label": "USB"})
    assert len(out["staged"]) == 1, out
    staged: dict[str, Any] = out["staged"][0]
    return staged


async def served_leaf(running: Running, root_pem: Path) -> x509.Certificate:
    """The certificate the TLS listener presents, to a client that trusts only the root."""
    host, port = running.server.config.tls_listen  # type: ignore[misc]
    client = ssl.create_default_context(cafile=str(root_pem))
    _, w = await asyncio.open_connection(host, port, ssl=client, server_hostname="127.0.0.1")
    try:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        w.close()


async def audit_actions(running: Running) -> list[str]:
    audit = await api(running, "get", "/v1/audit?limit=200")
    return [e["action"] for e in audit["entries"]]


async def test_request_sign_offline_stage_approve_serves_the_new_intermediate(
    kept_root: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running, safe = kept_root
    await install_trust(running, tmp_path)
    app = running.server.appliance_id
    stick = tmp_path / "stick"
    stick.mkdir()
    capsys.readouterr()
    assert await outpost_cli(running, "ca", "request-intermediate", "--to", str(stick)) == 0
    assert "read back and verified" in capsys.readouterr().out
    (csr,) = stick.glob("*.csr.pem")
    status = await api(running, "get", "/v1/certs")
    pending = status["pending_intermediate"]
    assert pending is not None and pending["actor"].startswith("cli:")
    old_serial = status["intermediate"]["serial"]
    assert "ca.intermediate.request" in await audit_actions(running)

    path = make_bundle(
        tmp_path, app, 1, "--csr", str(csr),
        "--root-cert", str(safe / "outpost-root.pem"),
        "--root-key", str(safe / "outpost-root-key.pem"),
    )  # fmt: skip
    staged = await stage(running, path)
    shown = await api(running, "get", f"/v1/bundles/{staged['id']}")
    preview = shown["preview"]["ca_material"]
    assert preview["key_source"] == "pending request" and preview["replaces"] == old_serial
    assert "problem" not in shown["preview"]
    capsys.readouterr()
    assert await outpost_cli(running, "bundles", "show", str(staged["id"])) == 0
    text = capsys.readouterr().out
    assert f"serial {preview['serial']}" in text
    assert f"key         pending request; replaces {old_serial}" in text

    out = await api(running, "post", f"/v1/bundles/{staged['id']}/approve")
    assert out["status"] == "applied"
    new = out["applied"]["intermediate"]
    assert new["serial"] == preview["serial"] and new["not_after"] == preview["not_after"]
    assert out["result"]["intermediate"]["serial"] == new["serial"]
    assert out["result"]["tls_reloaded"] is True

    status = await api(running, "get", "/v1/certs")
    assert status["intermediate"]["serial"] == new["serial"]
    assert status["pending_intermediate"] is None
    ca_dir = running.server.config.data_dir / "ca"
    inter = x509.load_pem_x509_certificate((ca_dir / "intermediate.pem").read_bytes())
    assert format(inter.serial_number, "x") == new["serial"]
    leaf = await served_leaf(running, safe / "outpost-root.pem")
    leaf.verify_directly_issued_by(inter)  # the listener already serves the new chain
    assert format(leaf.serial_number, "x") == status["leaf"]["serial"]
    actions = await audit_actions(running)
    for action in ("ca.intermediate.import", "ca.leaf.renew", "ca.crl.sign", "bundle.apply"):
        assert action in actions


async def test_a_refused_ca_bundle_leaves_the_ca_files_byte_identical(
    kept_root: Any, tmp_path: Path
) -> None:
    running, _ = kept_root
    await install_trust(running, tmp_path)
    app = running.server.appliance_id
    stick = tmp_path / "stick"
    stick.mkdir()
    assert await outpost_cli(running, "ca", "request-intermediate", "--to", str(stick)) == 0
    (csr,) = stick.glob("*.csr.pem")
    # Another site's root signs this site's request: a root rollover.
    now = dt.datetime.now(dt.UTC)
    other, _ = OfflineCA.init(
        tmp_path / "other", site="alpha", names=["127.0.0.1"], passphrase=PASS.encode(),
        now=now, actor="test", kdf=FAST,
    )  # fmt: skip
    other.export_root(tmp_path / "other-safe", now, include_key=True)
    path = make_bundle(
        tmp_path, app, 1, "--csr", str(csr),
        "--root-cert", str(tmp_path / "other-safe" / "outpost-root.pem"),
        "--root-key", str(tmp_path / "other-safe" / "outpost-root-key.pem"),
    )  # fmt: skip
    staged = await stage(running, path)
    ca_dir = running.server.config.data_dir / "ca"
    before = ca_tree(ca_dir)
    with pytest.raises(ApiError, match="root rollover is not supported") as exc:
        await api(running, "post", f"/v1/bundles/{staged['id']}/approve")
    assert "root.pem: root rollover is not supported" in str(exc.value)
    assert ca_tree(ca_dir) == before
    shown = await api(running, "get", f"/v1/bundles/{staged['id']}")
    assert shown["status"] == "staged"
    assert "bundle.approve.refused" in await audit_actions(running)
