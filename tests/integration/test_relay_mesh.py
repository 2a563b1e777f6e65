"""Two Outpost servers meshing their DERP relays over TLS, as a two-appliance site would.

Each server dials the other's HTTPS port with the shared mesh key, verifies its
certificate against the other's Outpost root, and watches its clients; a
client on one server then reaches a client on the other through the mesh.
DERP clients here are the independent test double (tests/derp_client_double.py);
admission is opened for them, since node registration is not what is tested.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from outpost_server.app import OutpostServer
from outpost_server.config import ServerConfig, read_mesh_key
from outpost_server.errors import InvalidInput

from ..derp_client_double import AsyncDerpClient, Other, PeerGone, Received, disco_payload
from .conftest import free_port

T_HEALTH, T_RESTARTING = 0x14, 0x15


class Site:
    def __init__(self, tmp: Path, name: str) -> None:
        self.data = tmp / name
        self.port = free_port()
        self.tls_port = free_port()
        self.url = f"https://127.0.0.1:{self.tls_port}"
        self.server: OutpostServer | None = None

    @property
    def root(self) -> Path:
        return self.data / "tls" / "root.pem"

    async def start(self, mesh_key: bytes | None, mesh_with: tuple[str, ...], ca: tuple[Path, ...]) -> OutpostServer:
        cfg = ServerConfig(
            data_dir=self.data,
            listen=("127.0.0.1", self.port),
            tls_listen=("127.0.0.1", self.tls_port),
            stun_listen=None,
            mesh_key=mesh_key,
            mesh_with=mesh_with,
            mesh_ca_files=ca,
        )
        self.server = OutpostServer(cfg)
        await self.server.start()
        self.server.relay.set_admission(lambda _key: True)
        return self.server


async def eventually(pred: Callable[[], bool], seconds: float = 20.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Site, Site]]:
    key = os.urandom(32)
    a, b = Site(tmp_path, "a"), Site(tmp_path, "b")
    await a.start(key, (b.url,), (b.root,))  # b's root appears when b starts; a's link retries
    await b.start(key, (a.url, b.url), (a.root,))  # b lists itself too, as a site config may
    yield a, b
    for s in (a, b):
        if s.server is not None:
            await s.server.stop()


async def test_packets_cross_the_mesh_both_ways(pair: tuple[Site, Site]) -> None:
    a, b = pair
    assert a.server and b.server
    await eventually(lambda: a.server.relay.stats().watchers == 1 and b.server.relay.stats().watchers == 1,
                     what="each relay watching the other")  # fmt: skip
    self_link = [link for link in b.server.mesh_links if link.name == b.url][0]
    await eventually(lambda: self_link.stopped, what="b's link to itself to stop")
    c1 = await AsyncDerpClient.open(a.port)
    c2 = await AsyncDerpClient.open(b.port)
    try:
        await c1.login()
        await c2.login()
        await eventually(lambda: a.server.relay.mesh_keys() == 1 and b.server.relay.mesh_keys() == 1,
                         what="each relay learning the other's client")  # fmt: skip
        c1.send_packet(c2.public, b"over the mesh")
        got = await c2.recv_kind(Received)
        assert (got.src, got.payload) == (c1.public, b"over the mesh")
        c2.send_packet(c1.public, b"and back")
        got = await c1.recv_kind(Received)
        assert (got.src, got.payload) == (c2.public, b"and back")
        assert a.server.relay.stats().packets_forwarded_out == 1
        assert b.server.relay.stats().packets_forwarded_in == 1

        await c2.close()  # c2 leaves b: a forgets the route, and tells c1 it is gone
        await eventually(lambda: a.server.relay.mesh_keys() == 0, what="a forgetting c2")
        gone = await c1.recv_kind(PeerGone)
        assert gone.peer == c2.public
        c1.send_packet(c2.public, disco_payload())
        not_here = await c1.recv_kind(PeerGone)
        assert not_here.peer == c2.public and not_here.reason == 0x01  # NotHere
    finally:
        await c1.close()


async def test_relay_restart_relearns_the_other_side(pair: tuple[Site, Site]) -> None:
    a, b = pair
    assert a.server and b.server
    c2 = await AsyncDerpClient.open(b.port)
    try:
        await c2.login()
        await eventually(lambda: a.server.relay.mesh_keys() == 1, what="a learning c2")
        await b.server.stop()
        await eventually(lambda: a.server.relay.mesh_keys() == 0, what="a forgetting b's clients")
    finally:
        await c2.close()
    await b.start(b.server.config.mesh_key, (a.url,), (a.root,))
    c2 = await AsyncDerpClient.open(b.port)
    try:
        await c2.login()
        await eventually(lambda: a.server.relay.mesh_keys() == 1, seconds=40, what="a relearning after b restarted")
    finally:
        await c2.close()


async def test_wrong_mesh_key_does_not_mesh(tmp_path: Path) -> None:
    a, b = Site(tmp_path, "a"), Site(tmp_path, "b")
    await a.start(os.urandom(32), (b.url,), (b.root,))
    await b.start(os.urandom(32), (a.url,), (a.root,))
    assert a.server and b.server
    try:
        c2 = await AsyncDerpClient.open(b.port)
        await c2.login()
        await asyncio.sleep(3)
        assert a.server.relay.mesh_keys() == 0 and b.server.relay.stats().watchers == 0
        assert a.server.relay.stats().watchers == 0
        await c2.close()
    finally:
        await a.server.stop()
        await b.server.stop()


async def test_graceful_stop_sends_health_and_restarting(tmp_path: Path) -> None:
    a = Site(tmp_path, "a")
    await a.start(None, (), ())
    assert a.server
    c = await AsyncDerpClient.open(a.port)
    await c.login()
    await eventually(lambda: a.server.relay.stats().connections_current == 1, what="client registered")
    stop = asyncio.create_task(a.server.stop())
    frames = []
    try:
        while True:
            msg = await c.recv(5)
            if isinstance(msg, Other):
                frames.append(msg)
    except (EOFError, ConnectionError, TimeoutError):
        pass
    await stop
    kinds = [f.frame_type for f in frames]
    assert kinds[:2] == [T_HEALTH, T_RESTARTING], frames
    assert frames[0].payload == b"server restarting"
    assert int.from_bytes(frames[1].payload[:4], "big") == 2000


def test_mesh_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="needs --mesh-key-file"):
        ServerConfig(data_dir=tmp_path, mesh_with=("https://10.0.0.2:443",)).validate()
    with pytest.raises(InvalidInput, match="https://HOST"):
        ServerConfig(data_dir=tmp_path, mesh_key=bytes(32), mesh_with=("http://10.0.0.2",)).validate()
    f = tmp_path / "mesh.key"
    f.write_text("ab" * 31 + "\n")
    with pytest.raises(InvalidInput, match="31 bytes, need 32"):
        read_mesh_key(f)
    f.write_text("zz" * 32)
    with pytest.raises(InvalidInput, match="not hexadecimal"):
        read_mesh_key(f)
    f.write_text(" " + "ab" * 32 + "\n")
    assert read_mesh_key(f) == bytes([0xAB]) * 32


async def test_relay_only_appliance_admits_what_the_control_appliance_registered(tmp_path: Path) -> None:
    from nacl.public import PrivateKey as NaclPrivateKey

    from outpost_server.net import meshadmission
    from outpost_server.sim.client import SimNode, fetch_server_key

    key = os.urandom(32)
    a, b = Site(tmp_path, "a"), Site(tmp_path, "b")
    await a.start(key, (b.url,), (b.root,))
    cfg_b = ServerConfig(
        data_dir=b.data, listen=("127.0.0.1", b.port), tls_listen=("127.0.0.1", b.tls_port), stun_listen=None,
        mesh_key=key, mesh_with=(a.url,), mesh_ca_files=(a.root,), admission_from=a.url,
    )  # fmt: skip
    b.server = OutpostServer(cfg_b)
    await b.server.start()
    assert a.server and b.server
    a.server.relay.set_admission(a.server._admit)  # the real hook (Site.start opened it)
    feed = b.server.admission_feed
    assert feed is not None
    feed._poll_s = 0.2
    node = SimNode("laptop")
    try:
        owner = a.server.store.create_user("alice")
        _, secret = a.server.store.create_enrolment_key(user_id=owner.id)
        await node.connect("127.0.0.1", a.port, await fetch_server_key("127.0.0.1", a.port))
        assert not (await node.register(secret)).get("Error")
        await eventually(lambda: NodePublic_of(node) in feed.keys, what="B learning the registered key")

        registered = await AsyncDerpClient.open(b.port, NaclPrivateKey(node.node.secret_bytes()))
        await registered.login()  # admitted by B although B's own database is empty
        assert b.server.relay.is_connected(NodePublic_of(node))
        stranger = await AsyncDerpClient.open(b.port)
        with pytest.raises((EOFError, ConnectionError)):
            await stranger.login()  # unknown everywhere: refused at ClientInfo, no ServerInfo
        assert b.server.relay.stats().connections_refused >= 1

        nid = next(iter(a.server.store.nodes()))
        a.server.store.delete_node(nid)  # deleted on the control appliance ...
        await eventually(lambda: not b.server.relay.is_connected(NodePublic_of(node)), what="B cutting it")
        await registered.close()
        await stranger.close()
    finally:
        await node.close()
        await a.server.stop()
        await b.server.stop()

    # A wrong mesh key gets a 403 and no keys
    bad = meshadmission.AdmissionFeed(b.server.relay, os.urandom(32), a.url, lambda: [str(a.root)])
    a2 = await a.start(key, (), ())
    try:
        with pytest.raises(Exception, match="HTTP 403"):
            await bad.poll_once()
        assert bad.keys == frozenset()
    finally:
        await a2.stop()


def NodePublic_of(node: object) -> object:  # noqa: N802 - reads like the type it returns
    from outpost_server.keys import NodePublic

    return NodePublic(node.node.public_raw)  # type: ignore[attr-defined]
