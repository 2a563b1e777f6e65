"""The media desk's rules without a server: heartbeat, claiming, removal, limits, candidates."""

from __future__ import annotations

import json

import pytest
from tests.bundle_env import KID, trust_doc

from outpost_server.backup.format import format_public, key_id, new_recovery_key, recovery_key_file
from outpost_server.bundles.desk import (
    MAX_EXPORT_REQUESTS,
    MAX_KEY_CANDIDATE_BYTES,
    WATCHER_STALE_S,
    Device,
    ExportRequest,
    MediaDesk,
    parse_devices,
)
from outpost_server.errors import InvalidInput, NotFound


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def request(device: str = "/dev/sdb1") -> ExportRequest:
    return ExportRequest(0, "node-inventory", device, "inv.opb", b"x", "00", "", "app", "1 node", "console:a", 0.0)


def test_no_watcher_until_it_polls_and_again_after_it_goes_quiet() -> None:
    clock = Clock()
    desk = MediaDesk(clock)
    with pytest.raises(InvalidInput, match="no USB watcher is running"):
        desk.require_device("/dev/sdb1")
    desk.poll([Device("/dev/sdb1", "STICK")])
    assert desk.require_device("/dev/sdb1").label == "STICK"
    with pytest.raises(InvalidInput, match="no removable medium /dev/sdc1"):
        desk.require_device("/dev/sdc1")
    clock.t += WATCHER_STALE_S + 0.1
    assert not desk.watcher_running() and desk.devices() == []
    with pytest.raises(InvalidInput, match="no USB watcher"):
        desk.require_device("/dev/sdb1")


def test_a_request_is_claimed_once_and_fails_if_its_medium_goes() -> None:
    desk = MediaDesk(Clock())
    desk.poll([Device("/dev/sdb1"), Device("/dev/sdc1")])
    a, b = desk.queue(request("/dev/sdb1")), desk.queue(request("/dev/sdc1"))
    claimed = desk.poll([Device("/dev/sdb1")])  # sdc1 was pulled out
    assert [r.id for r in claimed] == [a.id] and desk.get(a.id).state == "writing"
    assert desk.get(b.id).state == "failed" and "removed before" in desk.get(b.id).message
    assert desk.poll([Device("/dev/sdb1")]) == []  # never handed out twice
    done = desk.finish(a.id, verified=True, path="/dev/sdb1:/inv.opb", message="")
    assert done.state == "verified"
    with pytest.raises(InvalidInput, match="not being written"):
        desk.finish(a.id, verified=False, path="", message="again")
    with pytest.raises(NotFound):
        desk.get(999)


def test_finished_requests_make_room_but_waiting_ones_are_never_dropped() -> None:
    desk = MediaDesk(Clock())
    desk.poll([Device("/dev/sdb1")])
    first = desk.queue(request())
    desk.poll([Device("/dev/sdb1")])
    desk.finish(first.id, verified=True, path="p", message="")
    for _ in range(MAX_EXPORT_REQUESTS - 1):
        desk.queue(request())
    desk.queue(request())  # the finished one makes room
    with pytest.raises(NotFound):
        desk.get(first.id)
    with pytest.raises(InvalidInput, match="already waiting"):
        desk.queue(request())


def test_candidates_show_fingerprints_or_why_not_and_leave_with_their_medium() -> None:
    desk = MediaDesk(Clock())
    desk.poll([Device("/dev/sdb1")])
    secret, public = new_recovery_key()
    offered = desk.offer("/dev/sdb1", "SIGN", [
        ("trust-store.json", json.dumps(trust_doc())),
        ("recovery.pub", format_public(public) + "\n"),
        ("secret.pub", recovery_key_file(secret)),
        ("two.pub", format_public(public) + "\n" + format_public(public)),
        ("big.pub", "x" * (MAX_KEY_CANDIDATE_BYTES + 1)),
        ("TRUST-STORE.JSON", "{ not json"),
    ])  # fmt: skip
    by = {c.file: c for c in offered}
    assert by["trust-store.json"].fingerprints == tuple(sorted(KID[n] for n in "ABC"))
    assert by["recovery.pub"].fingerprints == (key_id(public),) and not by["recovery.pub"].problem
    assert "SECRET" in by["secret.pub"].problem
    assert "found 2" in by["two.pub"].problem
    assert "larger than" in by["big.pub"].problem
    assert "not a valid trust store" in by["TRUST-STORE.JSON"].problem
    assert desk.poll([]) == [] and desk.candidates() == []  # the stick came out


def test_device_reports_are_bounded_and_typed() -> None:
    assert parse_devices([{"device": "/dev/sdb1", "size": 5}])[0].size == 5
    for bad in ("x", [{"device": 3}], [{"device": "/dev/sdb1", "size": -1}], [{"device": "d"}] * 17):
        with pytest.raises(InvalidInput):
            parse_devices(bad)
