"""/v1/site against a real server: saved settings, the certificate's names, setup state, audit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from outpost_appliance.apiclient import AdminClient, ApiError

from .conftest import Running, start_server


async def call(client: AdminClient, method: str, path: str, body: object = None) -> Any:
    fn = getattr(client, method)
    args = () if method == "get" else (body or {},)
    return await asyncio.to_thread(fn, path, *args)


async def actions(client: AdminClient) -> list[tuple[str, dict[str, Any]]]:
    data = await call(client, "get", "/v1/audit?limit=50")
    return [(e["action"], e["details"]) for e in data["entries"]]


async def test_a_fresh_server_is_not_set_up_and_shows_what_it_runs_with(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    site = await call(client, "get", "/v1/site")
    assert site["setup_complete"] is False and site["saved"] is None
    assert site["server_url"] == outpost.server.config.effective_server_url
    assert site["restart_required"] == [] and site["certificate"]["covers"] is True
    assert (await call(client, "get", "/v1/status"))["setup_complete"] is False


async def test_saving_new_addresses_reissues_the_leaf_for_them_on_renew(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    site = await call(client, "put", "/v1/site", {"addresses": ["outpost.lan", "192.168.7.1"]})
    assert site["certificate"]["covers"] is False
    assert {"outpost.lan", "192.168.7.1"} <= set(site["certificate"]["wanted"])
    assert site["restart_required"] == []  # addresses need no restart
    await call(client, "post", "/v1/certs/renew")
    leaf = (await call(client, "get", "/v1/certs"))["leaf"]
    assert {"outpost.lan", "192.168.7.1", "127.0.0.1"} <= set(leaf["names"])
    assert (await call(client, "get", "/v1/site"))["certificate"]["covers"] is True
    audited = [d for a, d in await actions(client) if a == "site.update"]
    assert audited and audited[0]["changes"]["addresses"]["to"] == ["outpost.lan", "192.168.7.1"]


async def test_a_new_login_url_is_saved_and_reported_as_needing_a_restart(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    site = await call(
        client, "put", "/v1/site", {"server_url": "http://10.20.30.40", "site_name": "plant7"}
    )
    assert {r["field"] for r in site["restart_required"]} == {"server_url", "site_name"}
    assert site["server_url"] == "http://10.20.30.40"
    assert "10.20.30.40" in site["certificate"]["wanted"]
    data_dir = outpost.server.config.data_dir
    assert '"server_url": "http://10.20.30.40"' in (data_dir / "site.json").read_text()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"server_url": "ftp://10.0.0.1"}, "must start with http:// or https://"),
        ({"addresses": ["8.8.8.8"]}, "outside the CA's name constraints"),
        ({"addresses": ["not a name"]}, "address #1"),
        ({"site_name": "two words"}, "site name"),
        ({"colour": "red"}, "unknown field"),
    ],
)
async def test_bad_settings_are_refused_and_nothing_is_saved(
    outpost: Running, body: dict[str, Any], message: str
) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    with pytest.raises(ApiError, match=message):
        await call(client, "put", "/v1/site", body)
    assert not (outpost.server.config.data_dir / "site.json").exists()
    assert (await call(client, "get", "/v1/site"))["certificate"]["covers"] is True


async def test_completing_setup_is_saved_audited_and_survives_a_restart(tmp_path: Path) -> None:
    running = await start_server(tmp_path / "data")
    try:
        client = AdminClient(running.server.config.admin_socket)
        done = await call(client, "post", "/v1/site/complete")
        assert done["setup_complete"] is True and done["setup_completed_at"].endswith("Z")
        assert "site.setup.complete" in [a for a, _ in await actions(client)]
    finally:
        await running.server.stop()
    again = await start_server(tmp_path / "data")
    try:
        client = AdminClient(again.server.config.admin_socket)
        assert (await call(client, "get", "/v1/site"))["setup_complete"] is True
    finally:
        await again.server.stop()


async def test_a_data_dir_with_users_but_no_site_file_counts_as_set_up(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    await call(client, "post", "/v1/users", {"name": "alice"})
    assert (await call(client, "get", "/v1/site"))["setup_complete"] is True
