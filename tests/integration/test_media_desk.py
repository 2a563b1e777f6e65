"""Console exports and first trust through the media desk: request, the watcher writes, verified.

The "device" is a directory (the way `outpost audit export --to DIR` works) or,
with root and the tools, a loop-backed FAT/ext4 image as in test_usb_bundles.
The watcher's agent (`outpost bundles watch`'s MediaAgent) runs in-process
against the real server over its admin socket.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from outpost_appliance import audit_verify
from outpost_appliance.apiclient import AdminClient, ApiError
from outpost_appliance.media_agent import MediaAgent
from outpost_appliance.media_export import readback_check
from outpost_server.backup.format import format_public, key_id, new_recovery_key, recovery_key_file
from outpost_server.bundles.removable import read_medium
from outpost_server.bundles.watcher import MediaInserted
from tests.bundle_env import KID, trust_doc

from .conftest import Running
from .test_usb_bundles import Stick, _udev_props, stick  # noqa: F401 - the loop-image fixture

CONSOLE = "console:tester"


def console(running: Running) -> AdminClient:
    return AdminClient(running.server.config.admin_socket, acting_as=CONSOLE)


async def call(client: AdminClient, method: str, path: str, body: Any = None) -> Any:
    args = (path,) if method == "get" else (path, body or {})
    return await asyncio.to_thread(getattr(client, method), *args)


def agent_for(running: Running, said: list[str]) -> MediaAgent:
    return MediaAgent(AdminClient(running.server.config.admin_socket, acting_as="usb-watcher"), said.append)


def audit_actions(running: Running) -> list[tuple[str, str, dict[str, Any]]]:
    log = running.server.audit_log
    return [(e.actor, e.action, dict(e.details)) for e in log.entries(1, log.last_seq)]


async def test_console_exports_are_written_by_the_watcher_read_back_and_audited(
    outpost: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = console(outpost)
    await call(c, "post", "/v1/users", {"name": "erin"})
    medium = tmp_path / "stick"
    medium.mkdir()
    request = {"kind": "audit-export", "device": str(medium), "from": 1}

    # no watcher yet: the console is told plainly, and nothing is built or numbered
    with pytest.raises(ApiError, match="no USB watcher is running"):
        await call(c, "post", "/v1/media/exports", request)
    said: list[str] = []
    agent = agent_for(outpost, said)
    await asyncio.to_thread(agent.inserted, MediaInserted(str(medium), "vfat", "AUDIT", "SER1"))
    view = await call(c, "get", "/v1/media")
    assert view["watcher_running"] is True
    assert [(d["device"], d["label"]) for d in view["devices"]] == [(str(medium), "AUDIT")]
    with pytest.raises(ApiError, match="no removable medium /dev/sdz1 is present"):
        await call(c, "post", "/v1/media/exports", {**request, "device": "/dev/sdz1"})

    queued = await call(c, "post", "/v1/media/exports", request)
    assert queued["state"] == "queued" and queued["name"].endswith(".opb")
    assert not list(medium.iterdir())  # the server wrote nothing: only the watcher does
    assert await asyncio.to_thread(agent.poll_once) == 1
    done = await call(c, "get", f"/v1/media/exports/{queued['id']}")
    assert done["state"] == "verified", done
    written = medium / queued["name"]
    assert done["path"] == str(written)
    # an auditor's check on what is on the medium, with the appliance's audit key
    key = (await call(c, "post", "/v1/audit/export", {"from": 1}))["audit_key"]
    assert audit_verify.main([str(written), "--key", key]) == 0
    assert "OK appliance" in capsys.readouterr().out

    # the other kinds through the same path, each verified by its own read-back check
    for kind, extra in (
        ("node-inventory", {}),
        ("client-enrolment", {"clients": ["laptop1"], "user": "erin"}),
        ("root-certificate", {}),
    ):
        r = await call(c, "post", "/v1/media/exports", {"kind": kind, "device": str(medium), **extra})
        assert await asyncio.to_thread(agent.poll_once) == 1
        r = await call(c, "get", f"/v1/media/exports/{r['id']}")
        assert r["state"] == "verified", (kind, r)
        assert (medium / r["name"]).read_bytes()
    assert (medium / "outpost-root.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")

    log = audit_actions(outpost)
    mine = [(a, act) for a, act, _ in log if act.startswith(("media.", "audit.export", "bundle.export", "ca.export"))]
    assert (CONSOLE, "media.export.queued") in mine
    assert (CONSOLE, "audit.export") in mine and (CONSOLE, "bundle.export.client-enrolment") in mine
    written_entries = [d for _, act, d in log if act.endswith(".export.written")]
    assert [d["kind"] for d in written_entries] == [
        "audit-export", "node-inventory", "client-enrolment", "root-certificate",
    ]  # fmt: skip
    assert all(d["verified"] is True for d in written_entries)
    assert {act for _, act, _ in log if act.endswith(".export.written")} == {
        "audit.export.written", "bundle.export.written", "ca.export.written",
    }  # fmt: skip


async def test_a_medium_gone_or_unwritable_fails_the_request_with_the_reason(
    outpost: Running, tmp_path: Path
) -> None:
    c = console(outpost)
    medium = tmp_path / "stick"
    medium.mkdir()
    said: list[str] = []
    agent = agent_for(outpost, said)
    event = MediaInserted(str(medium), "vfat", "GONE", "")
    await asyncio.to_thread(agent.inserted, event)
    inventory = {"kind": "node-inventory", "device": str(medium)}
    r = await call(c, "post", "/v1/media/exports", inventory)
    await asyncio.to_thread(agent.removed, str(medium))  # pulled out before the watcher wrote it
    r = await call(c, "get", f"/v1/media/exports/{r['id']}")
    assert r["state"] == "failed" and "removed before the export was written" in r["message"]
    assert (await call(c, "get", "/v1/media"))["devices"] == []

    # present, but the write fails on the medium: the watcher's reason reaches the console
    await asyncio.to_thread(agent.inserted, event)
    r = await call(c, "post", "/v1/media/exports", inventory)
    medium.rmdir()
    await asyncio.to_thread(agent.poll_once)
    r = await call(c, "get", f"/v1/media/exports/{r['id']}")
    assert r["state"] == "failed" and "neither a directory nor a block device" in r["message"], r
    [entry] = [d for _, act, d in audit_actions(outpost) if act == "bundle.export.written"]
    assert entry["verified"] is False and "neither a directory" in entry["problem"]


def test_a_tampered_read_back_copy_does_not_verify() -> None:
    check = readback_check("root-certificate", "", "")
    with pytest.raises(Exception, match="not a PEM certificate"):
        check(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


async def test_first_trust_files_on_a_stick_are_offered_with_fingerprints_and_installed(
    outpost: Running, tmp_path: Path
) -> None:
    c = console(outpost)
    secret, public = new_recovery_key()
    medium = tmp_path / "stick"
    medium.mkdir()
    (medium / "trust-store.json").write_text(json.dumps(trust_doc()))
    (medium / "recovery.pub").write_text(f"# outpost backup keygen\n{format_public(public)}\n")
    (medium / "oops.pub").write_text(recovery_key_file(secret))  # a secret key: listed, refused
    (medium / "notes.txt").write_text("not looked at")
    said: list[str] = []
    agent = agent_for(outpost, said)
    await asyncio.to_thread(agent.inserted, MediaInserted(str(medium), "vfat", "SIGNING", ""))
    assert any("3 first-trust file(s) offered" in s for s in said), said

    view = await call(c, "get", "/v1/media")
    by_file = {x["file"]: x for x in view["candidates"]}
    assert set(by_file) == {"trust-store.json", "recovery.pub", "oops.pub"}
    assert by_file["trust-store.json"]["fingerprints"] == sorted([KID["A"], KID["B"], KID["C"]])
    assert by_file["recovery.pub"]["fingerprints"] == [key_id(public)]
    assert "SECRET" in by_file["oops.pub"]["problem"]
    with pytest.raises(ApiError, match="cannot be installed"):
        await call(c, "post", f"/v1/media/candidates/{by_file['oops.pub']['id']}/install")

    r = await call(c, "post", f"/v1/media/candidates/{by_file['recovery.pub']['id']}/install")
    assert r["key_id"] == key_id(public)
    backup = await call(c, "get", "/v1/backup")
    assert key_id(public) in json.dumps(backup)
    r = await call(c, "post", f"/v1/media/candidates/{by_file['trust-store.json']['id']}/install")
    assert r["installed"] == "trust-store"
    trust = await call(c, "get", "/v1/bundles/trust")
    assert trust["installed"] and len(trust["store"]["signers"]) == 3

    actions = [(a, act) for a, act, _ in audit_actions(outpost)]
    assert ("usb-watcher", "media.trust.candidates") in actions
    assert (CONSOLE, "media.trust.candidate.install") in actions
    assert (CONSOLE, "bundles.trust.init") in actions
    # once a store is installed, candidates are gone and new ones are ignored
    assert (await call(c, "get", "/v1/media"))["candidates"] == []
    said.clear()
    await asyncio.to_thread(agent.removed, str(medium))
    await asyncio.to_thread(agent.inserted, MediaInserted(str(medium), "vfat", "SIGNING", ""))
    assert not any("offered" in s for s in said)
    late = [{"name": "trust-store.json", "text": "{}"}]
    ignored = await call(c, "post", "/v1/media/candidates", {"device": str(medium), "files": late})
    assert ignored["accepted"] == 0 and (await call(c, "get", "/v1/media"))["candidates"] == []


async def test_an_export_to_a_real_stick_and_first_trust_from_it(
    outpost: Running, stick: Stick  # noqa: F811 - the fixture imported above
) -> None:
    c = console(outpost)
    stick.put({"trust-store.json": json.dumps(trust_doc()).encode()})
    props = _udev_props(stick.dev)
    said: list[str] = []
    agent = agent_for(outpost, said)
    await asyncio.to_thread(
        agent.inserted, MediaInserted(stick.dev, stick.fstype, props.get("ID_FS_LABEL", ""), "S")
    )
    [dev] = (await call(c, "get", "/v1/media"))["devices"]
    assert dev["size"] == 16 * 1024 * 1024 and dev["fstype"] == stick.fstype
    [cand] = (await call(c, "get", "/v1/media"))["candidates"]
    assert cand["file"] == "trust-store.json" and KID["A"] in cand["fingerprints"]

    r = await call(c, "post", "/v1/media/exports", {"kind": "node-inventory", "device": stick.dev})
    await asyncio.to_thread(agent.poll_once)
    r = await call(c, "get", f"/v1/media/exports/{r['id']}")
    assert r["state"] == "verified" and r["path"] == f"{stick.dev}:/{r['name']}", (r, said)
    names = [n for n, _ in read_medium(stick.dev, stick.fstype).files]
    assert r["name"] in names  # read by another path (a mount where the kernel can)
    # the watcher may not mount: FAT goes through mtools, ext4 through debugfs; a second
    # root certificate replaces the first (same name) rather than failing
    for _ in range(2):
        r = await call(c, "post", "/v1/media/exports", {"kind": "root-certificate", "device": stick.dev})
        await asyncio.to_thread(agent.poll_once)
        r = await call(c, "get", f"/v1/media/exports/{r['id']}")
        assert r["state"] == "verified", (r, said)
    how = "mtools" if stick.fstype == "vfat" else "debugfs"
    assert any(f"outpost-root.pem ({how}), read back and verified" in s for s in said), said
