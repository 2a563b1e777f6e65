"""USB sticks end to end: loop-backed FAT and ext4 images, udev events, staging, approval, export.

The machine has no udev daemon, so the events are injected: the properties
are the ones udev's blkid builtin would attach (`blkid -p -o udev`), plus the
SUBSYSTEM/DEVNAME/ID_BUS/ID_SERIAL a USB stick carries. The watcher core,
the mount (or the user-space FAT reader where the kernel has no vfat
driver), the upload over the admin socket and the server's intake are all
real. Needs root, losetup and mkfs; FAT needs mtools; skips with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost_appliance import audit_verify
from outpost_appliance.apiclient import AdminClient
from outpost_appliance.cli import main as cli_main
from outpost_appliance.cli_bundles import intake_handler
from outpost_server.bundles.removable import kernel_has, read_medium
from outpost_server.bundles.watcher import UsbWatcher
from tests.bundle_env import bundle, key_entry, keys_payload, policy_bundle, trust_doc

from .conftest import Running

MKFS = {"vfat": ["mkfs.vfat", "-n", "OUTPOST"], "ext4": ["mkfs.ext4", "-q", "-F", "-L", "OUTPOST"]}
IMAGE_BYTES = 16 * 1024 * 1024


def _missing(fstype: str) -> str | None:
    if os.geteuid() != 0:
        return "needs root for losetup/mount"
    tools = ["losetup", "blkid", MKFS[fstype][0]]
    tools += ["mcopy", "mdir", "mmd"] if fstype == "vfat" else ["mount", "umount"]
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if fstype == "ext4" and not kernel_has("ext4"):
        return "the running kernel has no ext4 driver"
    return None


def _udev_props(dev: str) -> dict[str, str]:
    """What udev would report for a USB stick's partition (the fs part from blkid itself)."""
    out = subprocess.run(
        ["blkid", "-p", "-o", "udev", dev], capture_output=True, text=True, check=True
    )
    props = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    props.update(SUBSYSTEM="block", DEVNAME=dev, ID_BUS="usb", ID_SERIAL="Generic_Flash_Disk_0042")
    return props


class Stick:
    def __init__(self, fstype: str, dev: str, populate: Path) -> None:
        self.fstype, self.dev, self.populate = fstype, dev, populate

    def put(
        self,
        files: dict[str, bytes],
        dirs: tuple[str, ...] = (),
        links: dict[str, str] | None = None,
    ) -> None:
        if self.fstype == "vfat":
            env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
            for d in dirs:
                subprocess.run(
                    ["mmd", "-i", self.dev, f"::/{d}"], check=True, env=env, capture_output=True
                )
            for name, data in files.items():
                subprocess.run(
                    ["mcopy", "-o", "-i", self.dev, "-", f"::/{name}"],
                    input=data,
                    check=True,
                    env=env,
                    capture_output=True,
                )
            return
        subprocess.run(["mount", self.dev, str(self.populate)], check=True, capture_output=True)
        try:
            for d in dirs:
                (self.populate / d).mkdir()
            for name, data in files.items():
                (self.populate / name).write_bytes(data)
            for name, target in (links or {}).items():
                (self.populate / name).symlink_to(target)
        finally:
            subprocess.run(["umount", str(self.populate)], check=True)


@pytest.fixture(params=["vfat", "ext4"])
def stick(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stick]:
    fstype: str = request.param
    reason = _missing(fstype)
    if reason:
        pytest.skip(f"USB bundle test skipped: {reason}")
    image = tmp_path / f"{fstype}.img"
    with image.open("wb") as f:
        f.truncate(IMAGE_BYTES)
    subprocess.run([*MKFS[fstype], str(image)], check=True, capture_output=True)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    populate = tmp_path / "rw"
    populate.mkdir()
    try:
        yield Stick(fstype, dev, populate)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


async def _api(running: Running, method: str, path: str, body: Any = None) -> Any:
    client = AdminClient(running.server.config.admin_socket)
    args = (path,) if method != "post" else (path, body or {})
    return await asyncio.to_thread(getattr(client, method), *args)


def _times() -> dict[str, int]:
    now = int(time.time())
    return {"created": now - 60, "expires": now + 3600}


