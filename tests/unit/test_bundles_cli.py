"""The watcher's per-medium handler: a medium that cannot be read is reported, never fatal."""

from __future__ import annotations

from pathlib import Path

from outpost_appliance.apiclient import AdminClient
from outpost_appliance.cli_bundles import intake_handler, report_text
from outpost_server.bundles.watcher import MediaInserted, UsbWatcher


def test_an_unreadable_medium_is_reported_and_the_watcher_keeps_going(tmp_path: Path) -> None:
    said: list[str] = []
    client = AdminClient(tmp_path / "no.sock")  # never reached: the medium fails first
    watcher = UsbWatcher(intake_handler(client, said.append))
    props = {
        "SUBSYSTEM": "block",
        "DEVNAME": str(tmp_path / "gone"),
        "ID_BUS": "usb",
        "ID_FS_TYPE": "ext4",
        "ID_FS_LABEL": "DEAD",
    }
    assert watcher.handle("add", props) == MediaInserted(str(tmp_path / "gone"), "ext4", "DEAD", "")
    assert said[0].endswith("(ext4, label DEAD) inserted")
    assert said[1].startswith(f"medium {tmp_path / 'gone'}: not read")
    assert len(said) == 2


def test_the_intake_report_says_nothing_is_applied_until_approved() -> None:
    staged = {"id": 3, "file": "p.opb", "kind": "policy", "seq": 9}
    text = report_text({"staged": [staged], "rejected": [], "ignored": []})
    assert "staged    #3 p.opb (policy seq 9)" in text
    assert text.endswith("nothing is applied until approved (outpost bundles approve ID)")
    empty = report_text({"staged": [], "rejected": [], "ignored": []})
    assert empty == "0 staged, 0 rejected, 0 ignored"
