"""`/machine/register`: the registration flows a client drives.

The client's decision tree (TS:control/controlclient/direct.go doLogin;
reference control-protocol.md §4) decides what each answer means:
- `Error` non-empty: shown to the user, the client backs off and retries;
- `NodeKeyExpired`: the client makes a new node key and registers again with
  `OldNodeKey` set;
- `AuthURL` non-empty: interactive login; the client then long-polls with
  `Followup = AuthURL` until we answer without one;
- otherwise: logged in.

Flows, in the order they are checked:
1. logout: `Expiry` in the past for the current key -> expire (or delete an
   ephemeral node);
2. follow-up of an interactive login -> wait for `outpost nodes approve`;
3. enrolment key -> new node, or re-authorise / rotate a known one;
4. known, unexpired node key and no key -> "you are still logged in"
   (every tailscaled restart sends this);
5. anything else -> a pending interactive registration with an AuthURL.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import DomainError, EnrolmentRefused, InvalidInput, NotFound
from ..keys import MachinePublic, NodePublic
from ..state.model import Node, NodeId, UserId
from ..state.store import Store, parse_tags, utcnow
from .mapper import TAGGED_USER_ID, user_profile

PENDING_AUTH_TTL_S = 30 * 60  # an unapproved interactive login is forgotten after this
MAX_PENDING_AUTHS = 1000  # bound on memory a stream of unknown machines can claim
GO_ZERO_TIME_YEAR = 1  # Go's zero time.Time is 0001-01-01T00:00:00Z


def parse_go_time(text: Any) -> datetime | None:
    """Go RFC 3339 time, or None for absent / Go's zero time."""
    if not isinstance(text, str) or not text:
        return None
    t = text.replace("Z", "+00:00")
    if "." in t:  # Python wants at most 6 fractional digits; Go sends up to 9
        head, _, rest = t.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        t = head + "." + digits[:6].ljust(6, "0") + rest[len(digits) :]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise InvalidInput(f"invalid time {text!r}") from None
    if dt.year <= GO_ZERO_TIME_YEAR:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def hostinfo_for_storage(hostinfo: Any) -> tuple[str, str]:
    """(hostname, JSON) of a Hostinfo, without the fast-changing NetInfo.

    NetInfo (DERP latencies, preferred DERP) changes on every netcheck; peers do
    not need it, and keeping it would turn each lite update into a full peer
    change for every viewer. The home DERP is stored separately.
    """
    if not isinstance(hostinfo, dict):
        return "node", "{}"
    hi = {k: v for k, v in hostinfo.items() if k != "NetInfo"}
    hostname = hi.get("Hostname") if isinstance(hi.get("Hostname"), str) else ""
    return hostname or "node", json.dumps(hi, separators=(",", ":"), sort_keys=True)


