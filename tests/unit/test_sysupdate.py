"""Installing an update into the inactive slot: digests, order, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from outpost_appliance import slots, sysupdate
from outpost_appliance.sysupdate import UpdateError
from outpost_server.errors import InvalidInput


def make_update(medium: Path, version: int = 200, **corrupt: bytes) -> sysupdate.SystemUpdate:
    contents = {"root": b"R" * 5000, "kernel": b"K" * 300, "initrd": b"I" * 700}
    names = {"root": "root.erofs", "kernel": "vmlinuz", "initrd": "initrd.img"}
    files = {}
    for role, data in contents.items():
        (medium / names[role]).write_bytes(corrupt.get(role, data))
        files[role] = {
            "name": names[role],
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    doc = {"format": sysupdate.UPDATE_FORMAT, "version": version, "files": files}
    return sysupdate.parse_update(json.dumps(doc).encode())


@pytest.fixture
def device(tmp_path: Path) -> tuple[Path, Path, Path]:
    medium, esp, disk = tmp_path / "medium", tmp_path / "esp", tmp_path / "dev"
    for d in (medium, esp / "loader" / "entries", disk):
        d.mkdir(parents=True)
    (esp / "loader" / "entries" / "outpost-100-a.conf").write_text(slots.entry_text("a", 100))
    (esp / "loader" / "entries" / "outpost-50-b.conf").write_text(slots.entry_text("b", 50))
    for p in (slots.ROOT_A, slots.ROOT_B):
        (disk / p.label).write_bytes(b"\0" * 8192)
    return medium, esp, disk


def test_update_lands_in_the_inactive_slot_and_boots_with_a_counter(
    device: tuple[Path, Path, Path],
) -> None:
    medium, esp, disk = device
    update = make_update(medium)
    plan = sysupdate.install(update, medium, esp, "a", lambda p: disk / p.label)
    assert plan.target_slot == "b"
    assert (disk / "root-b").read_bytes()[:5000] == b"R" * 5000
    assert (disk / "root-a").read_bytes() == b"\0" * 8192, "the running slot is never written"
    assert (esp / "outpost/b/vmlinuz").read_bytes() == b"K" * 300
    assert (esp / "outpost/b/initrd.img").read_bytes() == b"I" * 700
    entries = sorted(p.name for p in (esp / "loader/entries").iterdir())
    assert entries == ["outpost-100-a.conf", "outpost-200-b+3.conf"]
    assert "outpost.slot=b" in (esp / "loader/entries/outpost-200-b+3.conf").read_text()


@pytest.mark.parametrize("role", ["root", "kernel", "initrd"])
def test_a_file_that_does_not_match_its_signed_digest_activates_nothing(
    device: tuple[Path, Path, Path], role: str
) -> None:
    medium, esp, disk = device
    size = {"root": 5000, "kernel": 300, "initrd": 700}[role]
    update = make_update(medium, **{role: b"X" * size})
    with pytest.raises(UpdateError, match="does not match its signed sha256"):
        sysupdate.check_medium(update, medium)  # the CLI's first step: refused, nothing written
    assert sorted(p.name for p in (esp / "loader/entries").iterdir()) == [
        "outpost-100-a.conf",
        "outpost-50-b.conf",
    ]
    assert (disk / "root-b").read_bytes() == b"\0" * 8192
    # install() itself checks again while writing (the medium could change in between)
    with pytest.raises(UpdateError, match="does not match its signed sha256"):
        sysupdate.install(update, medium, esp, "a", lambda p: disk / p.label)
    # the running slot's entry stays; slot b lost its old entry before its partition
    # was touched, so nothing points at a half-written slot
    entries = sorted(p.name for p in (esp / "loader/entries").iterdir())
    assert entries == ["outpost-100-a.conf"]
    assert (disk / "root-a").read_bytes() == b"\0" * 8192


def test_a_truncated_file_is_refused(device: tuple[Path, Path, Path]) -> None:
    medium, esp, disk = device
    update = make_update(medium, root=b"R" * 10)
    with pytest.raises(UpdateError, match="ended"):
        sysupdate.install(update, medium, esp, "a", lambda p: disk / p.label)


def test_an_older_update_is_refused(device: tuple[Path, Path, Path]) -> None:
    medium, esp, disk = device
    with pytest.raises(InvalidInput, match="not newer"):
        sysupdate.install(
            make_update(medium, version=90), medium, esp, "a", lambda p: disk / p.label
        )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"not json", "not JSON"),
        (b"{}", "exactly format"),
        (b'{"format": "x", "version": 1, "files": {}}', "unknown update format"),
        (
            json.dumps({"format": sysupdate.UPDATE_FORMAT, "version": True, "files": {}}).encode(),
            "version",
        ),
        (
            json.dumps(
                {"format": sysupdate.UPDATE_FORMAT, "version": 5, "files": {"root": {}}}
            ).encode(),
            "files must name",
        ),
        (
            json.dumps(
                {
                    "format": sysupdate.UPDATE_FORMAT,
                    "version": 5,
                    "files": {
                        r: {"name": "../x", "size": 1, "sha256": "0" * 64}
                        for r in sysupdate.FILE_ROLES
                    },
                }
            ).encode(),
            "name must match",
        ),
        (
            json.dumps(
                {
                    "format": sysupdate.UPDATE_FORMAT,
                    "version": 5,
                    "files": {
                        r: {"name": "x", "size": 2**40, "sha256": "0" * 64}
                        for r in sysupdate.FILE_ROLES
                    },
                }
            ).encode(),
            "size must be",
        ),
        (b"{" + b" " * 5000 + b"}", "limit"),
    ],
)
def test_bad_update_documents_get_a_clear_error(doc: bytes, message: str) -> None:
    with pytest.raises(UpdateError, match=message):
        sysupdate.parse_update(doc)


def test_check_medium_names_the_missing_or_wrong_file(device: tuple[Path, Path, Path]) -> None:
    medium, _, _ = device
    update = make_update(medium)
    sysupdate.check_medium(update, medium)  # all present and intact
    (medium / "initrd.img").write_bytes(b"I" * 701)
    with pytest.raises(UpdateError, match=r"initrd.img: 701 bytes, the signed update says 700"):
        sysupdate.check_medium(update, medium)
    (medium / "vmlinuz").unlink()
    with pytest.raises(UpdateError, match=r"/vmlinuz: missing \(the update's kernel file\)"):
        sysupdate.check_medium(update, medium)
    (medium / "vmlinuz").symlink_to(medium / "root.erofs")
    with pytest.raises(UpdateError, match=r"vmlinuz: cannot be read"):
        sysupdate.check_medium(update, medium)
