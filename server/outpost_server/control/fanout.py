"""Map sessions and the delta fan-out.

Theory of operation
-------------------
Each node has at most one live streaming map session (a new stream from the
same node replaces the old one, as the reference test server does). A session
does not receive messages; it accumulates *what* changed since it last wrote:

    changed   peers to send in full (PeersChanged)
    patched   peer id -> patchable fields (PeersChangedPatch)
    removed   peers gone (PeersRemoved)
    online    peer id -> online flag
    self      its own Node changed

The store's listener (`Fanout.on_change`) only marks these sets on the
sessions that can see the changed node and sets their wake event: O(viewers)
set insertions, no serialisation. Each session's writer task then wakes,
drains its sets in one synchronous step and builds one message from the
current state. Bursts coalesce by themselves (ten endpoint changes of a peer
become one patch), and a slow client never delays another.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..net.flag import Flag
from ..proto.mapframe import dumps, fragment_list
from ..state.model import PATCHABLE_FIELDS, Node, NodeChange, NodeId, UserId
from ..state.store import Store, utcnow
from .mapper import TAGGED_USER_ID, go_time, user_profile
from .peerset import PeerSet
from .policystate import TOPOLOGY_FIELDS, PolicyState

log = logging.getLogger(__name__)

Visibility = Callable[[NodeId, NodeId], bool]  # (viewer, node) -> may viewer see node


def allow_all(_viewer: NodeId, _node: NodeId) -> bool:
    """Until the policy engine is wired in, every node sees every other node."""
    return True


RouteSig = tuple[int, tuple[str, ...], tuple[str, ...]]


@dataclass(eq=False, slots=True)
class MapSession:
    node_id: NodeId
    cap_version: int
    wake: Flag = field(default_factory=Flag)  # an asyncio.Event without its deque
    closed: bool = False
    close_reason: str = ""
    self_dirty: bool = False
    changed: set[NodeId] = field(default_factory=set)
    patched: dict[NodeId, set[str]] = field(default_factory=dict)
    removed: set[NodeId] = field(default_factory=set)
    online: dict[NodeId, bool] = field(default_factory=dict)
    sent_users: set[int] = field(default_factory=set)
    known_peers: PeerSet = field(default_factory=PeerSet)  # a bitmap, not a set: N² on a mesh
    # Set when the node itself was deleted: its last state, so the stream can
    # tell the client its key is no longer valid before ending.
    farewell: Node | None = None
    # Policy-derived state last sent, to send only what a policy change altered.
    policy_dirty: bool = False
    # Signatures are shared between sessions (Fanout._shared_sig): per session
    # only the dict entry. The sent_* fields are digests of the JSON texts
    # (`_digest`): a filter is often unique to its node and kilobytes long.
    peer_sig: dict[NodeId, RouteSig] = field(default_factory=dict)
    sent_filter: bytes = b""
    sent_ssh: bytes = b""
    sent_self: bytes = b""

    def has_pending(self) -> bool:
        """Is anything waiting to be sent (a wake may also be a keep-alive or a close)?"""
        return bool(
            self.self_dirty
            or self.policy_dirty
            or self.changed
            or self.patched
            or self.removed
            or self.online
        )

    def close(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        self.wake.set()


def _digest(value: Any, suffix: bytes = b"") -> bytes:
    """What a session keeps of a JSON value it sent, to notice when it
    changes: 16 bytes of BLAKE2b over its canonical encoding (a false
    "unchanged" needs a 2^-128 collision)."""
    canon = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(canon + suffix, digest_size=16).digest()


def _route_sig(node: Node, rendered: dict[str, Any]) -> RouteSig:
    """What a policy change can alter in a peer as one viewer sees it: the
    node's revision and the AllowedIPs / PrimaryRoutes the viewer was sent.
    Kept with and without a policy, so that setting or replacing one resends
    only the peers whose routes really differ (a first allow-all policy on a
    full mesh resends nothing)."""
    return (
        node.revision,
        tuple(rendered.get("AllowedIPs") or ()),
        tuple(rendered.get("PrimaryRoutes") or ()),
    )


class Fanout:
    def __init__(self, store: Store, policy: PolicyState | None = None) -> None:
        self._store = store
        self.policy = policy
        self._visible: Visibility = policy.visible if policy is not None else allow_all
        if policy is not None:
            policy.on_stale.append(self.policy_changed)
            policy.track_liveness()  # HA primaries follow map sessions
        self.sessions: dict[NodeId, MapSession] = {}
        # The latest route signature built per peer: most viewers are sent the
        # same one, so sessions keep references to this instead of ~120-byte
        # copies (with a policy, 100 peers were ~12 KiB of tuples per session).
        self._sigs: dict[NodeId, RouteSig] = {}
        store.subscribe(self.on_change)
        # Called with the node id when a session ends and no other replaced it.
        self.on_offline: list[Callable[[NodeId], None]] = []

    # ---------------------------------------------------------------- sessions
    def attach(self, session: MapSession) -> None:
        old = self.sessions.get(session.node_id)
        if old is not None:
            old.close("replaced by a newer map stream")
        was_online = old is not None
        self.sessions[session.node_id] = session
        if not was_online:
            self._mark_online(session.node_id, True)

    def detach(self, session: MapSession) -> None:
        if self.sessions.get(session.node_id) is session:
            del self.sessions[session.node_id]
            try:
                self._store.set_last_seen(session.node_id, utcnow())
            except Exception:  # noqa: S110 - node deleted meanwhile; nothing to record
                pass
            self._mark_online(session.node_id, False)
            for cb in self.on_offline:
                cb(session.node_id)

    def close_all(self, reason: str) -> None:
        """Shutdown: end every session and record every node's last-seen time
        in one transaction (not one commit per node: at 10k nodes that was
        seconds of a restart). Peers are not told of each other going
        offline: every stream ends now."""
        sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:
            s.close(reason)
        try:
            self._store.set_last_seen_many((s.node_id for s in sessions), utcnow())
        except Exception:
            log.exception("recording last-seen times at shutdown failed")

    def is_online(self, node_id: NodeId) -> bool:
        return node_id in self.sessions

    def _viewers(self, node_id: NodeId) -> Iterable[MapSession]:
        """Sessions of the nodes that may see `node_id`: with a policy, its
        peers (visibility is symmetric), O(peers); allow-all, every session."""
        ids = self.policy.visible_ids(node_id) if self.policy is not None else None
        if ids is None:
            for viewer_id, s in self.sessions.items():
                if viewer_id != node_id and self._visible(viewer_id, node_id):
                    yield s
            return
        sessions = self.sessions
        for viewer_id in ids:
            s = sessions.get(viewer_id)
            if s is not None:
                yield s

    def _mark_online(self, node_id: NodeId, online: bool) -> None:
        if self.policy is not None:
            self.policy.node_online(node_id, online)
        for s in self._viewers(node_id):
            s.online[node_id] = online
            s.wake.set()

    # ------------------------------------------------------------ state events
    def on_change(self, change: NodeChange) -> None:
        nid = change.node_id
        if change.kind == "removed":
            self._sigs.pop(nid, None)
            own = self.sessions.pop(nid, None)
            if own is not None:
                own.farewell = change.before
                own.close("node deleted")
            for s in self.sessions.values():
                if nid in s.known_peers:
                    s.removed.add(nid)
                s.changed.discard(nid)
                s.patched.pop(nid, None)
                s.online.pop(nid, None)
                s.wake.set()
            return
        own = self.sessions.get(nid)
        if own is not None and change.kind == "updated":
            own.self_dirty = True
            own.wake.set()
        if (
            self.policy is not None
            and self.policy.policy is not None
            and (change.kind == "added" or change.fields & TOPOLOGY_FIELDS)
        ):
            # The policy state notifies exactly the sessions whose view this
            # alters once it has recompiled (right after this write; a
            # registration does not wait for that): see PolicyState.settle.
            return
        patch_only = change.kind == "updated" and change.fields <= PATCHABLE_FIELDS
        for s in self._viewers(nid):
            if patch_only and nid in s.known_peers:
                s.patched.setdefault(nid, set()).update(change.fields)
            else:
                s.changed.add(nid)
                s.removed.discard(nid)
            s.wake.set()

    def policy_changed(self, affected: frozenset[NodeId] | None = None) -> None:
        """Visibility, filters or routes may have changed for `affected` (None:
        for anyone): each of those sessions re-evaluates its own view when it
        next wakes (see `_policy_delta`)."""
        if affected is None:
            targets: Iterable[MapSession] = self.sessions.values()
        else:
            targets = (s for i in affected if (s := self.sessions.get(i)) is not None)
        for s in targets:
            s.policy_dirty = True
            s.wake.set()

    # ------------------------------------------------------------ rendering
    def _peer(self, s: MapSession, node: Node, renderer: Any) -> bytes:
        """`node` as `s` sees it, encoded. Unless the policy gives this viewer
        other AllowedIPs/PrimaryRoutes than the plain rendering (subnet routes
        it may not use, an HA secondary), these are the shared bytes."""
        online = self.is_online(node.id)
        if self.policy is None or self.policy.policy is None:
            return renderer.peer_json(node, online)  # type: ignore[no-any-return]
        overlay = self.policy.peer_overlay(s.node_id, node)
        base = renderer.base(node)
        # Only a policy change diffs against this. Without a policy the
        # viewer has the plain rendering (`_policy_delta` compares with
        # that), so a full mesh keeps no N x N table of signatures.
        sig = _route_sig(node, overlay) if overlay else _route_sig(node, base)
        s.peer_sig[node.id] = self._shared_sig(node.id, sig)
        if not overlay or (
            overlay["AllowedIPs"] == base["AllowedIPs"]
            and overlay.get("PrimaryRoutes") == base.get("PrimaryRoutes")
        ):
            return renderer.peer_json(node, online)  # type: ignore[no-any-return]
        d = renderer.peer(node, online)
        d.pop("PrimaryRoutes", None)  # the policy decides primaries: not the allow-all default's
        d.update(overlay)
        return dumps(d)

    @staticmethod
    def _user_of(node: Node) -> int:
        return node.user_id if node.user_id is not None else TAGGED_USER_ID

    def _shared_sig(self, node_id: NodeId, sig: RouteSig) -> RouteSig:
        known = self._sigs.get(node_id)
        if known == sig:
            return known
        self._sigs[node_id] = sig
        return sig

    def _self(self, s: MapSession, node: Node, renderer: Any) -> dict[str, Any]:
        d = renderer.self_node(node, True)
        if self.policy is not None:
            overlay = self.policy.self_overlay(node.id)
            d.update(overlay)
            s.sent_self = _digest(overlay, b"@%d" % node.revision)
        return d

    def _policy_fields(self, s: MapSession, resp: dict[str, Any], force: bool) -> None:
        """PacketFilter and SSHPolicy, when they differ from what was sent."""
        if self.policy is None:
            return
        pf = self.policy.packet_filter(s.node_id)
        pf_text = _digest(pf)
        if force or pf_text != s.sent_filter:
            resp["PacketFilter"] = pf
            s.sent_filter = pf_text
        ssh = self.policy.ssh_policy(s.node_id)
        ssh_text = _digest(ssh)
        if ssh is not None and (force or ssh_text != s.sent_ssh):
            resp["SSHPolicy"] = ssh
        s.sent_ssh = ssh_text

    def _policy_delta(self, s: MapSession, renderer: Any) -> None:
        """Turn a policy/topology change into ordinary pending sets."""
        s.policy_dirty = False
        nodes = self._store.nodes()
        policy = self.policy
        assert policy is not None
        me = nodes.get(s.node_id)
        if me is not None:
            own = _digest(policy.self_overlay(s.node_id), b"@%d" % me.revision)
            if own != s.sent_self:
                s.self_dirty = True
        known = s.known_peers
        views = policy.peer_views(s.node_id)
        if views is None:  # no policy: everyone, as the plain rendering shows them
            ids = set(nodes)
            ids.discard(s.node_id)
            for i in ids:
                node = nodes[i]
                if i not in known:
                    s.changed.add(i)
                    continue
                sent = s.peer_sig.get(i)
                if sent is not None and sent != _route_sig(node, renderer.base(node)):
                    s.changed.add(i)
        else:
            ids = set()
            for i, pv in views:
                ids.add(i)
                peer = nodes.get(i)
                if peer is None:
                    continue
                node = peer
                if i not in known:
                    s.changed.add(i)
                    continue
                sent = s.peer_sig.get(i)
                if sent is None:  # sent while there was no policy: the plain rendering
                    sent = _route_sig(node, renderer.base(node))
                if (
                    sent[0] != node.revision
                    or sent[1] != pv.allowed_ips
                    or sent[2] != pv.primary_routes
                ):
                    s.changed.add(i)
        for gone in known - ids:
            s.removed.add(gone)

    # ------------------------------------------------------------ building
    def drain(self, s: MapSession, renderer: Any) -> dict[str, Any] | None:
        """Turn a session's pending sets into one delta MapResponse (or None)."""
        store = self._store
        nodes = store.nodes()
        resp: dict[str, Any] = {}
        if s.policy_dirty:
            self._policy_delta(s, renderer)
            self._policy_fields(s, resp, force=False)
        if s.self_dirty:
            me = nodes.get(s.node_id)
            if me is not None:
                resp["Node"] = self._self(s, me, renderer)
        removed = sorted(
            i
            for i in s.removed
            if i in s.known_peers and (i not in nodes or not self._visible(s.node_id, i))
        )
        changed: list[bytes] = []
        changed_users: list[int] = []
        for i in sorted(s.changed):
            node = nodes.get(i)
            if node is not None and self._visible(s.node_id, i):
                changed.append(self._peer(s, node, renderer))
                changed_users.append(self._user_of(node))
                s.known_peers.add(i)
        patches: dict[NodeId, dict[str, Any]] = {}
        for i, fields in s.patched.items():
            node = nodes.get(i)
            if node is not None and i not in s.changed:
                patches[i] = renderer.patch(node, fields)
                sig = s.peer_sig.get(i)
                if sig is not None:  # the viewer is now up to date with this revision
                    s.peer_sig[i] = self._shared_sig(i, (node.revision, sig[1], sig[2]))
        for i, online in s.online.items():
            node = nodes.get(i)
            if node is None or i in s.changed or i not in s.known_peers:
                continue
            p = patches.setdefault(i, {"NodeID": i})
            p["Online"] = online
            if not online and node.last_seen is not None:
                p["LastSeen"] = go_time(node.last_seen)
        s.known_peers.difference_update(removed)
        for i in removed:
            s.peer_sig.pop(i, None)
        s.self_dirty = False
        s.changed.clear()
        s.patched.clear()
        s.removed.clear()
        s.online.clear()
        if removed:
            resp["PeersRemoved"] = removed
        if changed:
            resp["PeersChanged"] = fragment_list(changed)
            profiles = self._new_profiles(s, changed_users)
            if profiles:
                resp["UserProfiles"] = profiles
        if patches:
            resp["PeersChangedPatch"] = [patches[k] for k in sorted(patches)]
        return resp or None

    def full(self, s: MapSession, renderer: Any) -> dict[str, Any]:
        """Self node, every visible peer and their profiles: the first message.
        "Peers" is pre-encoded (a `Fragment`), absent when there are none."""
        nodes = self._store.nodes()
        me = nodes[s.node_id]
        s.peer_sig.clear()
        visible = self.policy.visible_ids(s.node_id) if self.policy is not None else None
        peers: list[bytes] = []
        users: list[int] = [self._user_of(me)]
        known: list[NodeId] = []
        for i, n in sorted(nodes.items()):
            if i != s.node_id and (visible is None or i in visible):
                peers.append(self._peer(s, n, renderer))
                users.append(self._user_of(n))
                known.append(i)
        s.known_peers = PeerSet(known)
        s.self_dirty = False
        s.policy_dirty = False
        s.changed.clear()
        s.patched.clear()
        s.removed.clear()
        s.online.clear()
        s.sent_users.clear()
        profiles = self._new_profiles(s, users)
        resp: dict[str, Any] = {"Node": self._self(s, me, renderer)}
        if peers:
            resp["Peers"] = fragment_list(peers)
        resp["UserProfiles"] = profiles
        self._policy_fields(s, resp, force=True)
        return resp

    def _new_profiles(self, s: MapSession, user_ids: Iterable[int]) -> list[dict[str, Any]]:
        users = self._store.users()
        out = []
        for uid in user_ids:
            if uid in s.sent_users:
                continue
            s.sent_users.add(uid)
            out.append(user_profile(users.get(UserId(uid)), UserId(uid)))
        return out
