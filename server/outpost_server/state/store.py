"""The single writer of Outpost's state.

Theory of operation
-------------------
Every change to users, nodes and enrolment keys goes through `Store`: it
writes the database in one transaction, then replaces the frozen value in its
in-memory indices and tells its listeners what changed (`NodeChange`). The
hot path (map streaming, relay admission) reads those indices and never
touches the database. The store runs on the event loop's thread, so readers
never see a half-applied write; values handed out are immutable, so a reader
may keep one across an `await` and simply see the state of that moment.

A write costs one transaction plus work proportional to the changed node's
own data: the fan-out (`control/fanout.py`) then touches only the sessions
that can see that node. The writes on the registration and map-request path
(a node joining, a node's own update, an enrolment key's use count) are
SQLAlchemy Core statements rather than ORM unit-of-work flushes: the same
SQL, at a fraction of the Python cost (the ORM was most of a registration).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_network

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from ..db.models import EnrolmentKeyRow, NodeRow, PolicyRow, ServerKey, UserRow
from ..errors import Conflict, EnrolmentRefused, InvalidInput, NotFound
from ..keys import DiscoPublic, MachinePublic, NodePublic, PrivateKey
from .ipalloc import AddressAllocator
from .model import (
    EnrolmentKey,
    EnrolmentKeyId,
    Node,
    NodeChange,
    NodeId,
    PolicyRecord,
    User,
    UserId,
)

ENROLMENT_KEY_PREFIX = "opk"  # "opk-<lookup id>-<secret>"
MAX_HOSTNAME_CHARS = 63  # one DNS label
MAX_HOSTINFO_BYTES = 64 * 1024  # Hostinfo as the client sends it; Go clients send ~2 KiB
MAX_ENDPOINTS = 64
_TAG_RE = re.compile(r"^tag:[a-z0-9][a-z0-9_-]*$", re.IGNORECASE)
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")

Listener = Callable[[NodeChange], None]

# Hot-path statements, built once (building a statement costs more than running it).
_NODES = NodeRow.__table__
_KEYS = EnrolmentKeyRow.__table__
_MUTABLE_NODE_COLUMNS = (
    "node_key", "disco_key", "user_id", "hostname", "given_name", "tags", "endpoints",
    "home_derp", "hostinfo", "cap_version", "key_expiry", "last_seen", "approved_routes",
)  # fmt: skip
_INSERT_NODE = insert(_NODES)
_UPDATE_NODE = (
    update(_NODES)
    .where(_NODES.c.id == bindparam("node_id"))
    .values({c: bindparam(c) for c in _MUTABLE_NODE_COLUMNS})
)
_COUNT_KEY_USE = (
    update(_KEYS).where(_KEYS.c.id == bindparam("key_id")).values(uses=_KEYS.c.uses + 1)
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def dns_label(hostname: str) -> str:
    """A DNS-safe label from a client hostname (MagicDNS names are labels)."""
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:MAX_HOSTNAME_CHARS]
    return label.strip("-") or "node"


def parse_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out = set()
    for tag in tags:
        tag = tag.strip()
        if not tag:
            continue
        if not _TAG_RE.match(tag):
            raise InvalidInput(f"invalid tag {tag!r}: tags look like 'tag:name'")
        out.add(tag.lower())
    return tuple(sorted(out))


def _hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Store:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._nodes: dict[NodeId, Node] = {}
        self._by_node_key: dict[NodePublic, NodeId] = {}
        self._by_machine: dict[MachinePublic, set[NodeId]] = {}
        self._users: dict[UserId, User] = {}
        self._keys: dict[EnrolmentKeyId, EnrolmentKey] = {}
        # Secret hashes stay inside the store: never in the values it hands out.
        self._key_hashes: dict[EnrolmentKeyId, bytes] = {}
        self._key_by_prefix: dict[str, EnrolmentKeyId] = {}
        self._names: set[str] = set()
        self._listeners: list[Listener] = []
        self._node_changes = 0
        self._alloc = AddressAllocator()
        self._load()

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        with Session(self._engine) as s:
            for u in s.scalars(select(UserRow)):
                self._users[UserId(u.id)] = _user(u)
            for n in s.scalars(select(NodeRow)):
                node = _node(n)
                self._index(node)
            for k in s.scalars(select(EnrolmentKeyRow)):
                self._remember_key(_key(k), k.secret_hash)
        self._alloc = AddressAllocator(n.ipv4 for n in self._nodes.values())

    def _remember_key(self, key: EnrolmentKey, secret_hash: bytes) -> None:
        self._keys[key.id] = key
        self._key_hashes[key.id] = secret_hash
        self._key_by_prefix[key.prefix] = key.id

    @property
    def engine(self) -> Engine:
        """For sibling writers in `state/` (e.g. bundles.py) that share the database."""
        return self._engine

    def adopt_enrolment_key(self, key: EnrolmentKey, secret_hash: bytes) -> None:
        """Index a key a sibling writer committed in its own transaction (bundle apply)."""
        self._remember_key(key, secret_hash)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def node_changes(self) -> int:
        """How many node changes were published so far: a cheap 'did anything change' stamp."""
        return self._node_changes

    def _emit(self, change: NodeChange) -> None:
        self._node_changes += 1
        for listener in self._listeners:
            listener(change)

    def _index(self, node: Node) -> None:
        old = self._nodes.get(node.id)
        if old is not None:
            self._by_node_key.pop(old.node_key, None)
            self._names.discard(old.given_name)
        self._nodes[node.id] = node
        self._by_node_key[node.node_key] = node.id
        self._by_machine.setdefault(node.machine_key, set()).add(node.id)
        self._names.add(node.given_name)

    def nodes(self) -> dict[NodeId, Node]:
        """The current nodes. Callers must not mutate the mapping."""
        return self._nodes

    def node(self, node_id: NodeId) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NotFound(f"no node with id {node_id}") from None

    def node_by_key(self, key: NodePublic) -> Node | None:
        nid = self._by_node_key.get(key)
        return None if nid is None else self._nodes[nid]

    def nodes_of_machine(self, machine: MachinePublic) -> list[Node]:
        """Every node registered from this machine key (usually one)."""
        return [self._nodes[i] for i in sorted(self._by_machine.get(machine, ()))]

    def users(self) -> dict[UserId, User]:
        return self._users

    def user(self, user_id: UserId) -> User:
        try:
            return self._users[user_id]
        except KeyError:
            raise NotFound(f"no user with id {user_id}") from None

    def user_by_name(self, name: str) -> User:
        for u in self._users.values():
            if u.name == name:
                return u
        raise NotFound(f"no user named {name!r}")

    def enrolment_keys(self) -> dict[EnrolmentKeyId, EnrolmentKey]:
        return self._keys

    # ------------------------------------------------------------- server keys
    def server_key(self, name: str) -> PrivateKey:
        """A long-lived server key, created on first use and kept forever."""
        with Session(self._engine) as s, s.begin():
            row = s.get(ServerKey, name)
            if row is None:
                key = PrivateKey.generate(name)
                s.add(ServerKey(name=name, secret=key.secret_bytes(), created=utcnow()))
                return key
            return PrivateKey(row.secret, name)

    # ------------------------------------------------------------------- users
    def create_user(self, name: str, display_name: str | None = None) -> User:
        if not _USER_RE.match(name):
            raise InvalidInput(
                f"invalid user name {name!r}: use letters, digits and . _ @ + - (max 64)"
            )
        if any(u.name == name for u in self._users.values()):
            raise Conflict(f"a user named {name!r} already exists")
        with Session(self._engine) as s, s.begin():
            row = UserRow(name=name, display_name=display_name or name, created=utcnow())
            s.add(row)
            s.flush()
            user = _user(row)
        self._users[user.id] = user
        return user

    def delete_user(self, user_id: UserId) -> User:
        user = self.user(user_id)
        if any(n.user_id == user_id for n in self._nodes.values()):
            raise Conflict(f"user {user.name!r} still owns nodes; delete them first")
        with Session(self._engine) as s, s.begin():
            s.execute(delete(EnrolmentKeyRow).where(EnrolmentKeyRow.user_id == user_id))
            s.execute(delete(UserRow).where(UserRow.id == user_id))
        for kid in [k for k, v in self._keys.items() if v.user_id == user_id]:
            self._key_by_prefix.pop(self._keys[kid].prefix, None)
            self._key_hashes.pop(kid, None)
            del self._keys[kid]
        del self._users[user_id]
        return user

    # ---------------------------------------------------------- enrolment keys
    def create_enrolment_key(
        self,
        *,
        user_id: UserId | None,
        reusable: bool = False,
        ephemeral: bool = False,
        tags: Iterable[str] = (),
        expires: datetime | None = None,
        description: str = "",
    ) -> tuple[EnrolmentKey, str]:
        """Returns the key record and its secret text, which is shown once only."""
        tag_tuple = parse_tags(tags)
        if user_id is None and not tag_tuple:
            raise InvalidInput("an enrolment key needs a user or at least one tag")
        if user_id is not None:
            self.user(user_id)
        if expires is not None and expires <= utcnow():
            raise InvalidInput("the expiry of a new enrolment key must be in the future")
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        with Session(self._engine) as s, s.begin():
            row = EnrolmentKeyRow(
                prefix=prefix,
                secret_hash=_hash_secret(secret),
                user_id=user_id,
                reusable=reusable,
                ephemeral=ephemeral,
                tags=",".join(tag_tuple),
                expires=expires,
                uses=0,
                revoked=False,
                created=utcnow(),
                description=description[:255],
            )
            s.add(row)
            s.flush()
            key = _key(row)
        self._remember_key(key, _hash_secret(secret))
        return key, f"{ENROLMENT_KEY_PREFIX}-{prefix}-{secret}"

    def revoke_enrolment_key(self, key_id: EnrolmentKeyId) -> EnrolmentKey:
        key = self._keys.get(key_id)
        if key is None:
            raise NotFound(f"no enrolment key with id {key_id}")
        with Session(self._engine) as s, s.begin():
            row = s.get(EnrolmentKeyRow, key_id)
            assert row is not None
            row.revoked = True
        key = replace(key, revoked=True)
        self._keys[key_id] = key
        return key

    def check_enrolment_key(self, text: str, now: datetime) -> EnrolmentKey:
        """Find and validate an enrolment key; the message says what is wrong."""
        parts = text.strip().split("-", 2)
        if len(parts) != 3 or parts[0] != ENROLMENT_KEY_PREFIX:
            raise EnrolmentRefused("invalid enrolment key: not an Outpost key")
        key_id = self._key_by_prefix.get(parts[1])
        key = self._keys.get(key_id) if key_id is not None else None
        if key is None:
            raise EnrolmentRefused("invalid enrolment key: unknown key")
        if not hmac.compare_digest(self._key_hashes[key.id], _hash_secret(parts[2])):
            raise EnrolmentRefused("invalid enrolment key: unknown key")
        state = key.state(now)
        if state != "valid":
            raise EnrolmentRefused(f"enrolment key {key.prefix} is {state}")
        return key

    def _use_enrolment_key(self, conn: Connection, key_id: EnrolmentKeyId) -> EnrolmentKey:
        """Count one use in the transaction; the caller indexes the result after commit."""
        conn.execute(_COUNT_KEY_USE, {"key_id": key_id})
        key = self._keys[key_id]
        return replace(key, uses=key.uses + 1)

    # ------------------------------------------------------------------- nodes
    def _unique_name(self, hostname: str, exclude: str | None = None) -> str:
        base = dns_label(hostname)
        name, n = base, 0
        while name in self._names and name != exclude:
            n += 1
            suffix = f"-{n}"
            name = base[: MAX_HOSTNAME_CHARS - len(suffix)] + suffix
        return name

    def register_node(
        self,
        *,
        machine_key: MachinePublic,
        node_key: NodePublic,
        hostname: str,
        hostinfo_json: str,
        user_id: UserId | None,
        tags: tuple[str, ...],
        ephemeral: bool,
        cap_version: int,
        key_expiry: datetime | None,
        enrolment_key_id: EnrolmentKeyId | None,
    ) -> Node:
        if self.node_by_key(node_key) is not None:
            raise Conflict("node key already registered")
        if len(hostinfo_json) > MAX_HOSTINFO_BYTES:
            raise InvalidInput("Hostinfo too large")
        ipv4, ipv6 = self._alloc.allocate()
        given = self._unique_name(hostname)
        now = utcnow()
        values = {
            "machine_key": machine_key.raw,
            "node_key": node_key.raw,
            "disco_key": None,
            "user_id": user_id,
            "hostname": hostname[:255],
            "given_name": given,
            "ipv4": str(ipv4),
            "ipv6": str(ipv6),
            "tags": ",".join(tags),
            "endpoints": "[]",
            "home_derp": 0,
            "hostinfo": hostinfo_json,
            "cap_version": cap_version,
            "key_expiry": key_expiry,
            "ephemeral": ephemeral,
            "created": now,
            "last_seen": now,
            "enrolment_key_id": enrolment_key_id,
            "approved_routes": "",
        }
        used = None
        try:
            with self._engine.begin() as conn:
                result = conn.execute(_INSERT_NODE, values)
                if enrolment_key_id is not None:
                    used = self._use_enrolment_key(conn, enrolment_key_id)
                node_id = result.inserted_primary_key[0]  # type: ignore[index]
        except Exception:
            self._alloc.release(ipv4)
            raise
        if used is not None:
            self._keys[used.id] = used
        node = _node(NodeRow(id=node_id, **values))
        self._index(node)
        self._emit(NodeChange("added", node.id))
        return node

    def _write(self, node_id: NodeId, **changes: object) -> Node:
        """Apply column changes to one node; emit an update with the field names."""
        old = self.node(node_id)
        new = replace(old, revision=old.revision + 1, **changes)  # type: ignore[arg-type]
        with self._engine.begin() as conn:
            done = conn.execute(_UPDATE_NODE, {"node_id": node_id, **_columns(new)})
            if done.rowcount != 1:
                raise NotFound(f"no node with id {node_id}")
        self._index(new)
        fields = frozenset(k for k in changes if getattr(old, k) != getattr(new, k))
        if fields - {"last_seen"}:
            self._emit(NodeChange("updated", node_id, fields, before=old))
        return new

    def update_from_client(
        self,
        node_id: NodeId,
        *,
        disco_key: DiscoPublic | None,
        endpoints: tuple[str, ...] | None,
        home_derp: int | None,
        hostinfo_json: str | None,
        cap_version: int,
    ) -> Node:
        """A MapRequest's view of the node. Never clobbers a known disco key with none."""
        node = self.node(node_id)
        changes: dict[str, object] = {}
        if disco_key is not None and disco_key != node.disco_key:
            changes["disco_key"] = disco_key
        if endpoints is not None:
            eps = tuple(endpoints[:MAX_ENDPOINTS])
            if eps != node.endpoints:
                changes["endpoints"] = eps
        if home_derp and home_derp != node.home_derp:
            changes["home_derp"] = home_derp
        if hostinfo_json is not None and hostinfo_json != node.hostinfo_json:
            if len(hostinfo_json) > MAX_HOSTINFO_BYTES:
                raise InvalidInput("Hostinfo too large")
            changes["hostinfo_json"] = hostinfo_json
        if cap_version and cap_version != node.cap_version:
            changes["cap_version"] = cap_version
        if not changes:
            return node
        return self._write(node_id, **changes)

    def rotate_node_key(self, node_id: NodeId, new_key: NodePublic) -> Node:
        holder = self.node_by_key(new_key)
        if holder is not None and holder.id != node_id:
            raise Conflict("node key already registered to another node")
        return self._write(node_id, node_key=new_key)

    def reauthorise(
        self,
        node_id: NodeId,
        *,
        node_key: NodePublic,
        user_id: UserId | None,
        tags: tuple[str, ...],
        key_expiry: datetime | None,
        enrolment_key_id: EnrolmentKeyId | None,
    ) -> Node:
        """A known machine logged in again (new key, new owner or renewed expiry)."""
        node = self._write(
            node_id,
            node_key=node_key,
            user_id=user_id,
            tags=tags,
            key_expiry=key_expiry,
        )
        if enrolment_key_id is not None:
            with self._engine.begin() as conn:
                used = self._use_enrolment_key(conn, enrolment_key_id)
            self._keys[used.id] = used
        return node

    def rename_node(self, node_id: NodeId, name: str) -> Node:
        label = dns_label(name)
        if label != name.lower():
            raise InvalidInput(
                f"invalid node name {name!r}: use letters, digits and '-' (max 63), e.g. {label!r}"
            )
        node = self.node(node_id)
        if label != node.given_name and label in self._names:
            raise Conflict(f"the name {label!r} is already taken")
        return self._write(node_id, given_name=label)

    def set_node_tags(self, node_id: NodeId, tags: Iterable[str]) -> Node:
        """Replace a node's tags. Tagged nodes are owned by their tags (the policy's tagOwners
        decide who may use them); a node with no tags needs a user, so an ownerless node
        cannot lose its last tag."""
        parsed = parse_tags(tags)
        node = self.node(node_id)
        if not parsed and node.user_id is None:
            raise InvalidInput(
                f"node {node.given_name} was enrolled with tags and has no user: it must keep at least one tag"
            )
        return self._write(node_id, tags=parsed)

    def expire_node(self, node_id: NodeId, when: datetime | None = None) -> Node:
        return self._write(node_id, key_expiry=when or utcnow())

    def set_last_seen(self, node_id: NodeId, when: datetime) -> Node:
        return self._write(node_id, last_seen=when)

    def set_last_seen_many(self, node_ids: Iterable[NodeId], when: datetime) -> int:
        """`set_last_seen` for many nodes in one transaction (a shutdown with
        every node online: one commit, not one per node). Unknown ids are
        skipped. Returns how many were written."""
        news = []
        for node_id in node_ids:
            old = self._nodes.get(node_id)
            if old is not None:
                news.append(replace(old, revision=old.revision + 1, last_seen=when))
        if not news:
            return 0
        with self._engine.begin() as conn:
            conn.execute(_UPDATE_NODE, [{"node_id": n.id, **_columns(n)} for n in news])
        for n in news:
            self._index(n)
        return len(news)

    def approve_routes(self, node_id: NodeId, routes: Iterable[str]) -> Node:
        """Set the routes an admin approved for a node (replaces the previous set)."""
        out = []
        for r in routes:
            try:
                out.append(str(ip_network(r.strip(), strict=True)))
            except ValueError:
                raise InvalidInput(f"invalid route {r!r}: use a network like 10.0.0.0/24") from None
        return self._write(node_id, approved_routes=tuple(sorted(set(out))))

    # ---------------------------------------------------------------- policy
    def current_policy(self) -> PolicyRecord | None:
        with Session(self._engine) as s:
            row = s.scalars(select(PolicyRow).order_by(PolicyRow.id.desc()).limit(1)).first()
            return _policy(row) if row is not None else None

    def policy(self, policy_id: int) -> PolicyRecord:
        with Session(self._engine) as s:
            row = s.get(PolicyRow, policy_id)
            if row is None:
                raise NotFound(f"no policy version {policy_id}")
            return _policy(row)

    def policy_history(self) -> list[PolicyRecord]:
        with Session(self._engine) as s:
            return [_policy(r) for r in s.scalars(select(PolicyRow).order_by(PolicyRow.id))]

    def save_policy(self, text: str, author: str, comment: str = "") -> PolicyRecord:
        """Store an already validated policy as the new current version."""
        with Session(self._engine) as s, s.begin():
            row = PolicyRow(text=text, author=author[:128], comment=comment[:255], created=utcnow())
            s.add(row)
            s.flush()
            return _policy(row)

    def delete_node(self, node_id: NodeId) -> Node:
        node = self.node(node_id)
        with Session(self._engine) as s, s.begin():
            s.execute(delete(NodeRow).where(NodeRow.id == node_id))
        del self._nodes[node_id]
        self._by_node_key.pop(node.node_key, None)
        same_machine = self._by_machine.get(node.machine_key)
        if same_machine is not None:
            same_machine.discard(node_id)
            if not same_machine:
                del self._by_machine[node.machine_key]
        self._names.discard(node.given_name)
        self._alloc.release(node.ipv4)
        self._emit(NodeChange("removed", node_id, before=node))
        return node


