"""Boot the disk image under qemu (TCG, UEFI + systemd-boot) and check it works.

One machine for the module, tests in order: readiness on the serial console,
the control server through a loopback-only forward, the first-boot screen on
tty1 (read back from a screendump), a USB stick hot-plugged over QMP.

Test-only material goes on the test's own copy of the disk, never into the
image: the data partition is pre-made with a known appliance id and a
test-only trust store for the stick's signed enrolment bundle. No key, id or
trust store is baked into outpost.img.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .screen import read_ppm, read_psf, read_text, write_png
from .vm import Machine, free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "appliance"))
from outpost_appliance import slots  # noqa: E402

READY_TIMEOUT_S = 480  # ~45 s measured; TCG on a busy 2-core machine can be far slower
TEST_APPLIANCE_ID = "imagetest01"
TEST_UID = 900  # the image's `outpost` user (image/overlay/usr/lib/sysusers.d/outpost.conf)
MIB = 1024 * 1024
SIGN = [sys.executable, "-m", "outpost_appliance.sign"]


def partition_offset_mib(part: slots.Partition) -> int:
    return 1 + sum(p.size_mib for p in slots.LAYOUT if p.number < part.number)


def make_signed_stick(work: Path) -> tuple[Path, dict[str, Any]]:
    """An ext4 'USB stick' with one signed enrolment-keys bundle, and the trust store for it."""
    keys = work / "signer"
    subprocess.run(
        [*SIGN, "keygen", "--out", str(keys), "--label", "image-test"],
        check=True,
        capture_output=True,
    )
    key_file = next(keys.glob("*.key"))
    pub = json.loads(next(keys.glob("*.pub")).read_text())
    pub["kinds"] = ["enrolment-keys", "trust-store"]
    trust = {
        "format": "outpost-trust-store-v1",
        "signers": [pub],
        "thresholds": {"enrolment-keys": 1, "trust-store": 1},
        "retired": [],
    }
    payload = work / "keys.json"
    payload.write_text(
        json.dumps({"keys": [{"user": "alice", "reusable": False, "expires": "1h"}]})
    )
    stick = work / "stick"
    stick.mkdir()
    bundle = stick / "enrol.opb"
    subprocess.run(
        [
            *SIGN,
            "create",
            "enrolment-keys",
            "--appliance",
            TEST_APPLIANCE_ID,
            "--seq",
            "1",
            "--expires",
            "7d",
            "--payload",
            f"keys.json={payload}",
            "--out",
            str(bundle),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*SIGN, "sign", "--key", str(key_file), str(bundle)], check=True, capture_output=True
    )
    image = work / "stick.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-L", "OUTPOST", "-d", str(stick), str(image), "16M"], check=True
    )
    return image, trust


def make_test_data_partition(work: Path, trust: dict[str, Any]) -> Path:
    """The data partition (/var) as the test wants it: known appliance id, test trust store.
    Everything else (keys, CA, passphrase, machine state) is still made on first boot."""
    var = work / "var"
    state = var / "lib" / "outpost"
    state.mkdir(parents=True)
    (state / "appliance-id").write_text(TEST_APPLIANCE_ID + "\n")
    (state / "trust-store.json").write_text(json.dumps(trust))  # TEST-ONLY trust store
    for p in (state, *state.iterdir()):
        os.chown(p, TEST_UID, TEST_UID)
        p.chmod(0o700 if p.is_dir() else 0o600)
    image = work / "data.img"
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-L",
            "outpost-data",
            "-d",
            str(var),
            str(image),
            f"{slots.DATA.size_mib}M",
        ],
        check=True,
    )
    return image


@pytest.fixture(scope="module")
def machine(
    built_image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    work = tmp_path_factory.mktemp("boot")
    stick, trust = make_signed_stick(work)
    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(built_image["path"]), str(disk)], check=True)
    data = make_test_data_partition(work, trust)
    subprocess.run(
        [
            "dd",
            f"if={data}",
            f"of={disk}",
            "bs=1M",
            f"seek={partition_offset_mib(slots.DATA)}",
            "conv=notrunc,sparse",
            "status=none",
        ],
        check=True,
    )
    vm = Machine(disk, work, forwards={80: free_port()})
    vm.stick = stick  # type: ignore[attr-defined]
    vm.root = Path(str(built_image["root"]))  # type: ignore[attr-defined]
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()
        artefacts = REPO / "image" / "build"
        shutil.copyfile(vm.serial_log, artefacts / "image-test-serial.log")


def test_boots_to_ready_on_the_serial_console(machine: Machine) -> None:
    m = machine.wait_for(r"OUTPOST-READY uptime=([0-9.]+) image=(\d+) slot=([ab])", READY_TIMEOUT_S)
    took = machine.elapsed
    assert m[3] == "a"
    record = {
        "boot_to_ready_s": round(took, 1),
        "guest_uptime_at_ready_s": float(m[1]),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (REPO / "image" / "build" / "boot-info.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"boot to ready: {took:.1f} s (guest uptime {m[1]} s)")


def test_control_server_answers_through_the_forwarded_port(machine: Machine) -> None:
    import urllib.request  # noqa: PLC0415

    port = machine.forwards[80]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/key?v=71", timeout=30) as r:
        body = json.loads(r.read())
    assert body["publicKey"].startswith("mkey:") and len(body["publicKey"]) == 5 + 64


def test_tty1_shows_the_first_boot_passphrase_screen(machine: Machine) -> None:
    unit = (machine.root / "usr/lib/systemd/system/outpost-console.service").read_text()  # type: ignore[attr-defined]
    font_path = re.search(r"setfont -C /dev/tty1 (\S+)", unit)
    assert font_path
    font = read_psf(machine.root / font_path[1].lstrip("/"))  # type: ignore[attr-defined]
    ppm = machine.workdir / "tty1.ppm"
    png = REPO / "image" / "build" / "tty1-first-boot.png"
    text = ""
    deadline = time.monotonic() + 180  # Textual's first start under TCG takes a while
    while time.monotonic() < deadline:
        machine.screendump(ppm)
        img = read_ppm(ppm)
        text = "\n".join(read_text(img, font))
        if "set a passphrase" in text:
            break
        time.sleep(5)
    write_png(img, png)
    assert "set a passphrase" in text, f"tty1 shows:\n{text}"
    assert "No console passphrase is set yet" in text.replace("\n", " ") or "Choose one" in text


def test_usb_stick_is_seen_by_the_guest(machine: Machine) -> None:
    disabled = (machine.root / "usr/lib/outpost/units-disabled").read_text()  # type: ignore[attr-defined]
    if "outpost-usb-watch.service" not in disabled:  # plug it in once the watcher listens, as a person would
        machine.wait_for(r"watching for removable media", 180)
    machine.plug_usb_stick(machine.stick)  # type: ignore[attr-defined]
    m = machine.wait_for(r"USB storage attached: (sd[a-z]+) fstype=(\S*) label=(\S*)", 120)
    assert (m[2], m[3]) == ("ext4", "OUTPOST")


def test_usb_bundle_is_staged(machine: Machine) -> None:
    disabled = (machine.root / "usr/lib/outpost/units-disabled").read_text()  # type: ignore[attr-defined]
    if "outpost-usb-watch.service" in disabled:
        pytest.skip(
            "this build has no `outpost bundles watch` (issue 6); the stick is plugged "
            "and seen, staging is checked once the watcher is in the image"
        )
    machine.wait_for(r"enrol\.opb.*(staged|accepted)|(staged|accepted).*enrol\.opb", 120)


def test_no_unit_failed_during_boot(machine: Machine) -> None:
    failed = re.findall(r"Failed to start (\S+)", machine.serial_text())
    assert failed == []
