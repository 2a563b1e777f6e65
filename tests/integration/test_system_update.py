"""`outpost system update` against a real server, a fake ESP folder and partition image files.

The whole path: a signed system-update bundle is imported and approved through
the CLI (the server records, consumes the sequence, writes nothing), then the
root tool finds it on the "stick" (a folder), verifies it again against the
server's trust store and writes slot b. Every refusal is shown to write
nothing; a kill -9 in the middle of the root write leaves the running slot and
its entry untouched, and a re-run completes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outpost_appliance import slots, sysupdate
from outpost_appliance.apiclient import AdminClient
from outpost_appliance.cli import main as cli_main
from tests.bundle_env import ALL_IN, REPO_ROOT, bundle, trust_doc

from .conftest import Running

RUNNING_VERSION = 100
PART_BYTES = 64 * 1024
ROOT = bytes(range(256)) * 160  # 40 KiB, fits a 64 KiB "partition"
KERNEL = b"K" * 3000
INITRD = b"I" * 7000
SU = [*ALL_IN, "system-update"]
THRESHOLDS = {"ca-material": 2, "enrolment-keys": 1, "policy": 2, "trust-store": 2,
              "system-update": 2}  # fmt: skip


@dataclass
class Box:
    """A fake appliance disk: ESP folder, partitions as files named by PARTUUID, a cmdline."""

    esp: Path
    devices: Path
    cmdline: Path

    def args(self) -> list[str]:
        return [
            "--esp",
            str(self.esp),
            "--devices",
            str(self.devices),
            "--cmdline",
            str(self.cmdline),
        ]

    def part(self, slot: str) -> Path:
        return self.devices / slots.ROOT_OF_SLOT[slot].partuuid

    def entries(self) -> list[str]:
        return sorted(p.name for p in (self.esp / "loader/entries").iterdir())

    def state(self) -> dict[str, Any]:
        """Everything an update could write."""
        files = {
            str(p.relative_to(self.esp)): p.read_bytes() for p in self.esp.rglob("*") if p.is_file()
        }
        return {"esp": files, "a": self.part("a").read_bytes(), "b": self.part("b").read_bytes()}


@pytest.fixture
def box(tmp_path: Path) -> Box:
    esp, devices = tmp_path / "esp", tmp_path / "dev"
    (esp / "loader/entries").mkdir(parents=True)
    devices.mkdir()
    (esp / "loader/entries" / f"outpost-{RUNNING_VERSION}-a.conf").write_text(
        slots.entry_text("a", RUNNING_VERSION)
    )
    (esp / "loader/entries/outpost-50-b.conf").write_text(slots.entry_text("b", 50))
    (esp / "outpost/a").mkdir(parents=True)
    (esp / "outpost/a/vmlinuz").write_bytes(b"old kernel a")
    for slot, fill in (("a", b"A"), ("b", b"\0")):
        (devices / slots.ROOT_OF_SLOT[slot].partuuid).write_bytes(fill * PART_BYTES)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"root=PARTUUID={slots.ROOT_A.partuuid} outpost.slot=a ro quiet\n")
    return Box(esp, devices, cmdline)


def write_update(stick: Path, app: str, seq: int, version: int = 200, **declared: Any) -> bytes:
    """The three files and a bundle signed by A and B on `stick`; `declared` overrides a file's record."""
    stick.mkdir(exist_ok=True)
    files = {}
    for role, name, data in (("root", "root.erofs", ROOT), ("kernel", "vmlinuz", KERNEL),
                             ("initrd", "initrd.img", INITRD)):  # fmt: skip
        (stick / name).write_bytes(data)
        files[role] = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        files[role].update(declared.get(role, {}))
    doc = {"format": sysupdate.UPDATE_FORMAT, "version": version, "files": files}
    now = int(time.time())
    data = bundle("system-update", seq, {"system-update.json": json.dumps(doc).encode()}, "A", "B",
                  appliance=app, created=now - 60, expires=now + 3600)  # fmt: skip
    (stick / f"outpost-update-{version}.opb").write_bytes(data)
    return data


async def cli(running: Running, *argv: str) -> int:
    sock = str(running.server.config.admin_socket)
    return await asyncio.to_thread(cli_main, ["--admin-socket", sock, *argv])


async def api_get(running: Running, path: str) -> Any:
    return await asyncio.to_thread(AdminClient(running.server.config.admin_socket).get, path)


async def setup_trust(running: Running, tmp_path: Path) -> None:
    doc = trust_doc({"A": SU, "B": SU, "C": ["enrolment-keys"]}, THRESHOLDS)
    (tmp_path / "trust.json").write_text(json.dumps(doc))
    assert (
        await cli(running, "bundles", "trust", "init", str(tmp_path / "trust.json"), "--yes") == 0
    )


