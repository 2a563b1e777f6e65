"""`outpost bundles ...` and `outpost audit export` against a real server over its admin socket."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from outpost_appliance import audit_verify
from outpost_appliance.apiclient import AdminClient, ApiError
from outpost_appliance.cli import main as cli_main
from tests.bundle_env import (
    KID,
    POLICY,
    bundle,
    key_entry,
    keys_payload,
    policy_bundle,
    trust_doc,
)

from .conftest import Running


async def outpost_cli(running: Running, *argv: str) -> int:
    sock = str(running.server.config.admin_socket)
    return await asyncio.to_thread(cli_main, ["--admin-socket", sock, *argv])


async def api(running: Running, method: str, path: str, body: Any = None) -> Any:
    client = AdminClient(running.server.config.admin_socket)
    args = (path,) if method != "post" else (path, body or {})
    return await asyncio.to_thread(getattr(client, method), *args)


def times() -> dict[str, int]:
    now = int(time.time())
    return {"created": now - 60, "expires": now + 3600}


async def install_trust(outpost: Running, tmp_path: Path) -> None:
    (tmp_path / "trust-store.json").write_text(json.dumps(trust_doc()))
    assert (
        await outpost_cli(
            outpost, "bundles", "trust", "init", str(tmp_path / "trust-store.json"), "--yes"
        )
        == 0
    )


async def test_trust_init_works_once_and_is_audited(
    outpost: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await outpost_cli(outpost, "bundles", "trust", "show") == 0
    assert "no trust store installed" in capsys.readouterr().out
    await install_trust(outpost, tmp_path)
    assert "trust store installed: 3 signer(s)" in capsys.readouterr().out
    assert (
        await outpost_cli(
            outpost, "bundles", "trust", "init", str(tmp_path / "trust-store.json"), "--yes"
        )
        == 2
    )
    assert "a trust store is already installed" in capsys.readouterr().err
    assert await outpost_cli(outpost, "bundles", "trust", "show") == 0
    out = capsys.readouterr().out
    assert KID["A"] in out and "console-init by cli:" in out
    audit = await api(outpost, "get", "/v1/audit?limit=20")
    inits = [e for e in audit["entries"] if e["action"] == "bundles.trust.init"]
    assert len(inits) == 1 and inits[0]["actor"].startswith("cli:")


async def test_import_stage_show_approve_reject_through_the_cli(
    outpost: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await install_trust(outpost, tmp_path)
    capsys.readouterr()
    app = outpost.server.appliance_id
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "policy.opb").write_bytes(policy_bundle(1, "A", "B", appliance=app, **times()))
    (stick / "keys.opb").write_bytes(
        bundle(
            "enrolment-keys",
            1,
            keys_payload(key_entry("00112233aabb", "s3cret")),
            "C",
            appliance=app,
            **times(),
        )
    )
    (stick / "other-site.opb").write_bytes(
        policy_bundle(2, "A", "B", appliance="elsewhere", **times())
    )
    (stick / "lonely.opb").write_bytes(policy_bundle(3, "A", appliance=app, **times()))
    assert await outpost_cli(outpost, "bundles", "import", str(stick)) == 1  # some rejected
    out = capsys.readouterr().out
    assert "REJECTED" in out and "wrong-appliance: bundle is for appliance elsewhere" in out
    assert "below-threshold: 1 of 2 required signatures for policy" in out
    assert "2 staged, 2 rejected, 0 ignored" in out
    rows: list[dict[str, Any]] = await api(outpost, "get", "/v1/bundles?status=staged")
    by_kind = {r["kind"]: r["id"] for r in rows}
    assert set(by_kind) == {"policy", "enrolment-keys"}
    assert (await api(outpost, "get", "/v1/policy"))["id"] is None  # staged, not applied

    assert await outpost_cli(outpost, "bundles", "show", str(by_kind["policy"])) == 0
    assert "Policy change if approved" in capsys.readouterr().out

    # approve asks first; without a terminal and without --yes nothing happens
    assert await outpost_cli(outpost, "bundles", "approve", str(by_kind["policy"])) == 1
    assert "Re-run with --yes" in capsys.readouterr().err
    assert (await api(outpost, "get", "/v1/policy"))["id"] is None

    assert await outpost_cli(outpost, "bundles", "approve", str(by_kind["policy"]), "--yes") == 0
    assert "policy version 1 in force" in capsys.readouterr().out
    assert (await api(outpost, "get", "/v1/policy"))["text"] == POLICY.decode()
    assert outpost.server.policy.policy is not None  # the live tailnet follows

    assert (
        await outpost_cli(
            outpost, "bundles", "reject", str(by_kind["enrolment-keys"]), "--reason", "wrong batch"
        )
        == 0
    )
    assert (await api(outpost, "get", f"/v1/bundles/{by_kind['enrolment-keys']}"))[
        "reason"
    ] == "wrong batch"
    with pytest.raises(ApiError, match=r"is rejected, not staged \(HTTP 409\)"):
        await api(outpost, "post", f"/v1/bundles/{by_kind['enrolment-keys']}/approve")
    assert outpost.store.enrolment_keys() == {}

    actions = [
        (e["action"], e["actor"])
        for e in (await api(outpost, "get", "/v1/audit?limit=50"))["entries"]
    ]
    names = [a for a, _ in actions]
    assert names.count("bundle.staged") == 2 and names.count("bundle.rejected") == 2
    assert ("bundle.apply" in names) and ("bundle.reject" in names)
    assert all(actor.startswith("cli:") for a, actor in actions if a.startswith("bundle"))


async def test_api_refuses_malformed_intake_requests(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    with pytest.raises(ApiError, match=r"files\[0\] \(x.opb\): data is not base64"):
        await asyncio.to_thread(
            client.post, "/v1/bundles/intake", {"files": [{"name": "x.opb", "data": "%%%"}]}
        )
    with pytest.raises(ApiError, match="status must be one of"):
        await asyncio.to_thread(client.get, "/v1/bundles?status=maybe")
    with pytest.raises(ApiError, match="no bundle with id 42"):
        await asyncio.to_thread(client.get, "/v1/bundles/42")


async def test_audit_export_to_a_folder_reads_back_and_verifies_offline(
    outpost: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await api(outpost, "post", "/v1/users", {"name": "erin"})
    out_dir = tmp_path / "usb"
    out_dir.mkdir()
    assert (
        await outpost_cli(outpost, "audit", "export", "--from", "1", "--to", str(out_dir), "--json")
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    path = Path(report["path"])
    assert path.parent == out_dir and report["verified"] is True
    assert audit_verify.main([str(path), "--key", report["audit_key"]]) == 0
    assert "OK appliance" in capsys.readouterr().out
    # a second export gets a higher bundle sequence, and both are in the log
    assert await outpost_cli(outpost, "audit", "export", "--from", "2", "--to", str(out_dir)) == 0
    entries = (await api(outpost, "get", "/v1/audit?limit=20"))["entries"]
    exports = [e["details"] for e in entries if e["action"] == "audit.export"]
    assert [e["bundle_seq"] for e in exports] == [1, 2]
    written = [e["details"] for e in entries if e["action"] == "audit.export.written"]
    assert len(written) == 2 and all(w["verified"] for w in written)
    with pytest.raises(ApiError, match=r"outside 1\.\."):
        await api(outpost, "post", "/v1/audit/export", {"from": 10_000})


async def test_inventory_and_enrolment_exports_are_signed_read_back_and_usable(
    outpost: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from outpost_server.bundles.format import decode_manifest, parse_frame, split_payloads

    outpost.new_key()  # creates user alice
    out = tmp_path / "stick"
    out.mkdir()
    assert await outpost_cli(outpost, "bundles", "export", "inventory", "--to", str(out), "--json") == 0
    inv = json.loads(capsys.readouterr().out)
    assert inv["kind"] == "node-inventory"
    assert await outpost_cli(
        outpost, "bundles", "export", "enrolment", "--client", "laptop-1", "--client", "laptop-2",
        "--user", "alice", "--expires", "2d", "--to", str(out), "--json",
    ) == 0  # fmt: skip
    enr = json.loads(capsys.readouterr().out)
    data = Path(enr["path"]).read_bytes()
    frame = parse_frame(data)
    manifest = decode_manifest(frame.manifest_bytes)
    assert manifest.kind == "client-enrolment" and manifest.appliance == outpost.server.appliance_id
    doc = json.loads(split_payloads(data, frame, manifest)["client-enrolment.json"])
    assert [c["client"] for c in doc["clients"]] == ["laptop-1", "laptop-2"]
    assert doc["login_server"] == f"http://127.0.0.1:{outpost.port}"
    assert doc["ca_root_pem"].startswith("-----BEGIN CERTIFICATE-----")
    # the keys in the package are real, single-use, owned by alice
    keys = {k.prefix: k for k in outpost.store.enrolment_keys().values()}
    for c in doc["clients"]:
        k = keys[c["key_prefix"]]
        assert not k.reusable and c["authkey"].startswith(f"opk-{k.prefix}-") and k.user_id == 1
    audit = await api(outpost, "get", "/v1/audit?limit=20")
    actions = [e["action"] for e in audit["entries"]]
    assert "bundle.export.node-inventory" in actions and "bundle.export.client-enrolment" in actions
    assert actions.count("audit.export.written") == 2
    with pytest.raises(ApiError, match="distinct client names"):
        await api(outpost, "post", "/v1/bundles/export/client-enrolment", {"clients": ["a", "a"], "user": "alice"})


async def test_first_boot_trust_store_file_is_installed_once(tmp_path: Path) -> None:
    from .conftest import start_server

    data = tmp_path / "data"
    data.mkdir()
    (data / "trust-store.json").write_text("{ not json")
    bad = await start_server(data)  # a broken provisioning file does not stop the server
    try:
        assert bad.server.bundles.trust() is None
        assert (data / "trust-store.json").exists()
    finally:
        await bad.server.stop()
    (data / "trust-store.json").write_text(json.dumps(trust_doc()))
    good = await start_server(data)
    try:
        assert good.server.bundles.trust() is not None
        assert not (data / "trust-store.json").exists() and (data / "trust-store.json.installed").exists()
        audit = await api(good, "get", "/v1/audit?limit=10")
        assert any(e["actor"] == "provisioning" for e in audit["entries"])
    finally:
        await good.server.stop()
    (data / "trust-store.json").write_text(json.dumps(trust_doc()))  # never replaces an installed store
    again = await start_server(data)
    try:
        assert (data / "trust-store.json").exists()
        assert len((await api(again, "get", "/v1/bundles/trust"))["history"]) == 1
    finally:
        await again.server.stop()
