"""Relay counters, and the immutable snapshot the admin API reads.

Drop reasons mirror derper's metric labels (TS:derp/derpserver/derpserver.go
`dropReason*`) so operators can compare the two.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field


class DropReason(enum.StrEnum):
    UNKNOWN_DEST = "unknown_dest"  # no connection for the destination key
    UNKNOWN_DEST_ON_FWD = "unknown_dest_on_fwd"  # same, for a mesh-forwarded packet
    GONE_DISCONNECTED = "gone_disconnected"  # destination left before the write
    QUEUE_HEAD = "queue_head"  # destination queue full: oldest packet dropped
    DUP_CLIENT = "dup_client"  # key connected 2+ times and none is active
    PEER_GONE_OVERFLOW = "peer_gone_overflow"  # too many PeerGone notices pending
    MESH_QUEUE_FULL = "mesh_queue_full"  # the outbound mesh link could not take the packet


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Point-in-time copy of the relay counters (plain data, safe to serialise)."""

    connections_current: int
    keys_current: int
    home_connections: int  # connections whose client sent NotePreferred(true)
    mesh_connections: int
    connections_accepted: int
    connections_refused: int  # admission hook said no (or failed)
    admission_errors: int  # admission hook raised; counted in refused too
    handshake_failures: int  # bad or missing ClientInfo, handshake timeout
    bad_frames: int  # protocol errors after the handshake (connection closed)
    slow_clients_dropped: int  # a write did not finish within the write timeout
    packets_received: int
    bytes_received: int
    disco_packets_received: int
    packets_relayed: int  # handed to a destination's writer
    bytes_relayed: int
    pings_received: int
    pongs_queued: int
    peer_gone_queued: int
    keepalives_sent: int
    unknown_frames: int
    keys_disconnected: int  # connections closed by disconnect_key / ClosePeer
    watchers: int  # mesh peers receiving PeerPresent/PeerGone from us
    mesh_keys: int  # keys reachable through a mesh peer (not connected here)
    packets_forwarded_out: int  # sent on to a mesh peer as ForwardPacket
    packets_forwarded_in: int  # ForwardPacket from a mesh peer, delivered here
    drops: dict[str, int]


@dataclass(slots=True)
class RelayCounters:
    connections_accepted: int = 0
    connections_refused: int = 0
    admission_errors: int = 0
    handshake_failures: int = 0
    bad_frames: int = 0
    slow_clients_dropped: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    disco_packets_received: int = 0
    packets_relayed: int = 0
    bytes_relayed: int = 0
    pings_received: int = 0
    pongs_queued: int = 0
    peer_gone_queued: int = 0
    keepalives_sent: int = 0
    unknown_frames: int = 0
    keys_disconnected: int = 0
    packets_forwarded_out: int = 0
    packets_forwarded_in: int = 0
    watcher_overflows: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: DropReason, n: int = 1) -> None:
        self.drops[reason.value] += n
