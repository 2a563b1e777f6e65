"""The server's certificate service: generations only move forward, the brief is cached."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from outpost_server.ca.local import ensure_tls_events
from outpost_server.ca.service import ServerCertificates

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def service(tmp_path: Path) -> ServerCertificates:
    tls = tmp_path / "tls"
    files, _ = ensure_tls_events(tls, "site", ["127.0.0.1"], NOW)
    return ServerCertificates(tls, "site", ["127.0.0.1"], files, None, clock=lambda: NOW)


async def test_renew_moves_to_a_new_generation_and_an_older_one_is_never_taken_back(
    tmp_path: Path,
) -> None:
    certs = service(tmp_path)
    before = certs.files
    events, taken = await certs.renew("test")
    assert taken and certs.files.generation == before.generation + 1
    assert [e.action for e in events] == ["ca.leaf.renew"]
    # an hourly check that read the files before the renewal reports late
    assert certs._adopt(before) is False
    assert certs.files.generation == before.generation + 1


async def test_maintain_is_quiet_when_nothing_is_due(tmp_path: Path) -> None:
    certs = service(tmp_path)
    gen = certs.files.generation
    assert await certs.maintain() == []
    assert certs.files.generation == gen


def test_brief_is_cached_until_the_ca_changes(tmp_path: Path) -> None:
    certs = service(tmp_path)
    first = certs.brief()
    assert first["leaf_days_left"] == 397 and first["root_days_left"] == 7305  # frozen clock
    assert certs.brief() is first  # same state file, same minute: no re-reading
    (certs.ca_dir / "state.json").touch()
    assert certs.brief() is not first
