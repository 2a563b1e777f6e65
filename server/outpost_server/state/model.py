"""Plain frozen values that leave the state layer. Never ORM objects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import NewType

from ..keys import DiscoPublic, MachinePublic, NodePublic

NodeId = NewType("NodeId", int)
UserId = NewType("UserId", int)
EnrolmentKeyId = NewType("EnrolmentKeyId", int)

# Fields a lite map update may change; peers learn these as PeersChangedPatch.
PATCHABLE_FIELDS = frozenset({"disco_key", "endpoints", "home_derp"})


@dataclass(frozen=True, slots=True)
class User:
    id: UserId
    name: str
    display_name: str
    created: datetime

    @property
    def login_name(self) -> str:
        return self.name if "@" in self.name else f"{self.name}@outpost"


@dataclass(frozen=True, slots=True)
class Node:
    id: NodeId
    machine_key: MachinePublic
    node_key: NodePublic
    disco_key: DiscoPublic | None
    user_id: UserId | None
    hostname: str
    given_name: str
    ipv4: IPv4Address
    ipv6: IPv6Address
    tags: tuple[str, ...]
    endpoints: tuple[str, ...]
    home_derp: int
    hostinfo_json: str
    cap_version: int
    key_expiry: datetime | None
    ephemeral: bool
    created: datetime
    last_seen: datetime | None
    revision: int = 0  # bumped on every change; serialisation caches key on (id, revision)
    enrolment_key_id: int | None = field(default=None)
    approved_routes: tuple[str, ...] = ()  # subnet/exit routes an admin approved

    def advertised_routes(self) -> tuple[str, ...]:
        """Routes the client advertises (Hostinfo.RoutableIPs)."""
        try:
            routes = json.loads(self.hostinfo_json or "{}").get("RoutableIPs") or []
        except (ValueError, AttributeError):
            return ()
        return tuple(sorted(r for r in routes if isinstance(r, str)))

    def is_expired(self, now: datetime) -> bool:
        return self.key_expiry is not None and self.key_expiry <= now


@dataclass(frozen=True, slots=True)
class EnrolmentKey:
    id: EnrolmentKeyId
    prefix: str
    user_id: UserId | None
    reusable: bool
    ephemeral: bool
    tags: tuple[str, ...]
    expires: datetime | None
    uses: int
    revoked: bool
    created: datetime
    description: str

    def state(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        if not self.reusable and self.uses > 0:
            return "used"
        return "valid"


@dataclass(frozen=True, slots=True)
class NodeChange:
    """What the single writer tells the fan-out after each write."""

    kind: str  # "added" | "updated" | "removed"
    node_id: NodeId
    fields: frozenset[str] = frozenset()
    before: Node | None = None  # the node as it was, for "updated" and "removed"


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    id: int
    text: str
    author: str
    comment: str
    created: datetime
