"""The certificate endpoints and the new /v1/status summaries, against a real server."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from outpost_appliance.apiclient import AdminClient, ApiError, actor

from .conftest import Running


async def call(client: AdminClient, method: str, path: str, body: object = None) -> Any:
    fn = getattr(client, method)
    return await asyncio.to_thread(
        fn, path, *(() if body is None and method != "post" else (body or {},))
    )


async def served_serial(outpost: Running) -> str:
    """The serial of the certificate the TLS listener presents to a new handshake."""
    host, port = outpost.server.config.tls_listen  # type: ignore[misc]
    ctx = ssl.create_default_context(cafile=str(outpost.server.certs.tls_directory / "root.pem"))
    ctx.check_hostname = False
    _, w = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return format(x509.load_der_x509_certificate(der).serial_number, "x")
    finally:
        w.close()


async def audit_actions(client: AdminClient) -> list[tuple[str, str, dict[str, Any]]]:
    data = await call(client, "get", "/v1/audit?limit=50")
    return [(e["action"], e["actor"], e["details"]) for e in data["entries"]]


async def test_status_lists_root_issuing_ca_and_the_served_leaf(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    st = await call(client, "get", "/v1/certs")
    leaf = st["leaf"]
    assert leaf["serial"] == await served_serial(outpost)
    assert "127.0.0.1" in leaf["names"]
    assert 390 <= leaf["days_left"] <= 397
    assert st["root"]["days_left"] > 7000 and st["intermediate"]["days_left"] > 1800
    assert st["root"]["pem"].startswith("-----BEGIN CERTIFICATE-----")
    root = x509.load_pem_x509_certificate(st["root"]["pem"].encode())
    assert st["root"]["subject"] == root.subject.rfc4514_string()
    assert len(st["root"]["sha256"].split(":")) == 32
    # the server's unattended init never keeps the root key
    assert st["root_key"]["on_box"] is False and "not kept" in st["root_key"]["state"]
    assert st["crl"]["number"] >= 1 and st["crl"]["next_update"].endswith("Z")
    kinds = {i["kind"] for i in st["issued"]}
    assert kinds == {"intermediate", "server"}
    assert [i["serial"] for i in st["issued"] if i["current"]] == [leaf["serial"]]
    assert "key-compromise" in st["revocation_reasons"]


async def test_renew_now_replaces_the_served_leaf_and_is_audited(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    before = (await call(client, "get", "/v1/certs"))["leaf"]
    r = await call(client, "post", "/v1/certs/renew")
    assert r["reloaded"] is True and r["serial"] != before["serial"]
    assert r["generation"] == before["generation"] + 1
    assert await served_serial(outpost) == r["serial"]  # new handshakes get the new leaf
    after = await call(client, "get", "/v1/certs")
    assert after["leaf"]["serial"] == r["serial"]
    renewals = [(actor, d) for a, actor, d in await audit_actions(client) if a == "ca.leaf.renew"]
    assert renewals[-1][0] == actor() and renewals[-1][1]["serial"] == r["serial"]
    assert before["serial"] in renewals[-1][1]["detail"]  # "replaces <old serial>"
    status = await call(client, "get", "/v1/status")
    assert status["certs"]["leaf_days_left"] >= 396


async def test_revoking_the_server_leaf_replaces_it_and_lists_it_on_the_crl(
    outpost: Running,
) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    old = (await call(client, "get", "/v1/certs"))["leaf"]["serial"]
    r = await call(client, "post", "/v1/certs/revoke", {"serial": old, "reason": "key-compromise"})
    assert r["server_leaf_replaced"] is True
    new = await served_serial(outpost)
    assert new != old
    st = await call(client, "get", "/v1/certs")
    assert st["revoked_count"] == 1
    assert [i["revoked"] for i in st["issued"] if i["serial"] == old] == [True]
    crl = x509.load_der_x509_crl(outpost.server._crl() or b"")
    assert [format(e.serial_number, "x") for e in crl] == [old]
    actions = [a for a, _, _ in await audit_actions(client)]
    assert "ca.revoke" in actions and actions.index("ca.revoke") < len(actions) - 1
    with pytest.raises(ApiError, match="already revoked"):
        await call(client, "post", "/v1/certs/revoke", {"serial": old, "reason": "superseded"})


async def test_revoke_refusals_say_why(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    st = await call(client, "get", "/v1/certs")
    inter = next(i["serial"] for i in st["issued"] if i["kind"] == "intermediate")
    with pytest.raises(ApiError, match="issuing CA itself"):
        await call(client, "post", "/v1/certs/revoke", {"serial": inter})
    with pytest.raises(ApiError, match="no certificate with serial"):
        await call(client, "post", "/v1/certs/revoke", {"serial": "abc123"})
    with pytest.raises(ApiError, match="not a certificate serial"):
        await call(client, "post", "/v1/certs/revoke", {"serial": "zz-top"})
    with pytest.raises(ApiError, match="unknown revocation reason"):
        await call(
            client, "post", "/v1/certs/revoke", {"serial": st["leaf"]["serial"], "reason": "bored"}
        )
    with pytest.raises(ApiError, match="'serial'"):
        await call(client, "post", "/v1/certs/revoke", {})
    assert (await call(client, "get", "/v1/certs"))["revoked_count"] == 0


async def test_status_reports_certs_audit_and_disk_without_verifying(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    st = await call(client, "get", "/v1/status")
    assert 390 <= st["certs"]["leaf_days_left"] <= 397 and st["certs"]["root_days_left"] > 7000
    audit = st["audit"]
    assert audit["entries"] == outpost.server.audit_log.last_seq > 0
    assert audit["verified"] is None  # nobody asked yet; status never verifies by itself
    disk = st["disk"]
    assert disk["total"] > 0 and disk["used"] + disk["free"] <= disk["total"]
    assert Path(disk["path"]) == outpost.server.config.data_dir
    verdict = await call(client, "post", "/v1/audit/verify")
    assert verdict["ok"] is True
    audit = (await call(client, "get", "/v1/status"))["audit"]
    assert audit["verified"]["ok"] is True and audit["verified"]["last_seq"] == verdict["entries"]


async def test_a_broken_chain_shows_in_verify_and_then_in_status(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    await call(client, "post", "/v1/users", {"name": "mallory"})
    log_path = outpost.server.config.data_dir / "audit" / "audit.log"
    raw = log_path.read_bytes()
    at = raw.index(b"mallory")
    with log_path.open("r+b") as f:  # an edit of the same length: only the hash can tell
        f.seek(at)
        f.write(b"MALLORY")
    verdict = await call(client, "post", "/v1/audit/verify")
    assert verdict["ok"] is False and "edited" in verdict["error"]
    bad = verdict["first_bad_seq"]
    entry = (await call(client, "get", f"/v1/audit?start={bad}&limit=1"))["entries"][0]
    assert entry["details"] == {"user": "MALLORY"}
    audit = (await call(client, "get", "/v1/status"))["audit"]
    assert audit["verified"]["ok"] is False and audit["verified"]["first_bad_seq"] == bad