@dataclass(eq=False)
class PendingAuth:
    auth_id: str
    url: str
    machine_key: MachinePublic
    node_key: NodePublic
    old_node_id: NodeId | None
    hostname: str
    hostinfo_json: str
    ephemeral: bool
    cap_version: int
    created: datetime
    request_tags: tuple[str, ...]
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Registrar:
    def __init__(self, store: Store, server_url: str) -> None:
        self._store = store
        self._server_url = server_url.rstrip("/")
        self.pending: dict[str, PendingAuth] = {}

    # ------------------------------------------------------------- responses
    def _ok(self, node: Node) -> dict[str, Any]:
        uid = node.user_id if node.user_id is not None else TAGGED_USER_ID
        user = self._store.users().get(node.user_id) if node.user_id is not None else None
        prof = user_profile(user, uid)
        return {
            "User": {"ID": uid, "DisplayName": prof["DisplayName"]},
            "Login": {
                "ID": uid,
                "Provider": "outpost",
                "LoginName": prof["LoginName"],
                "DisplayName": prof["DisplayName"],
            },
            "NodeKeyExpired": False,
            "MachineAuthorized": True,
            "AuthURL": "",
        }

    @staticmethod
    def _error(message: str) -> dict[str, Any]:
        return {"Error": message, "MachineAuthorized": False, "AuthURL": ""}

    # ---------------------------------------------------------------- entry
    async def register(self, req: dict[str, Any], peer: MachinePublic) -> dict[str, Any]:
        try:
            return await self._register(req, peer)
        except DomainError as exc:
            return self._error(str(exc))

    async def _register(self, req: dict[str, Any], peer: MachinePublic) -> dict[str, Any]:
        node_key = NodePublic.parse_optional(req.get("NodeKey"))
        if node_key is None:
            raise InvalidInput("register request has no NodeKey")
        old_key = NodePublic.parse_optional(req.get("OldNodeKey"))
        now = utcnow()
        expiry = parse_go_time(req.get("Expiry"))
        auth = req.get("Auth") if isinstance(req.get("Auth"), dict) else {}
        auth_key = auth.get("AuthKey") if isinstance(auth.get("AuthKey"), str) else ""
        followup = req.get("Followup") if isinstance(req.get("Followup"), str) else ""
        hostname, hostinfo_json = hostinfo_for_storage(req.get("Hostinfo"))
        cap = req.get("Version") if isinstance(req.get("Version"), int) else 0
        ephemeral = bool(req.get("Ephemeral"))
        hi = req.get("Hostinfo") if isinstance(req.get("Hostinfo"), dict) else {}
        request_tags = parse_tags(t for t in (hi.get("RequestTags") or []) if isinstance(t, str))

        node = self._store.node_by_key(node_key)
        if node is not None and node.machine_key != peer:
            raise EnrolmentRefused("this node key is registered to another machine")
        old_node = self._store.node_by_key(old_key) if old_key is not None else None
        if old_node is not None and old_node.machine_key != peer:
            old_node = None

        # 1. Logout (or SetExpirySooner when the time is in the future).
        if expiry is not None and node is not None:
            if expiry <= now:
                if node.ephemeral:
                    self._store.delete_node(node.id)
                else:
                    self._store.expire_node(node.id, expiry)
                resp = self._ok(node)
                resp["NodeKeyExpired"] = True
                resp["MachineAuthorized"] = False
                return resp
            if node.key_expiry is None or expiry < node.key_expiry:
                node = self._store.expire_node(node.id, expiry)
            return self._ok(node)

        # 2. Follow-up of an interactive login.
        if followup:
            return await self._wait_followup(
                followup, node_key, peer, hostname, hostinfo_json, ephemeral, cap, request_tags
            )

        # 3. Enrolment key.
        if auth_key:
            key = self._store.check_enrolment_key(auth_key, now)
            tags = key.tags
            target = node or old_node or self._reusable_node(peer, key.user_id, tags)
            if target is not None:
                target = self._store.reauthorise(
                    target.id,
                    node_key=node_key,
                    user_id=key.user_id if not tags else None,
                    tags=tags,
                    key_expiry=None,
                    enrolment_key_id=key.id,
                )
                return self._ok(target)
            new = self._store.register_node(
                machine_key=peer,
                node_key=node_key,
                hostname=hostname,
                hostinfo_json=hostinfo_json,
                user_id=key.user_id if not tags else None,
                tags=tags,
                ephemeral=key.ephemeral or ephemeral,
                cap_version=cap,
                key_expiry=None,
                enrolment_key_id=key.id,
            )
            return self._ok(new)

        # 4. A known node logging in again (daemon restart).
        if node is not None:
            if node.is_expired(now):
                resp = self._ok(node)
                resp["NodeKeyExpired"] = True
                resp["MachineAuthorized"] = False
                return resp
            return self._ok(node)

        # 5. Interactive: wait for an administrator.
        pending = self._new_pending(
            peer, node_key, old_node, hostname, hostinfo_json, ephemeral, cap, request_tags
        )
        return {"AuthURL": pending.url, "MachineAuthorized": False, "NodeKeyExpired": False}

    def _reusable_node(
        self, machine: MachinePublic, user_id: UserId | None, tags: tuple[str, ...]
    ) -> Node | None:
        """A machine enrolling again (after logout) keeps its node, address and name."""
        now = utcnow()
        matches = [
            n
            for n in self._store.nodes_of_machine(machine)
            if n.is_expired(now)
            and (n.tags == tags if tags else n.user_id == user_id)
        ]
        return matches[0] if len(matches) == 1 else None

    # ----------------------------------------------------------- interactive
    def _new_pending(
        self,
        peer: MachinePublic,
        node_key: NodePublic,
        old_node: Node | None,
        hostname: str,
        hostinfo_json: str,
        ephemeral: bool,
        cap: int,
        request_tags: tuple[str, ...],
    ) -> PendingAuth:
        self._expire_pending()
        for p in self.pending.values():  # same key asked again: same URL
            if p.node_key == node_key and p.machine_key == peer:
                return p
        if len(self.pending) >= MAX_PENDING_AUTHS:
            raise EnrolmentRefused("too many pending registrations; try again later")
        auth_id = secrets.token_hex(8)
        p = PendingAuth(
            auth_id=auth_id,
            url=f"{self._server_url}/register/{auth_id}",
            machine_key=peer,
            node_key=node_key,
            old_node_id=old_node.id if old_node else None,
            hostname=hostname,
            hostinfo_json=hostinfo_json,
            ephemeral=ephemeral,
            cap_version=cap,
            created=utcnow(),
            request_tags=request_tags,
        )
        self.pending[auth_id] = p
        return p

    def _expire_pending(self) -> None:
        cutoff = utcnow() - timedelta(seconds=PENDING_AUTH_TTL_S)
        for auth_id in [a for a, p in self.pending.items() if p.created < cutoff]:
            p = self.pending.pop(auth_id)
            if not p.done.done():
                p.done.set_result(self._error("registration request expired; run tailscale up again"))

    async def _wait_followup(
        self,
        url: str,
        node_key: NodePublic,
        peer: MachinePublic,
        hostname: str,
        hostinfo_json: str,
        ephemeral: bool,
        cap: int,
        request_tags: tuple[str, ...],
    ) -> dict[str, Any]:
        auth_id = url.rstrip("/").rsplit("/", 1)[-1]
        p = self.pending.get(auth_id)
        if p is None or p.machine_key != peer or p.node_key != node_key:
            # Unknown or forgotten (e.g. server restarted): start again with a fresh URL.
            fresh = self._new_pending(
                peer,
                node_key,
                self._store.node_by_key(node_key),
                hostname,
                hostinfo_json,
                ephemeral,
                cap,
                request_tags,
            )
            return {"AuthURL": fresh.url, "MachineAuthorized": False}
        return await asyncio.shield(p.done)

    def approve(self, auth_id: str, user_id: UserId | None, tags: tuple[str, ...] = ()) -> Node:
        p = self.pending.get(auth_id)
        if p is None:
            raise NotFound(f"no pending registration {auth_id!r}")
        if user_id is None and not tags:
            raise InvalidInput("approve needs a user or tags to own the node")
        if user_id is not None:
            self._store.user(user_id)
        old = self._store.node(p.old_node_id) if p.old_node_id is not None else None
        if old is not None:
            node = self._store.reauthorise(
                old.id,
                node_key=p.node_key,
                user_id=user_id if not tags else None,
                tags=tags,
                key_expiry=None,
                enrolment_key_id=None,
            )
        else:
            node = self._store.register_node(
                machine_key=p.machine_key,
                node_key=p.node_key,
                hostname=p.hostname,
                hostinfo_json=p.hostinfo_json,
                user_id=user_id if not tags else None,
                tags=tags,
                ephemeral=p.ephemeral,
                cap_version=p.cap_version,
                key_expiry=None,
                enrolment_key_id=None,
            )
        del self.pending[auth_id]
        if not p.done.done():
            p.done.set_result(self._ok(node))
        return node

    def reject(self, auth_id: str) -> PendingAuth:
        p = self.pending.pop(auth_id, None)
        if p is None:
            raise NotFound(f"no pending registration {auth_id!r}")
        if not p.done.done():
            p.done.set_result(self._error("registration rejected by the administrator"))
        return p
