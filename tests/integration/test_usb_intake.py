"""Real loop-backed FAT and ext4 media carrying good, bad, junk and symlinked files.

Needs root, losetup, mount and mkfs.vfat/mkfs.ext4; skips with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_server.bundles import SignerKey, TrustStore
from outpost_server.bundles import format as fmt
from outpost_server.bundles.intake import intake, verify_loaded
from outpost_server.bundles.media import mounted_readonly, probe_fstype
from outpost_server.bundles.removable import kernel_has, read_medium
from outpost_server.bundles.signing import build_signed, public_bytes

APP = "outpost-usb"
NOW = 1_800_000_000
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"usb").digest())
KID = fmt.key_id_for(public_bytes(KEY))
TRUST = TrustStore({KID: SignerKey(KID, public_bytes(KEY), frozenset({"policy"}))}, {"policy": 1})
MKFS = {"vfat": ["mkfs.vfat", "-n", "OUTPOST"], "ext4": ["mkfs.ext4", "-q", "-F", "-L", "OUTPOST"]}


def _missing(fstype: str) -> str | None:
    if os.geteuid() != 0:
        return "needs root for losetup/mount"
    for tool in ("losetup", "mount", "umount", "blkid", MKFS[fstype][0]):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", fstype], capture_output=True, check=False)
    kernel = Path("/proc/filesystems").read_text().split()
    if fstype not in kernel and (fstype != "vfat" or shutil.which("mcopy") is None):
        return f"the running kernel has no {fstype} driver and mtools is not installed"
    return None


def _populate_fat_in_user_space(dev: str) -> None:
    """No vfat driver in this kernel: write the stick with mtools, as a PC would have."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def put(name: str, data: bytes) -> None:
        subprocess.run(
            ["mcopy", "-o", "-i", dev, "-", f"::/{name}"], input=data, env=env, check=True
        )

    subprocess.run(["mmd", "-i", dev, "::/outpost"], env=env, check=True)
    put("good.opb", _bundle(2))
    put("outpost/newer.opb", _bundle(3))
    put("corrupt.opb", _bundle(4)[:-5])
    put("replay.opb", _bundle(1))
    put("._good.opb", b"\x00\x05\x16\x07 AppleDouble")
    put("README.txt", b"junk")
    for i in range(50):
        put(f"junk{i}.bin", os.urandom(64))


def _bundle(seq: int) -> bytes:
    p = {"policy.hujson": b'{"acls": []}'}
    return build_signed(fmt.manifest_for("policy", APP, seq, NOW, NOW + 60, p), p, KEY)


@pytest.fixture(params=["vfat", "ext4"])
def medium(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    fstype: str = request.param
    reason = _missing(fstype)
    if reason:
        pytest.skip(f"USB intake integration test skipped: {reason}")
    image = tmp_path / f"{fstype}.img"
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run([*MKFS[fstype], str(image)], check=True, capture_output=True)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not kernel_has(fstype):
        try:
            _populate_fat_in_user_space(dev)
            yield fstype, dev
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)
        return
    try:
        populate = tmp_path / "rw"
        populate.mkdir()
        subprocess.run(["mount", dev, str(populate)], check=True, capture_output=True)
        try:
            (populate / "good.opb").write_bytes(_bundle(2))
            (populate / "outpost").mkdir()
            (populate / "outpost" / "newer.opb").write_bytes(_bundle(3))
            (populate / "corrupt.opb").write_bytes(_bundle(4)[:-5])
            (populate / "replay.opb").write_bytes(_bundle(1))
            (populate / "._good.opb").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
            (populate / "README.txt").write_text("junk")
            for i in range(50):
                (populate / f"junk{i}.bin").write_bytes(os.urandom(64))
            if fstype == "ext4":
                (populate / "link.opb").symlink_to("/etc/shadow")
                (populate / "loop").symlink_to(".")
        finally:
            subprocess.run(["umount", str(populate)], check=True)
        yield fstype, dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_fat_without_a_kernel_driver_is_read_in_user_space_with_the_same_rules(
    medium: tuple[str, str],
) -> None:
    fstype, dev = medium
    if kernel_has(fstype):
        pytest.skip("the kernel reads this filesystem; the mounted path is tested below")
    files = read_medium(dev, fstype)
    assert files.how == "mtools"
    report = verify_loaded(files.files, TRUST, APP, NOW, {"policy": 1})
    assert [n for n, _ in report.accepted] == ["good.opb", "outpost/newer.opb"]
    assert {r.name: r.reason for r in report.rejected} == {
        "corrupt.opb": "truncated: payloads declare 12 bytes, file has 7",
        "replay.opb": "replayed: sequence 1 for policy, already accepted 1",
    }


def test_real_medium_is_mounted_read_only_and_its_bundles_sorted(medium: tuple[str, str]) -> None:
    fstype, dev = medium
    if not kernel_has(fstype):
        pytest.skip(f"the running kernel has no {fstype} driver; read in user space above")
    assert probe_fstype(dev) == fstype
    with mounted_readonly(dev) as root:
        opts = next(
            line.split()[3]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(root)
        )
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts.split(","))
        with pytest.raises(OSError):
            (root / "written.txt").write_text("must fail")
        report = intake(root, TRUST, APP, NOW, {"policy": 1})
    assert not root.exists()
    assert [n for n, _ in report.accepted] == ["good.opb", "outpost/newer.opb"]
    reasons = {r.name: r.reason for r in report.rejected}
    assert reasons == {
        "corrupt.opb": "truncated: payloads declare 12 bytes, file has 7",
        "replay.opb": "replayed: sequence 1 for policy, already accepted 1",
    }
    if fstype == "ext4":
        assert {r.name: r.reason for r in report.ignored} == {
            "link.opb": "symlink (not followed)",
            "loop": "symlink (not followed)",
        }


def test_the_watcher_reads_media_in_user_space_with_the_same_rules(medium: tuple[str, str]) -> None:
    """What the appliance's USB watcher does: no mount at all (mtools for FAT, debugfs for ext4)."""
    fstype, dev = medium
    if shutil.which("debugfs") is None:
        pytest.skip("debugfs (e2fsprogs) not installed")
    mounts_before = Path("/proc/mounts").read_text()
    files = read_medium(dev, fstype, userspace=True)
    assert Path("/proc/mounts").read_text() == mounts_before
    assert files.how == {"vfat": "mtools", "ext4": "debugfs"}[fstype]
    report = verify_loaded(files.files, TRUST, APP, NOW, {"policy": 1})
    assert [n for n, _ in report.accepted] == ["good.opb", "outpost/newer.opb"]
    assert {r.name: r.reason for r in report.rejected} == {
        "corrupt.opb": "truncated: payloads declare 12 bytes, file has 7",
        "replay.opb": "replayed: sequence 1 for policy, already accepted 1",
    }
    if fstype == "ext4":
        assert {r.name: r.reason for r in files.ignored} == {
            "link.opb": "symlink (not followed)",
            "loop": "symlink (not followed)",
        }


def test_user_space_ext_reader_says_why_it_cannot_read(tmp_path: Path) -> None:
    from outpost_server.bundles.media import MediaError
    from outpost_server.bundles.removable import read_ext

    if shutil.which("debugfs") is None:
        pytest.skip("debugfs (e2fsprogs) not installed")
    junk = tmp_path / "not-a-filesystem.img"
    junk.write_bytes(os.urandom(1 << 20))
    with pytest.raises(MediaError, match="debugfs cannot read /: .*"):
        read_ext(str(junk))
