"""Intake over a directory tree, the watcher's decisions and the mount options (no root needed)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_server.bundles import SignerKey, TrustStore
from outpost_server.bundles import format as fmt
from outpost_server.bundles import intake as intake_mod
from outpost_server.bundles.intake import intake
from outpost_server.bundles.media import MediaError, mount_options, mounted_readonly
from outpost_server.bundles.signing import build_signed, public_bytes
from outpost_server.bundles.trust import TRUST_STORE_PAYLOAD
from outpost_server.bundles.watcher import MediaInserted, UsbWatcher
from outpost_server.errors import InvalidInput

APP = "outpost-test"
NOW = 1_800_000_000
KEYS = {
    n: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"i" + n.encode()).digest())
    for n in "AB"
}
KID = {n: fmt.key_id_for(public_bytes(k)) for n, k in KEYS.items()}
KINDS = frozenset({"policy", "trust-store", "enrolment-keys"})


def trust(names: str = "A") -> TrustStore:
    return TrustStore(
        {KID[n]: SignerKey(KID[n], public_bytes(KEYS[n]), KINDS) for n in names},
        dict.fromkeys(KINDS, 1),
    )


def bundle(
    kind: str = "policy", seq: int = 1, signer: str = "A", payloads: dict[str, bytes] | None = None
) -> bytes:
    p = {"policy.hujson": b"{}"} if payloads is None else payloads
    return build_signed(fmt.manifest_for(kind, APP, seq, NOW, NOW + 60, p), p, KEYS[signer])


def test_good_bad_and_junk_files_are_sorted_into_accepted_rejected_and_ignored(
    tmp_path: Path,
) -> None:
    (tmp_path / "good.opb").write_bytes(bundle(seq=2))
    (tmp_path / "BAD.OPB").write_bytes(b"this is not a bundle at all")
    (tmp_path / "._good.opb").write_bytes(b"appledouble")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "System Volume Information").mkdir()
    (tmp_path / "link.opb").symlink_to(tmp_path / "good.opb")
    (tmp_path / "dirlink").symlink_to("/etc")
    os.mkfifo(tmp_path / "fifo.opb")
    report = intake(tmp_path, trust(), APP, NOW, {"policy": 1})
    assert [name for name, _ in report.accepted] == ["good.opb"]
    assert [(r.name, r.reason) for r in report.rejected] == [
        ("BAD.OPB", "bad-magic: not an Outpost bundle")
    ]
    assert {r.name: r.reason for r in report.ignored} == {
        "dirlink": "symlink (not followed)",
        "link.opb": "symlink (not followed)",
        "fifo.opb": "not a regular file",
    }


def test_nested_folders_are_scanned_to_the_depth_limit_only(tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "two.opb").write_bytes(bundle(seq=1))
    (tmp_path / "a" / "b" / "c" / "three.opb").write_bytes(bundle(seq=2))
    report = intake(tmp_path, trust(), APP, NOW, {})
    assert [name for name, _ in report.accepted] == ["a/b/two.opb"]


def test_duplicate_sequence_on_one_medium_is_accepted_once(tmp_path: Path) -> None:
    data = bundle(seq=5)
    (tmp_path / "one.opb").write_bytes(data)
    (tmp_path / "two.opb").write_bytes(data)
    report = intake(tmp_path, trust(), APP, NOW, {})
    assert [n for n, _ in report.accepted] == ["one.opb"]
    assert [r.reason for r in report.rejected] == [
        "replayed: sequence 5 for policy, already accepted 5"
    ]


def test_bundles_are_staged_in_sequence_order(tmp_path: Path) -> None:
    (tmp_path / "a.opb").write_bytes(bundle(seq=9))
    (tmp_path / "b.opb").write_bytes(bundle(seq=3))
    report = intake(tmp_path, trust(), APP, NOW, {})
    assert [vb.seq for _, vb in report.accepted] == [3, 9]


def test_rotation_on_the_same_medium_admits_bundles_signed_by_the_new_key(tmp_path: Path) -> None:
    new = trust("AB")
    (tmp_path / "z-rotate.opb").write_bytes(
        bundle("trust-store", 1, "A", {TRUST_STORE_PAYLOAD: new.dumps()})
    )
    (tmp_path / "a-policy.opb").write_bytes(bundle("policy", 1, "B"))
    report = intake(tmp_path, trust("A"), APP, NOW, {})
    assert [n for n, _ in report.accepted] == ["z-rotate.opb", "a-policy.opb"]
    assert report.staged_trust == new


def test_scan_stops_after_the_bundle_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_mod, "MAX_BUNDLES", 2)
    for i in range(4):
        (tmp_path / f"{i}.opb").write_bytes(bundle(seq=i + 1))
    report = intake(tmp_path, trust(), APP, NOW, {})
    assert len(report.accepted) == 2
    assert [r.reason for r in report.ignored] == ["more than 2 bundles on the medium"] * 2


def test_oversized_file_is_read_only_one_byte_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_mod, "MAX_BUNDLE_BYTES", 100)
    (tmp_path / "big.opb").write_bytes(b"\x00" * 5000)
    assert len(intake_mod.read_bounded(tmp_path / "big.opb")) == 101


def _udev(**extra: str) -> dict[str, str]:
    return {
        "SUBSYSTEM": "block",
        "DEVNAME": "/dev/sdb1",
        "ID_BUS": "usb",
        "ID_FS_TYPE": "vfat",
        "ID_FS_USAGE": "filesystem",
        "ID_FS_LABEL": "KEYS",
        "ID_SERIAL": "Stick_123",
        **extra,
    }


def test_watcher_hands_over_a_usb_filesystem_once_until_removed() -> None:
    seen: list[MediaInserted] = []
    w = UsbWatcher(seen.append)
    assert w.handle("add", _udev()) == MediaInserted("/dev/sdb1", "vfat", "KEYS", "Stick_123")
    assert w.handle("change", _udev()) is None
    w.handle("remove", _udev())
    w.handle("add", _udev())
    assert len(seen) == 2


@pytest.mark.parametrize(
    "props",
    [
        _udev(ID_BUS="ata"),
        _udev(ID_FS_TYPE="ntfs"),
        _udev(ID_FS_TYPE="crypto_LUKS", ID_FS_USAGE="crypto"),
        _udev(SUBSYSTEM="net"),
        {k: v for k, v in _udev().items() if k != "ID_FS_TYPE"},
    ],
    ids=["internal-disk", "ntfs", "luks", "not-block", "no-filesystem"],
)
def test_watcher_ignores_devices_that_are_not_acceptable_media(props: dict[str, str]) -> None:
    seen: list[MediaInserted] = []
    assert UsbWatcher(seen.append).handle("add", props) is None
    assert seen == []


def test_mount_options_are_read_only_nosuid_nodev_noexec_and_skip_ext4_journal_replay() -> None:
    assert mount_options("ext4") == "ro,nosuid,nodev,noexec,noatime,noload"
    assert mount_options("vfat") == "ro,nosuid,nodev,noexec,noatime,uid=0,gid=0,umask=077"
    with pytest.raises(InvalidInput, match="filesystem ntfs is not accepted"):
        mount_options("ntfs")


def test_mounted_readonly_always_unmounts_and_removes_its_mountpoint() -> None:
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> str:
        calls.append(list(argv))
        return "ext4\n" if argv[0] == "blkid" else ""

    with pytest.raises(RuntimeError), mounted_readonly("/dev/sdz1", run=run) as mp:
        assert mp.is_dir()
        raise RuntimeError("intake failed")
    assert [c[0] for c in calls] == ["blkid", "mount", "umount"]
    assert calls[1][:4] == ["mount", "-t", "ext4", "-o"]
    assert not mp.exists()


def test_busy_unmount_falls_back_to_lazy_unmount() -> None:
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> str:
        calls.append(list(argv))
        if argv == ["umount", argv[-1]] and len(argv) == 2:
            raise MediaError("umount failed: target is busy")
        return ""

    with mounted_readonly("/dev/sdz1", "vfat", run=run):
        pass
    assert calls[-1][:2] == ["umount", "-l"]