async def import_and_approve(running: Running, stick: Path) -> int:
    assert await cli(running, "bundles", "import", str(stick)) == 0
    staged = [
        b
        for b in await api_get(running, "/v1/bundles?status=staged")
        if b["kind"] == "system-update"
    ]
    assert len(staged) == 1
    bid = int(staged[0]["id"])
    assert await cli(running, "bundles", "approve", str(bid), "--yes") == 0
    return bid


async def test_an_approved_update_is_written_to_the_inactive_slot_and_reported(
    outpost: Running, tmp_path: Path, box: Box, capsys: pytest.CaptureFixture[str]
) -> None:
    await setup_trust(outpost, tmp_path)
    stick = tmp_path / "stick"
    data = write_update(stick, outpost.server.appliance_id, seq=1)
    bid = await import_and_approve(outpost, stick)
    out = capsys.readouterr().out
    assert f"approved bundle {bid} for install: version 200" in out
    rec = await api_get(outpost, f"/v1/bundles/{bid}")
    assert rec["status"] == "approved" and rec["result"]["version"] == 200
    # approving is not installing: the box is untouched, and it cannot be approved twice
    assert box.entries() == ["outpost-100-a.conf", "outpost-50-b.conf"]
    assert await cli(outpost, "bundles", "approve", str(bid), "--yes") == 1
    assert f"bundle {bid} is approved, not staged" in capsys.readouterr().err
    # nor replayed from another stick
    assert await cli(outpost, "bundles", "import", str(stick / "outpost-update-200.opb")) == 1
    assert "replayed: sequence 1 for system-update, already accepted 1" in capsys.readouterr().out
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]

    assert await cli(outpost, "system", "update", str(stick), *box.args(), "--yes") == 0
    out = capsys.readouterr().out
    assert "installed version 200 into slot b (outpost-200-b+3.conf)" in out
    assert "falls back to slot a (version 100) by itself" in out
    assert box.part("b").read_bytes()[: len(ROOT)] == ROOT
    assert box.part("a").read_bytes() == b"A" * PART_BYTES  # the running slot is never written
    assert (box.esp / "outpost/b/vmlinuz").read_bytes() == KERNEL
    assert (box.esp / "outpost/b/initrd.img").read_bytes() == INITRD
    assert (box.esp / "outpost/a/vmlinuz").read_bytes() == b"old kernel a"
    assert box.entries() == ["outpost-100-a.conf", "outpost-200-b+3.conf"]

    rec = await api_get(outpost, f"/v1/bundles/{bid}")
    assert rec["status"] == "installed"
    assert rec["result"]["installed"]["root_sha256"] == hashlib.sha256(ROOT).hexdigest()
    assert rec["result"]["installed"]["previous_version"] == RUNNING_VERSION
    audit = (await api_get(outpost, "/v1/audit?limit=50"))["entries"]
    done = [e for e in audit if e["action"] == "system.update.installed"]
    assert (
        len(done) == 1
        and done[0]["details"]["slot"] == "b"
        and done[0]["details"]["version"] == 200
    )
    assert [e["action"] for e in audit].count("system.update.started") == 1

    assert await cli(outpost, "system", "status", *box.args()) == 0
    out = capsys.readouterr().out
    assert "booted slot     a" in out
    assert "slot b          version 200  on trial, 3 boot tries left" in out
    assert "this boot       blessed" in out and "next boot       outpost-200-b+3.conf" in out


async def refused(
    running: Running, stick: Path, box: Box, capsys: pytest.CaptureFixture[str], *extra: str
) -> str:
    before = box.state()
    assert await cli(running, "system", "update", str(stick), *box.args(), "--yes", *extra) == 2
    err = capsys.readouterr().err
    assert "update refused, nothing written" in err
    assert box.state() == before
    return err


async def test_refusals_name_what_and_where_and_write_nothing(
    outpost: Running, tmp_path: Path, box: Box, capsys: pytest.CaptureFixture[str]
) -> None:
    await setup_trust(outpost, tmp_path)
    app = outpost.server.appliance_id
    stick = tmp_path / "stick"
    write_update(stick, app, seq=1)

    assert "no approved system-update bundle on" in await refused(outpost, stick, box, capsys)
    assert await cli(outpost, "bundles", "import", str(stick)) == 0
    err = await refused(outpost, stick, box, capsys)
    assert "staged but not approved: outpost-update-200.opb (bundle" in err
    bid = next(b["id"] for b in await api_get(outpost, "/v1/bundles?status=staged"))
    assert await cli(outpost, "bundles", "approve", str(bid), "--yes") == 0
    capsys.readouterr()

    # a tampered root image (same size), then a truncated one, then a missing kernel
    good = (stick / "root.erofs").read_bytes()
    (stick / "root.erofs").write_bytes(b"X" + good[1:])
    err = await refused(outpost, stick, box, capsys)
    assert f"{stick}/root.erofs: does not match its signed sha256 (damaged or tampered with)" in err
    (stick / "root.erofs").write_bytes(good[:-1])
    assert (
        f"root.erofs: {len(good) - 1} bytes, the signed update says {len(good)}"
        in await refused(outpost, stick, box, capsys)
    )
    (stick / "root.erofs").write_bytes(good)
    (stick / "vmlinuz").unlink()
    assert f"{stick}/vmlinuz: missing (the update's kernel file)" in await refused(
        outpost, stick, box, capsys
    )
    (stick / "vmlinuz").write_bytes(KERNEL)

    # the bundle file itself altered after approval: it is no longer the approved bundle
    opb = stick / "outpost-update-200.opb"
    raw = opb.read_bytes()
    opb.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert "no approved system-update bundle on" in await refused(outpost, stick, box, capsys)
    opb.write_bytes(raw)

    # not booted from a slot; no ESP
    box.cmdline.write_text("root=/dev/sda2 ro\n")
    assert "names no outpost.slot=" in await refused(outpost, stick, box, capsys)
    box.cmdline.write_text("outpost.slot=a\n")
    assert f"no boot loader at {tmp_path}/nowhere" in await refused(
        outpost, stick, box, capsys, "--esp", str(tmp_path / "nowhere")
    )
    # after all that, the untouched medium installs
    assert await cli(outpost, "system", "update", str(stick), *box.args(), "--yes") == 0