# ------------------------------------------------------------------ row mapping
def _policy(row: PolicyRow) -> PolicyRecord:
    return PolicyRecord(row.id, row.text, row.author, row.comment, row.created)


def _user(row: UserRow) -> User:
    return User(UserId(row.id), row.name, row.display_name, row.created)


def _key(row: EnrolmentKeyRow) -> EnrolmentKey:
    return EnrolmentKey(
        id=EnrolmentKeyId(row.id),
        prefix=row.prefix,
        user_id=UserId(row.user_id) if row.user_id is not None else None,
        reusable=row.reusable,
        ephemeral=row.ephemeral,
        tags=tuple(t for t in row.tags.split(",") if t),
        expires=row.expires,
        uses=row.uses,
        revoked=row.revoked,
        created=row.created,
        description=row.description,
    )


def _node(row: NodeRow) -> Node:
    return Node(
        id=NodeId(row.id),
        machine_key=MachinePublic(row.machine_key),
        node_key=NodePublic(row.node_key),
        disco_key=DiscoPublic(row.disco_key) if row.disco_key else None,
        user_id=UserId(row.user_id) if row.user_id is not None else None,
        hostname=row.hostname,
        given_name=row.given_name,
        ipv4=IPv4Address(row.ipv4),
        ipv6=IPv6Address(row.ipv6),
        tags=tuple(t for t in row.tags.split(",") if t),
        endpoints=tuple(json.loads(row.endpoints or "[]")),
        home_derp=row.home_derp,
        hostinfo_json=row.hostinfo,
        cap_version=row.cap_version,
        key_expiry=row.key_expiry,
        ephemeral=row.ephemeral,
        created=row.created,
        last_seen=row.last_seen,
        enrolment_key_id=row.enrolment_key_id,
        approved_routes=tuple(r for r in (row.approved_routes or "").split(",") if r),
    )


def _columns(node: Node) -> dict[str, object]:
    """The node's mutable columns, as `_node` reads them back."""
    return {
        "node_key": node.node_key.raw,
        "disco_key": node.disco_key.raw if node.disco_key else None,
        "user_id": node.user_id,
        "hostname": node.hostname,
        "given_name": node.given_name,
        "tags": ",".join(node.tags),
        "endpoints": json.dumps(list(node.endpoints)),
        "home_derp": node.home_derp,
        "hostinfo": node.hostinfo_json,
        "cap_version": node.cap_version,
        "key_expiry": node.key_expiry,
        "last_seen": node.last_seen,
        "approved_routes": ",".join(node.approved_routes),
    }
