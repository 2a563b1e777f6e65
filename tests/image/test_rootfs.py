"""The built appliance root, checked without booting it (part of `make test`).

Builds the root once per input hash (about 2-3 min cold, seconds when cached;
see docs/image.md), then checks units, files, the venv, the firewall and that
nothing secret or per-device is baked in.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

SERVICES = (
    "outpost-server",
    "outpost-console",
    "outpost-usb-watch",
    "outpost-scheduler",
    "outpost-firstboot",
    "outpost-ready",
)
LONG_RUNNING = ("outpost-server", "outpost-usb-watch", "outpost-scheduler")
OPTIONAL_COMMANDS = {"outpost-usb-watch": "bundles watch", "outpost-scheduler": "scheduler"}
SYSTEMD_DIR = "usr/lib/systemd/system"
MAX_EXPOSURE = 3.0  # systemd-analyze security; 10 = unsandboxed, "OK" is below 4.5


def unit(root: Path, name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (all sections merged; comments dropped)."""
    values: dict[str, list[str]] = {}
    for line in (root / SYSTEMD_DIR / f"{name}.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def chroot(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, check=False)


# ------------------------------------------------------------------ units
def test_units_pass_systemd_analyze_verify(rootfs: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={rootfs}", *(f"{s}.service" for s in SERVICES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_verify_would_catch_a_broken_unit(rootfs: Path, tmp_path: Path) -> None:
    """The check above can fail: the same tool rejects a unit with a missing binary."""
    bad = tmp_path / "bad.service"
    text = (rootfs / SYSTEMD_DIR / "outpost-server.service").read_text()
    bad.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/no/such/outpost", text))
    done = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "/no/such/outpost" in done.stderr


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_units_notify_restart_and_have_a_watchdog(rootfs: Path, name: str) -> None:
    u = unit(rootfs, name)
    assert u["Type"] == ["notify"]
    assert u["Restart"] == ["on-failure"]
    assert int(u["WatchdogSec"][0]) > 0
    assert u["NotifyAccess"] == ["main"]


@pytest.mark.parametrize(
    "name", ("outpost-server", "outpost-console", "outpost-usb-watch", "outpost-scheduler")
)
def test_units_are_sandboxed(rootfs: Path, name: str) -> None:
    u = unit(rootfs, name)
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
    ):
        assert u.get(key) == [value], f"{name}: {key}"
    assert "CapabilityBoundingSet" in u, f"{name}: capabilities not bounded"
    done = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--root={rootfs}",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            f"{name}.service",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = done.stdout + done.stderr
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    assert score and float(score[1]) <= MAX_EXPOSURE and done.returncode == 0, report[-600:]


def test_only_the_server_may_bind_low_ports(rootfs: Path) -> None:
    assert unit(rootfs, "outpost-server")["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert unit(rootfs, "outpost-server")["User"] == ["outpost"]
    assert unit(rootfs, "outpost-scheduler")["CapabilityBoundingSet"] == [""]
    assert unit(rootfs, "outpost-console")["CapabilityBoundingSet"] == [""]


def test_console_replaces_the_getty_on_tty1(rootfs: Path) -> None:
    u = unit(rootfs, "outpost-console")
    assert u["TTYPath"] == ["/dev/tty1"]
    assert u["StandardError"] == ["tty"]  # Textual draws on stderr
    assert "getty@tty1.service" in u["Conflicts"][0]
    assert not (rootfs / "etc/systemd/system/getty.target.wants/getty@tty1.service").exists()
    font = u["ExecStartPre"][0].split()[-1]
    assert (rootfs / font.lstrip("/")).is_file()


def test_wanted_units_are_enabled_and_the_rest_masked(rootfs: Path) -> None:
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    for name in ("outpost-server", "outpost-console", "outpost-ready", "systemd-networkd"):
        assert (wants / f"{name}.service").is_symlink(), name
    assert (
        rootfs / "etc/systemd/system/sysinit.target.wants/outpost-firstboot.service"
    ).is_symlink()
    assert (rootfs / "etc/systemd/system/sysinit.target.wants/nftables.service").is_symlink()
    assert (
        rootfs / "etc/systemd/system/boot-complete.target.requires/outpost-ready.service"
    ).is_symlink()
    for masked in (
        "e2scrub_reap.service",
        "systemd-networkd-wait-online.service",
        "systemd-firstboot.service",
    ):
        assert (rootfs / "etc/systemd/system" / masked).resolve() == Path("/dev/null"), masked


def _any_unit(root: Path, name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (root / SYSTEMD_DIR / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).extend(value.split())
    return values


def test_a_boot_is_blessed_only_after_the_server_is_ready(rootfs: Path) -> None:
    """systemd-bless-boot (which drops the boot counter) runs only once boot-complete.target
    is reached, and boot-complete.target requires outpost-ready.service, which succeeds
    only when the control server answers. So a slot whose server never gets ready is
    never blessed, and its tries run out (docs/image.md, "Updates")."""
    bless = _any_unit(rootfs, "systemd-bless-boot.service")
    assert "boot-complete.target" in bless["Requires"] and "boot-complete.target" in bless["After"]
    assert (rootfs / "usr/lib/systemd/system-generators/systemd-bless-boot-generator").is_file()
    ready = _any_unit(rootfs, "outpost-ready.service")
    assert "boot-complete.target" in ready["Before"]
    assert "outpost-server.service" in ready["After"]
    # Wants, not Requires: a server that cannot start must not skip the check (and its reboot)
    assert "outpost-server.service" in ready["Wants"]
    assert "outpost-server.service" not in ready.get("Requires", [])
    assert ready["RequiredBy"] == ["boot-complete.target"]
    assert (
        rootfs / "etc/systemd/system/boot-complete.target.requires/outpost-ready.service"
    ).is_symlink()
    # the installed bless unit loads cleanly next to ours (no man pages in the image)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={rootfs}",
         "systemd-bless-boot.service", "outpost-ready.service"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    script = (rootfs / "usr/libexec/outpost/outpost-ready").read_text()
    # on a boot on trial, not ready means reboot (the try is counted; fallback follows)
    assert '"$trial" = "indeterminate"' in script and "systemctl reboot" in script
    assert (rootfs / "usr/lib/systemd/systemd-bless-boot").is_file()
    assert "systemctl is-failed --quiet outpost-server.service" in script


def test_the_readiness_script_reboots_only_a_boot_on_trial(rootfs: Path, tmp_path: Path) -> None:
    """Run the real script with stand-ins for the probe, systemctl and systemd-bless-boot."""
    script = (rootfs / "usr/libexec/outpost/outpost-ready").read_text()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for name, body in (
        ("systemctl", f'echo "systemctl $*" >> {log}; [ "$1" = is-failed ] && exit 0; exit 0'),
        ("bless", 'echo "$BLESS_STATUS"'),
        ("python", "exit 1"),  # the server never answers
    ):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    fake = (
        script.replace("/usr/lib/systemd/systemd-bless-boot", str(bin_dir / "bless"))
        .replace("/opt/outpost/venv/bin/python", str(bin_dir / "python"))
        .replace("/usr/lib/os-release", "/dev/null")
    )
    (tmp_path / "ready").write_text(fake)
    for status, reboots in (("indeterminate", True), ("good", False), ("clean", False)):
        log.write_text("")
        done = subprocess.run(
            ["sh", str(tmp_path / "ready")],
            capture_output=True, text=True, check=False,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "BLESS_STATUS": status},
        )  # fmt: skip
        assert done.returncode == 1
        assert "OUTPOST-NOT-READY" in done.stderr and "failed and is not restarted" in done.stderr
        assert ("systemctl reboot --no-block" in log.read_text()) is reboots, status


@pytest.mark.parametrize("name", sorted(OPTIONAL_COMMANDS))
def test_optional_units_enabled_exactly_when_their_command_exists(rootfs: Path, name: str) -> None:
    present = chroot(
        rootfs, "/opt/outpost/venv/bin/outpost", *OPTIONAL_COMMANDS[name].split(), "--help"
    )
    enabled = (
        rootfs / "etc/systemd/system/multi-user.target.wants" / f"{name}.service"
    ).is_symlink()
    listed = f"{name}.service:" in (rootfs / "usr/lib/outpost/units-disabled").read_text()
    assert enabled == (present.returncode == 0)
    assert listed == (not enabled)


# ------------------------------------------------------------ files, venv
def test_expected_files_are_in_place(rootfs: Path) -> None:
    for rel in (
        "usr/libexec/outpost/outpost-serve",
        "usr/libexec/outpost/outpost-ready",
        "usr/libexec/outpost/outpost-firstboot",
        "opt/outpost/venv/bin/outpost",
        "opt/outpost/venv/bin/outpost-sign",
        "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "usr/lib/systemd/systemd-bless-boot",
        "usr/lib/outpost/packages.txt",
        "usr/lib/outpost/wheels.sha256",
    ):
        path = rootfs / rel
        assert path.is_file(), rel
        if "/bin/" in rel or "libexec" in rel:
            assert path.stat().st_mode & 0o111, f"{rel} is not executable"
    assert (rootfs / "efi").is_dir()
    assert (rootfs / "etc/systemd/network").readlink() == Path("/var/lib/outpost-os/network")


def test_venv_imports_outpost_in_a_chroot(rootfs: Path) -> None:
    done = chroot(
        rootfs,
        "/opt/outpost/venv/bin/python",
        "-c",
        "import outpost_server, outpost_appliance, outpost_tui, textual, pyudev, nacl; "
        "print(outpost_server.__version__)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    help_ = chroot(rootfs, "/opt/outpost/venv/bin/outpost", "serve", "--help")
    assert help_.returncode == 0 and "--stun-listen" in help_.stdout


def test_venv_has_no_installer_and_bytecode_is_precompiled(rootfs: Path) -> None:
    venv = rootfs / "opt/outpost/venv"
    assert not (venv / "bin/pip").exists(), "nothing is ever installed on the appliance"
    site = next((venv / "lib").glob("python3*/site-packages"))
    cached = list((site / "outpost_server").glob("__pycache__/*.pyc"))
    assert cached, "read-only root: bytecode must be compiled at build time"


def test_initramfs_can_mount_the_erofs_root(rootfs: Path) -> None:
    initrd = next((rootfs / "boot").glob("initrd.img-*"))
    done = chroot(rootfs, "lsinitramfs", f"/boot/{initrd.name}")
    assert done.returncode == 0, done.stderr
    assert re.search(r"/erofs\.ko", done.stdout), "erofs module missing from the initramfs"


def test_clock_floor_is_the_build_time(rootfs: Path) -> None:
    """timesyncd advances a clock that is behind to /usr/lib/clock-epoch's mtime."""
    release = (rootfs / "usr/lib/os-release").read_text()
    version = re.search(r"(?m)^IMAGE_VERSION=(\d+)$", release)
    assert version, "IMAGE_VERSION missing from os-release"
    assert int((rootfs / "usr/lib/clock-epoch").stat().st_mtime) == int(version[1])
    conf = (rootfs / "etc/systemd/timesyncd.conf.d/outpost.conf").read_text()
    assert re.search(r"(?m)^NTP=$", conf) and re.search(r"(?m)^FallbackNTP=$", conf)
    assert (
        rootfs / "etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service"
    ).exists() or (
        rootfs / "etc/systemd/system/multi-user.target.wants/systemd-timesyncd.service"
    ).exists()


# ----------------------------------------------------------- nothing secret
def test_nothing_per_device_or_secret_is_baked_in(rootfs: Path) -> None:
    assert (rootfs / "etc/machine-id").read_bytes() == b""
    assert not (rootfs / "var/lib/systemd/random-seed").exists()
    assert not (rootfs / "var/lib/dbus/machine-id").exists()
    assert not (rootfs / "etc/ssh").exists()
    assert not (rootfs / "var/lib/outpost").exists() or not any(
        (rootfs / "var/lib/outpost").iterdir()
    )
    shadow = {
        ln.split(":")[0]: ln.split(":")[1]
        for ln in (rootfs / "etc/shadow").read_text().splitlines()
    }
    usable = [user for user, pw in shadow.items() if not pw.startswith(("!", "*"))]
    assert usable == [], "accounts that can log in (empty or set password)"


# A PEM private key: the armour line followed by base64 (libraries that merely
# mention the armour in their parsers do not match).
PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}")


def test_private_key_pattern_finds_a_real_key() -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert PEM_PRIVATE_KEY.search(b"junk\n" + pem)
    assert not PEM_PRIVATE_KEY.search(b'_PEM = b"-----BEGIN OPENSSH PRIVATE KEY-----"\n')


def test_no_private_key_material_anywhere(rootfs: Path) -> None:
    marker = PEM_PRIVATE_KEY
    found = []
    for top in ("etc", "opt", "root", "usr/lib/outpost", "usr/libexec", "var", "srv", "home"):
        for path in (rootfs / top).rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 4 * 2**20:
                if marker.search(path.read_bytes()):
                    found.append(str(path.relative_to(rootfs)))
    assert found == []


def test_no_package_source_or_build_host_detail_in_etc(rootfs: Path) -> None:
    assert not (rootfs / "etc/apt/sources.list").exists()
    assert not list((rootfs / "etc/apt/sources.list.d").glob("*"))
    assert not (rootfs / "etc/resolv.conf").exists()
    assert (rootfs / "etc/hostname").read_text().strip() == "outpost"


# ------------------------------------------------------------------ firewall
def test_firewall_ruleset_parses(rootfs: Path) -> None:
    done = subprocess.run(
        ["nft", "-c", "-f", str(rootfs / "etc/nftables.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_firewall_admits_only_control_relay_stun_and_sends_nothing_new(rootfs: Path) -> None:
    text = (rootfs / "etc/nftables.conf").read_text()
    chains = dict(re.findall(r"chain (\w+) \{(.*?)\n    \}", text, re.S))
    assert set(chains) == {"input", "forward", "output"}
    for name in chains:
        assert re.search(r"policy drop;", chains[name]), f"{name} must default to drop"
    accepts = [ln.strip() for ln in chains["input"].splitlines() if ln.strip().endswith("accept")]
    assert accepts == [
        'iif "lo" accept',
        "ct state established,related accept",
        "tcp dport { 80, 443 } accept",
        "udp dport 3478 accept",
        "udp sport 67 udp dport 68 accept",
        "icmp type { echo-request, destination-unreachable, time-exceeded } accept",
    ]
    out = [ln.strip() for ln in chains["output"].splitlines() if ln.strip().endswith("accept")]
    # Nothing new leaves the box except the DHCP client's renewals.
    assert out == [
        'oif "lo" accept',
        "ct state established,related accept",
        "udp sport 68 udp dport 67 accept",
    ]


def test_usb_watcher_can_hear_udev_but_has_no_ip(rootfs: Path) -> None:
    """udev's netlink announcements reach the host's network namespace only: a PrivateNetwork
    watcher never hears a stick arrive (seen in the qemu boot test). IP stays impossible."""
    u = unit(rootfs, "outpost-usb-watch")
    assert u.get("PrivateNetwork") in (None, ["no"])
    assert u.get("IPAddressDeny") == ["any"]
    families = " ".join(u.get("RestrictAddressFamilies", []))
    assert "AF_NETLINK" in families and "AF_INET" not in families


def test_sd_driver_is_loaded_before_the_usb_watcher_starts(rootfs: Path) -> None:
    """DeviceAllow=block-sd is resolved at unit start: the sd driver must exist by then."""
    conf = rootfs / "usr/lib/modules-load.d/outpost-usb.conf"
    assert "sd_mod" in [line.strip() for line in conf.read_text().splitlines()]
    u = unit(rootfs, "outpost-usb-watch")
    assert "systemd-modules-load.service" in " ".join(u["After"])
    assert "block-sd rw" in u["DeviceAllow"]  # rw: console exports are written by the watcher