async def test_a_wrong_digest_in_the_signed_document_and_a_downgrade_are_refused(
    outpost: Running, tmp_path: Path, box: Box, capsys: pytest.CaptureFixture[str]
) -> None:
    await setup_trust(outpost, tmp_path)
    app = outpost.server.appliance_id
    stick = tmp_path / "stick"
    write_update(stick, app, seq=1, initrd={"sha256": "0" * 64})  # signed, but not these bytes
    await import_and_approve(outpost, stick)
    capsys.readouterr()
    err = await refused(outpost, stick, box, capsys)
    assert "initrd.img: does not match its signed sha256" in err

    old = tmp_path / "old"
    write_update(old, app, seq=2, version=90)
    await import_and_approve(outpost, old)
    capsys.readouterr()
    err = await refused(outpost, old, box, capsys)
    assert (
        "refusing a downgrade or reinstall: update version 90 is not newer than the running" in err
    )
    assert "version 100 (slot a is running)" in err

    # the first (seq 1) update was overtaken by the approval of seq 2
    (stick / "initrd.img").write_bytes(INITRD)
    err = await refused(outpost, stick, box, capsys)
    assert "is not the latest approved system-update (the server has accepted sequence 2)" in err


CHILD = """
import os, signal, sys
from outpost_appliance import sysupdate
from outpost_appliance.cli import main
sysupdate.COPY_CHUNK_BYTES = 4096
real = sysupdate._copy_hashing
def killing(src, dst, size):
    if size > 20000:  # the root image: die after two chunks reached the partition
        dst.write(src.read(8192)); dst.flush(); os.fsync(dst.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, size)
if sys.argv[1] == "kill":
    sysupdate._copy_hashing = killing
sys.exit(main(sys.argv[2:]))
"""


async def test_kill_9_during_the_root_write_leaves_the_running_slot_booting_and_a_rerun_completes(
    outpost: Running, tmp_path: Path, box: Box
) -> None:
    await setup_trust(outpost, tmp_path)
    stick = tmp_path / "stick"
    write_update(stick, outpost.server.appliance_id, seq=1)
    await import_and_approve(outpost, stick)
    sock = str(outpost.server.config.admin_socket)
    argv = ["--admin-socket", sock, "system", "update", str(stick), *box.args(), "--yes"]

    def child(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CHILD, mode, *argv], capture_output=True,
                              text=True, cwd=REPO_ROOT, timeout=120, check=False)  # fmt: skip

    killed = await asyncio.to_thread(child, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # half of slot b is written; slot a, its kernel and its entry are as they were,
    # and nothing points at slot b any more: the next boot is slot a
    assert box.part("b").read_bytes()[:8192] == ROOT[:8192]
    assert box.part("b").read_bytes()[8192 : len(ROOT)] != ROOT[8192:]
    assert box.part("a").read_bytes() == b"A" * PART_BYTES
    assert box.entries() == ["outpost-100-a.conf"]
    assert (box.esp / "outpost/a/vmlinuz").read_bytes() == b"old kernel a"
    assert slots.assess(box.entries(), "a").default == slots.LoaderEntry(100, "a")
    rec = await api_get(outpost, "/v1/bundles?status=approved")
    assert [r["kind"] for r in rec] == ["system-update"]  # started, never reported installed

    again = await asyncio.to_thread(child, "normal")
    assert again.returncode == 0, again.stderr
    assert "installed version 200 into slot b" in again.stdout
    assert box.part("b").read_bytes()[: len(ROOT)] == ROOT
    assert box.entries() == ["outpost-100-a.conf", "outpost-200-b+3.conf"]
    audit = (await api_get(outpost, "/v1/audit?limit=50"))["entries"]
    actions = [e["action"] for e in audit]
    assert (
        actions.count("system.update.started") == 2
        and actions.count("system.update.installed") == 1
    )
