"""The admin API over its unix socket, as the CLI uses it."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from outpost_appliance.apiclient import AdminClient, ApiError

from .conftest import Running


async def call(client: AdminClient, method: str, path: str, body: object = None) -> object:
    fn = getattr(client, method)
    return await asyncio.to_thread(fn, path, *(() if body is None and method != "post" else (body or {},)))


async def test_socket_is_owner_only(outpost: Running) -> None:
    mode = os.stat(outpost.server.config.admin_socket).st_mode
    assert stat.S_IMODE(mode) == 0o600


async def test_admin_actions_are_recorded_in_a_verifiable_chain(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    await call(client, "post", "/v1/users", {"name": "erin"})
    with pytest.raises(ApiError, match="already exists"):
        await call(client, "post", "/v1/users", {"name": "erin"})
    data = await call(client, "get", "/v1/audit?limit=10")
    actions = [(e["action"], e["actor"]) for e in data["entries"]]  # type: ignore[index]
    assert actions[0] == ("server.start", "server")
    assert any(a.startswith("ca.") for a, _ in actions)  # first start created the CA
    creates = [actor for a, actor in actions if a == "user.create"]
    assert len(creates) == 1 and creates[0].startswith("cli:")  # the refused one left no entry
    verdict = await call(client, "post", "/v1/audit/verify")
    assert verdict["ok"] is True and verdict["entries"] == len(actions)  # type: ignore[index]


async def test_refused_requests_say_why(outpost: Running) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    with pytest.raises(ApiError, match="invalid duration"):
        await call(client, "post", "/v1/enrolment-keys", {"user": 1, "expires_in": "forever"})
    with pytest.raises(ApiError, match="no node with id 99"):
        await call(client, "delete", "/v1/nodes/99")
    with pytest.raises(ApiError, match="line 1"):
        await call(client, "post", "/v1/policy", {"text": "{ nope"})


async def test_node_tags_are_set_checked_and_audited(outpost: Running) -> None:
    from outpost_server.sim.client import SimNode

    client = AdminClient(outpost.server.config.admin_socket)
    tagged = SimNode("tagged-box")
    await tagged.connect("127.0.0.1", outpost.port, outpost.server_key)
    assert not (await tagged.register(outpost.new_key(tags=("tag:server",), user_id=None))).get("Error")
    try:
        nid = next(iter(outpost.store.nodes()))
        with pytest.raises(ApiError, match="invalid tag 'server'"):
            await call(client, "post", f"/v1/nodes/{nid}/tags", {"tags": ["server"]})
        with pytest.raises(ApiError, match="must keep at least one tag"):
            await call(client, "post", f"/v1/nodes/{nid}/tags", {"tags": []})
        n = await call(client, "post", f"/v1/nodes/{nid}/tags", {"tags": ["tag:prod", "tag:server"]})
        assert n["tags"] == ["tag:prod", "tag:server"]  # type: ignore[index]
        audit = await call(client, "get", "/v1/audit?limit=5")
        e = [x for x in audit["entries"] if x["action"] == "node.tags"][-1]  # type: ignore[index]
        assert e["details"]["before"] == ["tag:server"] and e["details"]["after"] == ["tag:prod", "tag:server"]
    finally:
        await tagged.close()
