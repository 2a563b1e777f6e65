"""The control plane's request handlers over Noise: register, map, the rest.

`ControlService.handle` is the HTTP/2 handler for every stream of a ts2021
connection. It parses JSON bodies, checks that a node key belongs to the
machine key the Noise handshake authenticated, and delegates to the
`Registrar` (registration flows) or streams maps from the `Fanout`.

Map streaming: the first message is the full state (self, DERP map, peers,
filter, DNS); after that only deltas, each built from what changed for this
node since its last message, and a byte-identical keep-alive every
KEEPALIVE_S plus jitter when nothing else was sent (clients time out after
120 s of silence).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidInput
from ..keys import DiscoPublic, NodePublic
from ..net.flag import Flag
from ..proto import mapframe
from ..state.store import Store, utcnow
from .fanout import Fanout, MapSession
from .policystate import PolicyState
from .mapper import ALLOW_ALL_FILTER, DerpSettings, NodeRenderer, derp_map, go_time
from .register import Registrar, hostinfo_for_storage

log = logging.getLogger(__name__)

# Clients' watchdog is 120 s (direct.go watchdogTimeout); testcontrol and
# Headscale send every 50-59 s. Idle CPU is dominated by keep-alives, so we
# send them after 75-90 s of silence: a third fewer, with 30 s of margin for
# a busy server. On a site LAN there is no carrier NAT to keep open (site
# firewalls keep idle TCP for minutes).
KEEPALIVE_S = 75.0
KEEPALIVE_JITTER_S = 15.0
# Delta pacing per map session (a token bucket): up to DELTA_BURST messages
# back to back, then one per DELTA_REFILL_S (10 a second). An isolated change
# goes out at once; in a burst (a reconnect storm brings N nodes online, each an Online
# patch for every viewer) the changes that arrive while a session waits for a
# token merge into its next message, so a session sends a few messages a
# second instead of one per change: O(N) messages in a storm, not O(N^2).
DELTA_BURST = 8
DELTA_REFILL_S = 0.1
# Optional endpoints clients call that we accept and ignore (reference §3).
IGNORED_OK = frozenset({"/machine/update-health"})
NOT_IMPLEMENTED = frozenset(
    {
        "/machine/set-dns",
        "/machine/id-token",
        "/machine/audit-log",
        "/machine/set-device-attr",
        "/machine/feature/query",
    }
)


class RequestLike(Protocol):
    method: str
    path: str
    peer: Any
    version: int
    body: bytearray


class ResponseLike(Protocol):
    closed: Flag

    def on_close(self, cb: Any) -> None: ...
    async def start(self, status: int, content_type: str | None = None) -> None: ...
    async def write(self, data: bytes) -> None: ...
    async def end(self) -> None: ...
    async def respond(self, status: int, body: bytes = b"", content_type: str | None = None) -> None: ...


@dataclass(frozen=True)
class ControlSettings:
    base_domain: str
    derp: DerpSettings
    magic_dns: bool = True


class ControlService:
    def __init__(
        self,
        store: Store,
        registrar: Registrar,
        fanout: Fanout,
        settings: ControlSettings,
        policy: PolicyState,
    ) -> None:
        self.store = store
        self.policy = policy
        self.registrar = registrar
        self.fanout = fanout
        self.settings = settings
        self.renderer = NodeRenderer(settings.base_domain)
        self._derp_map = derp_map(settings.derp)
        store.subscribe(self._forget_removed)

    def _forget_removed(self, change: Any) -> None:
        if change.kind == "removed":
            self.renderer.forget(change.node_id)

    # ------------------------------------------------------------- routing
    async def handle(self, req: RequestLike, resp: ResponseLike) -> None:
        path = req.path.split("?", 1)[0]
        if path == "/machine/register" and req.method == "POST":
            body = self._json(req)
            if body is None:
                await resp.respond(400, b"invalid JSON body\n")
                return
            result = await self.registrar.register(body, req.peer)
            await resp.respond(200, mapframe.dumps(result), "application/json")
        elif path == "/machine/map" and req.method == "POST":
            body = self._json(req)
            if body is None:
                await resp.respond(400, b"invalid JSON body\n")
                return
            await self._map(body, req, resp)
        elif path in IGNORED_OK:
            await resp.respond(200)
        elif path in NOT_IMPLEMENTED:
            await resp.respond(501, b"not implemented on this server\n")
        else:
            await resp.respond(404, b"not found\n")

    @staticmethod
    def _json(req: RequestLike) -> dict[str, Any] | None:
        try:
            body = json.loads(bytes(req.body) or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    # ----------------------------------------------------------------- map
    def first_message(self, session: MapSession) -> dict[str, Any]:
        msg = self.fanout.full(session, self.renderer)
        msg.setdefault("PacketFilter", ALLOW_ALL_FILTER)
        msg.update(
            {
                "DERPMap": self._derp_map,
                "Domain": self.settings.base_domain,
                "ControlTime": go_time(utcnow()),
                "CollectServices": False,
                # Logs never leave the site; clients are also started with
                # --no-logs-no-support, this just makes it explicit.
                "Debug": {"DisableLogTail": True},
            }
        )
        if self.settings.magic_dns:
            msg["DNSConfig"] = {
                "Proxied": True,
                "Domains": [self.settings.base_domain],
                "Resolvers": [],
                "Routes": {},
            }
        return msg

    async def _map(self, body: dict[str, Any], req: RequestLike, resp: ResponseLike) -> None:
        try:
            node_key = NodePublic.parse_optional(body.get("NodeKey"))
        except InvalidInput as exc:
            await resp.respond(400, f"{exc}\n".encode())
            return
        node = self.store.node_by_key(node_key) if node_key is not None else None
        if node is None:
            await resp.respond(404, b"node not found\n")
            return
        if node.machine_key != req.peer:
            log.warning("map request for node %d from another machine key refused", node.id)
            await resp.respond(403, b"node key does not belong to this machine\n")
            return
        try:
            node = self._apply_client_state(node.id, body)
        except InvalidInput as exc:
            await resp.respond(400, f"{exc}\n".encode())
            return
        stream = bool(body.get("Stream"))
        if not stream and body.get("OmitPeers"):
            await resp.respond(200)  # lite update: the client only checks the status
            return
        cap = body.get("Version") if isinstance(body.get("Version"), int) else 0
        if stream:
            # The stream lives for hours: keep neither the request's bytes nor
            # its parsed JSON alive in the frames above (applied and stored).
            body.clear()
            req.body.clear()
        # A node that just joined is in the policy only after the next settle
        # (shared by every join of a burst): its first map waits for it.
        await self.policy.settled()
        session = MapSession(node.id, cap)
        if not stream:
            first = self.first_message(session)
            await resp.respond(200, mapframe.encode(mapframe.dumps(first)))
            return
        self.fanout.attach(session)
        resp.on_close(lambda: session.close("client closed the stream"))
        try:
            await resp.start(200)
            await resp.write(mapframe.encode(mapframe.dumps(self.first_message(session))))
            await self._stream(session, resp)
        finally:
            self.fanout.detach(session)
        await resp.end()

    async def _stream(self, session: MapSession, resp: ResponseLike) -> None:
        # One timer per wait that sets the session's own wake event: no task
        # and no wait_for wrapper per keep-alive (what idle CPU is made of).
        loop = asyncio.get_running_loop()
        tokens = float(DELTA_BURST)
        refilled = loop.time()
        while True:
            delay = KEEPALIVE_S + random.uniform(0, KEEPALIVE_JITTER_S)  # noqa: S311
            due = loop.time() + delay
            timer = loop.call_later(delay, session.wake.set)
            try:
                await session.wake.wait()
            finally:
                timer.cancel()
            session.wake.clear()
            pending = session.has_pending()
            if not session.closed and pending:
                now = loop.time()
                tokens = min(float(DELTA_BURST), tokens + (now - refilled) / DELTA_REFILL_S)
                refilled = now
                if tokens < 1.0:  # paced: what arrives meanwhile joins this message
                    await asyncio.sleep((1.0 - tokens) * DELTA_REFILL_S)
                    tokens, refilled = 1.0, loop.time()
                    session.wake.clear()
                tokens -= 1.0
            if session.closed:
                if session.farewell is not None:
                    await resp.write(mapframe.encode(mapframe.dumps(self._farewell(session.farewell))))
                return
            # a keep-alive wake-up builds nothing (only the pacing sleep awaits in between,
            # and changes arriving during it are already covered by `pending`)
            msg = self.fanout.drain(session, self.renderer) if pending else None
            if msg is not None:
                msg["ControlTime"] = go_time(utcnow())
                await resp.write(mapframe.encode(mapframe.dumps(msg)))
                msg = None  # not kept alive by this frame until the next change
            elif loop.time() >= due:
                await resp.write(mapframe.KEEPALIVE_MESSAGE)

    def _farewell(self, node: Any) -> dict[str, Any]:
        """Last message to a deleted node: its key expired now, so the client
        stops using the tailnet and shows NeedsLogin instead of retrying."""
        me = dict(self.renderer.self_node(node, True))
        self.renderer.forget(node.id)
        now = go_time(utcnow())
        me["KeyExpiry"] = now
        return {"Node": me, "ControlTime": now}

    def _apply_client_state(self, node_id: Any, body: dict[str, Any]) -> Any:
        hostinfo = body.get("Hostinfo")
        hostinfo_json = None
        home = None
        if isinstance(hostinfo, dict):
            _, hostinfo_json = hostinfo_for_storage(hostinfo)
            netinfo = hostinfo.get("NetInfo")
            if isinstance(netinfo, dict) and isinstance(netinfo.get("PreferredDERP"), int):
                home = netinfo["PreferredDERP"]
        endpoints = body.get("Endpoints")
        eps = None
        if isinstance(endpoints, list):
            eps = tuple(e for e in endpoints if isinstance(e, str) and not _link_local(e))
        return self.store.update_from_client(
            node_id,
            disco_key=DiscoPublic.parse_optional(body.get("DiscoKey")),
            endpoints=eps,
            home_derp=home,
            hostinfo_json=hostinfo_json,
            cap_version=body.get("Version") if isinstance(body.get("Version"), int) else 0,
        )


def _link_local(endpoint: str) -> bool:
    """IPv6 link-local and zoned endpoints are useless to peers (testcontrol drops them)."""
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    return host.lower().startswith("fe80:") or "%" in host