async def test_a_plugged_in_stick_is_staged_then_applied_on_approval(
    outpost: Running, stick: Stick
) -> None:
    app = outpost.server.appliance_id
    await _api(
        outpost,
        "post",
        "/v1/bundles/trust/init",
        {"document": json.dumps(trust_doc())},
    )
    good_policy = policy_bundle(1, "A", "B", appliance=app, **_times())
    keys = bundle(
        "enrolment-keys",
        4,
        keys_payload(key_entry("a1b2c3d4e5f6", "sesame", reusable=True)),
        "C",
        appliance=app,
        **_times(),
    )
    junk = {f"junk{i}.bin": os.urandom(256) for i in range(30)}
    stick.put(
        {
            "policy.opb": good_policy,
            "outpost/keys.opb": keys,
            "truncated.opb": policy_bundle(3, "A", "B", appliance=app, **_times())[:-7],
            "stranger.opb": policy_bundle(2, "A", "B", appliance="not-this-one", **_times()),
            "notes.txt": b"not a bundle",
            **junk,
        },
        dirs=("outpost",),
        links={"shadow.opb": "/etc/shadow", "loop": "."} if stick.fstype == "ext4" else None,
    )
    said: list[str] = []
    watcher = UsbWatcher(
        intake_handler(AdminClient(outpost.server.config.admin_socket), said.append)
    )
    props = _udev_props(stick.dev)
    assert props["ID_FS_TYPE"] == stick.fstype
    event = await asyncio.to_thread(watcher.handle, "add", props)
    assert (
        event is not None and event.label == "OUTPOST" and event.serial == "Generic_Flash_Disk_0042"
    )
    report = "\n".join(said)
    assert "2 staged, 2 rejected" in report, report
    assert "truncated: payloads declare" in report
    assert "wrong-appliance: bundle is for appliance not-this-one" in report
    if stick.fstype == "ext4":
        assert "shadow.opb: symlink (not followed)" in report
    # a repeated "change" event for the same stick does nothing; only a new insertion re-reads it
    assert await asyncio.to_thread(watcher.handle, "change", props) is None

    staged = await _api(outpost, "get", "/v1/bundles?status=staged")
    assert sorted(b["kind"] for b in staged) == ["enrolment-keys", "policy"]
    assert {b["medium_serial"] for b in staged} == {"Generic_Flash_Disk_0042"}
    assert {b["file"] for b in staged} == {"policy.opb", "outpost/keys.opb"}
    assert (await _api(outpost, "get", "/v1/policy"))["id"] is None
    assert outpost.store.enrolment_keys() == {}

    for b in staged:
        await _api(outpost, "post", f"/v1/bundles/{b['id']}/approve")
    assert (await _api(outpost, "get", "/v1/policy"))["id"] == 1
    assert [k.prefix for k in outpost.store.enrolment_keys().values()] == ["a1b2c3d4e5f6"]

    # the stick comes out and goes in again: its bundles are now replays, nothing is re-applied
    await asyncio.to_thread(watcher.handle, "remove", props)
    said.clear()
    await asyncio.to_thread(watcher.handle, "add", props)
    again = "\n".join(said)
    assert "replayed: sequence 1 for policy, already accepted 1" in again
    assert "replayed: sequence 4 for enrolment-keys, already accepted 4" in again
    assert "0 staged" in again


async def test_internal_disks_and_non_filesystems_are_never_read(
    outpost: Running, stick: Stick
) -> None:
    said: list[str] = []
    watcher = UsbWatcher(
        intake_handler(AdminClient(outpost.server.config.admin_socket), said.append)
    )
    props = _udev_props(stick.dev)
    assert watcher.handle("add", {**props, "ID_BUS": "ata"}) is None
    assert watcher.handle("add", {**props, "ID_FS_TYPE": "ntfs"}) is None
    assert watcher.handle("add", {**props, "ID_FS_USAGE": "crypto"}) is None
    assert said == [] and await _api(outpost, "get", "/v1/bundles") == []


async def test_audit_export_to_a_stick_is_read_back_and_verifies_anywhere(
    outpost: Running, stick: Stick, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _api(outpost, "post", "/v1/users", {"name": "erin"})
    sock = str(outpost.server.config.admin_socket)
    rc = await asyncio.to_thread(
        cli_main, ["--admin-socket", sock, "audit", "export", "--from", "1", "--to", stick.dev]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "read back and verified" in out
    key = out.split("audit key")[1].split()[0]
    # an auditor's machine: take the file off the stick by other means and check it
    medium = read_medium(stick.dev, stick.fstype)
    [(name, data)] = [(n, d) for n, d in medium.files if n.startswith("audit-")]
    copy = tmp_path / name
    copy.write_bytes(data)
    assert audit_verify.main([str(copy), "--key", key]) == 0
    assert "OK appliance" in capsys.readouterr().out
    # one flipped byte in the copy is caught
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0x01
    copy.write_bytes(bytes(broken))
    assert audit_verify.main([str(copy), "--key", key]) == 1
    assert "FAIL" in capsys.readouterr().out
