"""A/B update and automatic fallback, booted for real under qemu (`make image-test` only).

1. `build.py update` makes a signed system-update (the image's own root, as a
   newer version) for the test appliance; the bundle verifies against the
   test's trust store. `sysupdate.install()`, the code `outpost system update`
   runs on the box, writes it into slot B of the test's copy of the disk (the
   ESP through mtools, the partition through a file): the box boots slot B,
   the server gets ready, and systemd-bless-boot drops the entry's counter.
2. A deliberately broken, newer update goes into slot A (its root's
   `outpost-serve` exits at once, so the server never starts): each boot of it
   is not ready, outpost-ready reboots, systemd-boot counts the try, and
   after three tries the box boots slot B again by itself, and is ready.

What this does NOT exercise under qemu: approving the bundle and running
`outpost system update` inside the guest from a hot-plugged stick (the guest
has no shell for a test to drive; that path is tested against files in
tests/integration/test_system_update.py). The install here runs on the host,
with the same function, against the same on-disk layout.

Network: the Machine of vm.py (user networking, restrict=on, 127.0.0.1 forwards).
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

from .test_boot import (
    MIB,
    READY_TIMEOUT_S,
    SIGN,
    TEST_APPLIANCE_ID,
    make_test_data_partition,
    partition_offset_mib,
)
from .vm import Machine, free_port

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "image"), str(REPO / "appliance"), str(REPO / "server")]
from outpost_appliance import slots, sysupdate  # noqa: E402

FALLBACK_TIMEOUT_S = 1800  # three failed boots and a good one; ~70 s each measured idle under TCG
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
BROKEN_SERVE = (
    "#!/bin/sh\necho 'outpost-serve: deliberately broken (image update test)' >&2\nexit 1\n"
)


def _esp(disk: Path) -> str:
    return f"{disk}@@{partition_offset_mib(slots.ESP) * MIB}"


def esp_entries(disk: Path) -> list[str]:
    out = subprocess.run(
        ["mdir", "-b", "-i", _esp(disk), "::/loader/entries"],
        capture_output=True, text=True, check=True, env=MTOOLS_ENV,
    )  # fmt: skip
    return sorted(Path(line.strip()).name for line in out.stdout.splitlines() if line.strip())


def install_on_disk(disk: Path, folder: Path, update: sysupdate.SystemUpdate, booted: str,
                    work: Path) -> slots.UpdatePlan:  # fmt: skip
    """Run sysupdate.install() against the disk image: ESP copied out and back with
    mtools, the target partition written through a file then copied into place."""
    esp = work / "esp"
    shutil.rmtree(esp, ignore_errors=True)
    esp.mkdir()
    subprocess.run(["mcopy", "-s", "-n", "-i", _esp(disk), "::/loader", "::/outpost", str(esp)],
                   check=True, env=MTOOLS_ENV)  # fmt: skip
    before = set(esp_entries(disk))
    part = work / "slot.img"
    part.unlink(missing_ok=True)
    with open(part, "wb") as f:
        f.truncate(slots.ROOT_B.size_mib * MIB)
    plan = sysupdate.install(update, folder, esp, booted, lambda p: part)
    target = slots.ROOT_OF_SLOT[plan.target_slot]
    subprocess.run(
        ["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={partition_offset_mib(target)}",
         f"count={-(-update.root.size // MIB)}", "conv=notrunc", "status=none"],
        check=True,
    )  # fmt: skip
    after = {p.name for p in (esp / "loader/entries").iterdir()}
    for gone in sorted(before - after):
        subprocess.run(["mdel", "-i", _esp(disk), f"::/loader/entries/{gone}"], check=True,
                       env=MTOOLS_ENV)  # fmt: skip
    for new in sorted(after - before):
        subprocess.run(["mcopy", "-i", _esp(disk), str(esp / "loader/entries" / new),
                        f"::/loader/entries/{new}"], check=True, env=MTOOLS_ENV)  # fmt: skip
    kdir = slots.kernel_dir(plan.target_slot)
    for name in ("vmlinuz", "initrd.img"):
        src, dst = str(esp / kdir / name), f"::/{kdir}/{name}"
        subprocess.run(["mcopy", "-o", "-i", _esp(disk), src, dst], check=True, env=MTOOLS_ENV)
    return plan


def wait_for_entries(disk: Path, want: str, timeout: float) -> list[str]:
    """Poll the ESP (read-only, from the host) until an entry matching `want` appears."""
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while time.monotonic() < deadline:
        try:
            names = esp_entries(disk)
        except subprocess.CalledProcessError:
            names = []  # the guest is in the middle of writing the FAT
        if any(re.fullmatch(want, n) for n in names):
            return names
        time.sleep(5)
    raise AssertionError(f"no ESP entry matching {want!r} after {timeout:.0f} s: {names}")


@pytest.fixture(scope="module")
def prepared(
    built_image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("update")
    version = int(built_image["version"])  # type: ignore[call-overload]
    keys = work / "signer"
    subprocess.run([*SIGN, "keygen", "--out", str(keys), "--label", "update-test"], check=True,
                   capture_output=True)  # fmt: skip  # a throwaway key, never stored
    key_file = next(keys.glob("*.key"))
    pub = json.loads(next(keys.glob("*.pub")).read_text())
    pub["kinds"] = ["system-update", "trust-store"]
    trust = {"format": "outpost-trust-store-v1", "signers": [pub],
             "thresholds": {"system-update": 1, "trust-store": 1}, "retired": []}  # fmt: skip

    # the release path: build.py update (what `make update-bundle` runs)
    good = work / "update-good"
    t = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(REPO / "image/build.py"), "update", "--key", str(key_file),
         "--appliance", TEST_APPLIANCE_ID, "--seq", "1", "--version", str(version + 1),
         "--update-out", str(good)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"build.py update: {time.monotonic() - t:.0f} s")
    bundle = Path(done.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in good.iterdir()) == sorted(
        [bundle.name, "root.erofs", "vmlinuz", "initrd.img", "system-update.json"]
    )
    from outpost_server.bundles.trust import TrustStore  # noqa: PLC0415
    from outpost_server.bundles.verify import verify  # noqa: PLC0415

    vb = verify(bundle.read_bytes(), TrustStore.from_json(trust), TEST_APPLIANCE_ID,
                int(time.time()), {}, accept_kinds={"system-update"})  # fmt: skip
    update = sysupdate.parse_update(vb.payloads["system-update.json"])
    assert update.version == version + 1
    sysupdate.check_medium(update, good)

    # a broken update: the same root, except that the server cannot start
    import build  # noqa: PLC0415 - image/build.py
    from imagebuild import disk as imgdisk  # noqa: PLC0415

    broken = work / "update-broken"
    broken.mkdir()
    root = Path(str(built_image["root"]))
    scratch = root.parent / f"broken-root-{os.getpid()}"  # same filesystem: hard links
    try:
        subprocess.run(["cp", "-al", str(root), str(scratch)], check=True)
        serve = scratch / "usr/libexec/outpost/outpost-serve"
        serve.unlink()  # a new file: the hard-linked original stays as it was
        serve.write_text(BROKEN_SERVE)
        serve.chmod(0o755)
        imgdisk.make_erofs(scratch, broken / "root.erofs", f"{version + 2}-broken", version)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(good / name, broken / name)
    bad_update = sysupdate.parse_update(
        json.dumps(build.update_document(broken, version + 2)).encode()
    )

    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(built_image["path"]), str(disk)], check=True)
    data = make_test_data_partition(work, trust)
    seek = partition_offset_mib(slots.DATA)
    subprocess.run(["dd", f"if={data}", f"of={disk}", "bs=1M", f"seek={seek}",
                    "conv=notrunc,sparse", "status=none"], check=True)  # fmt: skip
    yield {"work": work, "disk": disk, "version": version, "good": (good, update),
           "broken": (broken, bad_update)}  # fmt: skip


def boot(prepared: dict[str, Any], name: str) -> Machine:
    work = prepared["work"] / name
    work.mkdir()
    vm = Machine(prepared["disk"], work, forwards={80: free_port()})
    vm.start()
    return vm


def keep_log(vm: Machine, name: str) -> None:
    shutil.copyfile(vm.serial_log, REPO / "image" / "build" / f"image-test-{name}-serial.log")


def test_an_update_in_slot_b_boots_gets_ready_and_is_blessed(prepared: dict[str, Any]) -> None:
    disk, v = prepared["disk"], prepared["version"]
    folder, update = prepared["good"]
    plan = install_on_disk(disk, folder, update, "a", prepared["work"])
    assert plan.target_slot == "b"
    assert esp_entries(disk) == [f"outpost-{v}-a.conf", f"outpost-{v + 1}-b+3.conf"]
    vm = boot(prepared, "slot-b")
    try:
        m = vm.wait_for(r"OUTPOST-READY uptime=([0-9.]+) image=(\d+) slot=([ab])", READY_TIMEOUT_S)
        print(f"slot b ready {vm.elapsed:.0f} s after qemu start (guest uptime {m[1]} s)")
        assert m[3] == "b"
        # systemd-bless-boot renames outpost-V-b+2-1.conf to outpost-V-b.conf
        names = wait_for_entries(disk, rf"outpost-{v + 1}-b\.conf", 180)
        print(f"slot b blessed {vm.elapsed:.0f} s after qemu start: {names}")
    finally:
        vm.stop()
        keep_log(vm, "slot-b")
    assert esp_entries(disk) == [f"outpost-{v}-a.conf", f"outpost-{v + 1}-b.conf"]


def test_a_broken_update_falls_back_to_the_previous_slot_by_itself(
    prepared: dict[str, Any],
) -> None:
    disk, v = prepared["disk"], prepared["version"]
    if esp_entries(disk) != [f"outpost-{v}-a.conf", f"outpost-{v + 1}-b.conf"]:
        pytest.skip("needs slot B installed and blessed by the test before")
    folder, update = prepared["broken"]
    plan = install_on_disk(disk, folder, update, "b", prepared["work"])
    assert plan.target_slot == "a"
    assert esp_entries(disk) == [f"outpost-{v + 1}-b.conf", f"outpost-{v + 2}-a+3.conf"]
    vm = boot(prepared, "fallback")
    try:
        m = vm.wait_for(
            r"OUTPOST-READY uptime=([0-9.]+) image=(\d+) slot=([ab])", FALLBACK_TIMEOUT_S
        )
        took = vm.elapsed
        serial = vm.serial_text()
        names = wait_for_entries(disk, rf"outpost-{v + 2}-a\+0-3\.conf", 120)
    finally:
        vm.stop()
        keep_log(vm, "fallback")
    print(f"fell back to slot b, ready {took:.0f} s after qemu start; entries {names}")
    assert m[3] == "b"
    assert serial.count("OUTPOST-TRIAL-FAILED slot=a") == slots.BOOT_TRIES
    assert "deliberately broken" in serial or "outpost-server.service failed" in serial
    assert "OUTPOST-READY" not in serial[: m.start()]  # slot a never became ready
    report = slots.assess(names, "b")
    assert report.fell_back_from == slots.LoaderEntry(v + 2, "a", 0, 3)
    assert report.default == slots.LoaderEntry(v + 1, "b")
