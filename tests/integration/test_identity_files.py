"""The appliance's identity files (audit key, appliance id) after a power cut.

Earlier versions wrote them without fsync: a power cut seconds after the first
start (the qemu update test powers the guest off right after it is ready) left
an empty audit key, and the server refused to start on every boot after.
Now they are written durably; a torn one is replaced while nothing used it
(the audit log is empty), and otherwise refused with a message naming it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost_server.errors import OutpostError

from .conftest import start_server


async def _first_start(data: Path) -> tuple[bytes, str]:
    running = await start_server(data)
    await running.server.stop()
    return (data / "audit/audit-key.ed25519").read_bytes(), (data / "appliance-id").read_text()


async def test_first_start_writes_the_identity_files_whole(tmp_path: Path) -> None:
    key, appliance = await _first_start(tmp_path / "data")
    assert len(key) == 32
    assert len(appliance.strip()) == 16
    assert not [p.name for p in (tmp_path / "data/audit").iterdir() if p.name.startswith(".")]


async def test_a_torn_key_with_an_empty_log_is_replaced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "audit").mkdir(parents=True)
    (data / "audit/audit-key.ed25519").write_bytes(b"")  # what the power cut left
    (data / "appliance-id").write_text("")
    running = await start_server(data)
    try:
        assert len((data / "audit/audit-key.ed25519").read_bytes()) == 32
        assert len(running.server.appliance_id) == 16
        assert running.server.audit_log.verify().entries > 0  # raises if the chain is bad
    finally:
        await running.server.stop()


async def test_a_torn_key_whose_log_has_entries_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _first_start(data)
    key_path = data / "audit/audit-key.ed25519"
    key_path.write_bytes(b"\0" * 7)
    log_before = (data / "audit/audit.log").read_bytes()
    with pytest.raises(OutpostError, match=r"audit-key\.ed25519: holds 7 bytes, not an Ed25519"):
        await start_server(data)
    assert key_path.read_bytes() == b"\0" * 7
    assert (data / "audit/audit.log").read_bytes() == log_before
