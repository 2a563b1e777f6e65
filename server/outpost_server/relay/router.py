"""The relay core: who is connected, and where each packet goes.

Pure Python, no sockets, no clock (callers pass `now`). The asyncio adapter in
`net/derp.py` drives it: `admit` + `register` after the ClientInfo, `handle` for
every event the connection's state machine yields, `take_frames` from the
connection's writer, `unregister` when the stream ends.

Rules (TS:derp/derpserver/derpserver.go, summarised in
docs/reference/derp-stun-offline.md §2.5-2.6):

* Every connection is accepted into its key's set; the newest becomes active,
  and after that whichever connection last sent a frame is active
  (`lastWriterIsActive`). Only the active one receives packets; the others stay
  open. If the active one leaves and two or more remain, none is active (packets
  drop as `dup_client`) until one of them sends.
* SendPacket(dst) becomes RecvPacket(src) on dst's active connection, on its
  disco or data queue. A read's worth of SendPackets arrives as one
  `SendPackets` run and is routed in one loop (`_route_run`): destinations are
  looked up by their raw key bytes, each frame is built as a cached
  header + payload, counters are added once per run, and each destination is
  flushed once per run (or when its queue fills, so that a writable
  destination is written before anything is dropped). Delivering a packet
  from X to C subscribes C to X's departure: when X's last connection leaves,
  C gets PeerGone(X, Disconnected).
* Unknown destination: drop; if the payload is disco, reply PeerGone(dst,
  NotHere), rate-limited per sending connection (1/s, burst 3).
* Admission: a hook decides, per node key, at ClientInfo. No hook means nobody
  is admitted (fail closed). Mesh peers (matching mesh key) bypass it, as in
  derper `verifyClient`.

Meshing (derper's, §2.8): a mesh peer that sends WatchConns becomes a
*watcher*: it gets PeerPresent for every key connected here, then PeerPresent
for each new connection and PeerGone(Disconnected) when a key's last local
connection closes. In the other direction, our own outbound mesh links
(`net/derpmesh.py`) report the keys present on the other server with
`mesh_peer_present` / `mesh_peer_gone` / `mesh_link_down`; a SendPacket for a
key not connected here but present on a peer is handed to that link as
ForwardPacket (oldest link first). A ForwardPacket received from a peer is
delivered locally and never forwarded again (one hop).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import LocalProtocolError
from ..keys import NodePublic, PrivateKey
from ..proto.derp import (
    RECV_PACKET_PREFIX_BYTES,
    ClientHello,
    ClosePeer,
    DerpEvent,
    ForwardPacket,
    NotePreferred,
    PeerGoneReason,
    PeerPresentFlags,
    Ping,
    SendPacket,
    SendPackets,
    ServerConnection,
    ServerInfo,
    UnknownFrame,
    WatchConns,
    encode_health,
    encode_peer_gone,
    encode_peer_present,
    encode_restarting,
    recv_packet_prefix,
)
from .client import (
    DISCO_MAGIC,
    DISCO_MIN_BYTES,
    MAX_SENT_TO_CACHE,
    SEND_QUEUE_DEPTH,
    WRITE_BATCH_BYTES,
    ClientConn,
    looks_like_disco,
)
from .stats import DropReason, RelayCounters, RelayStats

log = logging.getLogger(__name__)
_DISCO_FIRST_BYTE = DISCO_MAGIC[0]

AdmissionFn = Callable[[NodePublic], bool]


class MeshForwarder(Protocol):
    """An outbound mesh link as the relay core sees it."""

    name: str

    def forward(self, src: NodePublic, dst: NodePublic, payload: bytes) -> bool:
        """Queue ForwardPacket(src, dst, payload); False if the link cannot take it now."""
        ...


def _remote_addr(remote: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """'ip:port' or '[v6]:port' as net/derp.py records it; unknown -> 0.0.0.0:0."""
    host, _, port = remote.rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")), int(port)
    except ValueError:
        return ipaddress.IPv4Address(0), 0


@dataclass(slots=True)
class _KeySet:
    """All live connections of one node key, oldest first."""

    conns: list[ClientConn] = field(default_factory=list)
    active: ClientConn | None = None


class Relay:
    def __init__(
        self,
        private_key: PrivateKey,
        *,
        admission: AdmissionFn | None = None,
        mesh_key: bytes | None = None,
        queue_depth: int = SEND_QUEUE_DEPTH,
        server_info: ServerInfo | None = None,
    ) -> None:
        self._private_key = private_key
        self._public = NodePublic(private_key.public_raw)
        self._admission = admission
        self._mesh_key = mesh_key
        self._queue_depth = queue_depth
        self.server_info = server_info or ServerInfo()
        self.counters = RelayCounters()
        self._ids = itertools.count(1)
        self._keys: dict[NodePublic, _KeySet] = {}
        self._by_raw: dict[bytes, _KeySet] = {}  # the same key sets by raw key (hot path)
        # src -> {dst -> conn_id of dst that received from src}  (derper `sentTo`)
        self._sent_to: dict[NodePublic, dict[NodePublic, int]] = {}
        # dst -> {src}: reverse index so a departed dst is purged from _sent_to
        self._received_from: dict[NodePublic, set[NodePublic]] = {}
        self._watchers: dict[int, ClientConn] = {}  # conn_id -> mesh peer watching us
        # key -> links of mesh peers that have it connected, oldest first (derper multiForwarder)
        self._mesh_routes: dict[NodePublic, list[MeshForwarder]] = {}

    # --- configuration -------------------------------------------------------------------------

    @property
    def public_key(self) -> NodePublic:
        return self._public

    def set_admission(self, fn: AdmissionFn | None) -> None:
        """Install the per-key admission check (None: admit nobody but mesh peers)."""
        self._admission = fn

    def new_session(self) -> ServerConnection:
        """A fresh protocol state machine for an upgraded connection."""
        return ServerConnection(self._private_key, mesh_key=self._mesh_key)

    # --- connection lifecycle ------------------------------------------------------------------

    def admit(self, hello: ClientHello) -> bool:
        if hello.is_mesh_peer:
            return True
        fn = self._admission
        allowed = False
        if fn is not None:
            try:
                allowed = bool(fn(hello.key))
            except Exception:
                log.exception("DERP admission hook failed for %s", hello.key.short())
                self.counters.admission_errors += 1
                allowed = False
        if not allowed:
            self.counters.connections_refused += 1
            log.info("DERP client %s refused by admission", hello.key.short())
        return allowed

    def register(
        self,
        hello: ClientHello,
        *,
        wake: Callable[[], None],
        close: Callable[[], None],
        flush: Callable[[], None] | None = None,
        remote: str = "",
    ) -> ClientConn:
        """Add an admitted connection. `wake`, `flush` and `close` are its writer's
        hooks (see relay/client.py); without `flush`, `wake` serves for both."""
        conn = ClientConn(
            next(self._ids),
            hello.key,
            hello.info,
            is_mesh_peer=hello.is_mesh_peer,
            wake=wake,
            close=close,
            flush=flush,
            queue_depth=self._queue_depth,
            remote=remote,
        )
        ks = self._keys.get(hello.key)
        if ks is None:
            ks = self._keys[hello.key] = self._by_raw[hello.key.raw] = _KeySet()
        ks.conns.append(conn)
        ks.active = conn  # newest connection wins
        self.counters.connections_accepted += 1
        if self._watchers and not conn.is_mesh_peer:  # no frame is built when nobody watches
            self._tell_watchers(self._present_frame(conn))
        return conn

    def unregister(self, conn: ClientConn) -> None:
        """The connection is gone (idempotent)."""
        ks = self._keys.get(conn.key)
        conn.closed = True
        self._watchers.pop(conn.conn_id, None)
        if ks is None or conn not in ks.conns:
            return
        ks.conns.remove(conn)
        dropped = conn.discard_queues()
        if dropped:
            self.counters.drop(DropReason.GONE_DISCONNECTED, len(dropped))
        if not ks.conns:
            del self._keys[conn.key]
            del self._by_raw[conn.key.raw]
            if self._watchers and not conn.is_mesh_peer:
                self._tell_watchers(encode_peer_gone(conn.key, PeerGoneReason.DISCONNECTED))
            if conn.key not in self._mesh_routes:  # still reachable through a peer: not gone
                self._peer_gone_from_region(conn.key)
        elif len(ks.conns) == 1:
            ks.active = ks.conns[0]  # back to a single connection: un-dup it
        elif ks.active is conn:
            ks.active = None  # 2+ remain: the next one to speak becomes active

    def disconnect_key(self, key: NodePublic) -> int:
        """Close every connection of `key` (node deleted or expired). Returns how many."""
        ks = self._keys.get(key)
        if ks is None:
            return 0
        conns = list(ks.conns)
        for conn in conns:
            conn.close()
            self.unregister(conn)
        self.counters.keys_disconnected += len(conns)
        return len(conns)

    def is_connected(self, key: NodePublic) -> bool:
        return key in self._keys

    # --- steady state --------------------------------------------------------------------------

    def handle(self, conn: ClientConn, event: DerpEvent | SendPackets, now: float) -> None:
        """Apply one event from `conn`'s state machine. `now` is monotonic seconds."""
        if conn.closed:
            return
        self._note_activity(conn)
        if isinstance(event, SendPackets):
            self._route_run(conn, event, now)
        elif isinstance(event, SendPacket):
            self.counters.packets_received += 1
            self.counters.bytes_received += len(event.payload)
            if looks_like_disco(event.payload):
                self.counters.disco_packets_received += 1
            self._route(conn, conn.key, event.dst, event.payload, now, forwarded=False)
        elif isinstance(event, Ping):
            self.counters.pings_received += 1
            if conn.set_pong(event.data):
                self.counters.pongs_queued += 1
        elif isinstance(event, NotePreferred):
            conn.preferred = event.preferred
        elif isinstance(event, UnknownFrame):
            self.counters.unknown_frames += 1
        elif isinstance(event, ForwardPacket):
            self.counters.packets_forwarded_in += 1
            self._route(conn, event.src, event.dst, event.payload, now, forwarded=True)
        elif isinstance(event, ClosePeer):
            log.info("mesh peer %s closes %s", conn.key.short(), event.target.short())
            self.disconnect_key(event.target)
        elif isinstance(event, WatchConns):
            self._add_watcher(conn)
        elif isinstance(event, ClientHello):
            raise LocalProtocolError("ClientHello goes to admit()/register(), not handle()")

    def take_frames(self, conn: ClientConn, max_bytes: int = WRITE_BATCH_BYTES) -> list[bytes]:
        """Frames the writer of `conn` should send now (counted as relayed)."""
        frames, packets, payload_bytes = conn.take_frames(max_bytes)
        self.counters.packets_relayed += packets
        self.counters.bytes_relayed += payload_bytes
        return frames

    def _note_activity(self, conn: ClientConn) -> None:
        ks = self._by_raw.get(conn.key.raw)  # bytes cache their hash; NodePublic does not
        if ks is not None and len(ks.conns) > 1:
            ks.active = conn  # lastWriterIsActive

    def _route(
        self,
        sender: ClientConn,
        src: NodePublic,
        dst: NodePublic,
        payload: bytes,
        now: float,
        *,
        forwarded: bool,
    ) -> None:
        ks = self._keys.get(dst)
        if ks is not None and ks.active is not None:
            target = ks.active
            dropped = target.enqueue_packet(src, payload)
            if dropped is not None:
                self.counters.drop(DropReason.QUEUE_HEAD)
            self._sent_to.setdefault(src, {})[dst] = target.conn_id
            self._received_from.setdefault(dst, set()).add(src)
            return
        if ks is not None:
            self.counters.drop(DropReason.DUP_CLIENT)
            return
        if not forwarded and self._forward_via_mesh(src, dst, payload):
            return
        self.counters.drop(DropReason.UNKNOWN_DEST_ON_FWD if forwarded else DropReason.UNKNOWN_DEST)
        if looks_like_disco(payload) and sender.not_here_limiter.allow(now):
            self._queue_peer_gone(sender, dst, PeerGoneReason.NOT_HERE)

    def _route_run(self, sender: ClientConn, run: SendPackets, now: float) -> None:
        """`_route` for a run of SendPackets from `sender`, without per-packet objects.

        Same outcome as routing each packet in turn through `_route`; only the
        destinations that are not simply "active connection here" take that path.
        """
        data = run.data
        mv = memoryview(data)
        by_raw = self._by_raw
        seen = sender.sent_to_cache
        src = sender.key
        k = RECV_PACKET_PREFIX_BYTES
        key_at = k - len(src.raw)  # destination key offset in a SendPacket frame
        prefix_len, prefix = sender.recv_prefix
        disco = head_drops = 0
        touched: list[ClientConn] = []
        last: ClientConn | None = None
        starts, ends = run.starts, run.ends
        for s, e in zip(starts, ends, strict=True):
            p = s + k
            n = e - p
            # first byte first: WireGuard packets start 0x01-0x04, so most stop here
            is_disco = (
                n >= DISCO_MIN_BYTES
                and data[p] == _DISCO_FIRST_BYTE
                and data.startswith(DISCO_MAGIC, p)
            )
            if is_disco:
                disco += 1
            dst = data[s + key_at : p]
            ks = by_raw.get(dst)
            target = ks.active if ks is not None else None
            if target is None:
                self._route(sender, src, NodePublic(dst), data[p:e], now, forwarded=False)
                continue
            if n != prefix_len:
                prefix_len, prefix = n, recv_packet_prefix(src, n)
            q = target.disco_queue if is_disco else target.data_queue
            if len(q) >= target.queue_depth:
                target.flush()  # a writable destination empties its queues here
                if len(q) >= target.queue_depth:
                    q.popleft()
                    head_drops += 1
            q.append(prefix + mv[p:e])
            if target is not last:
                last = target
                if target not in touched:
                    touched.append(target)
                if seen.get(dst) is not target:
                    self._note_sent(sender, dst, target)
        sender.recv_prefix = (prefix_len, prefix)
        c = self.counters
        c.packets_received += len(starts)
        c.bytes_received += sum(ends) - sum(starts) - k * len(starts)
        c.disco_packets_received += disco
        if head_drops:
            c.drop(DropReason.QUEUE_HEAD, head_drops)
        for t in touched:
            t.flush()

    def _note_sent(self, sender: ClientConn, dst: bytes, target: ClientConn) -> None:
        """Record that `sender`'s key delivered to `target` (derper sentTo), once per pair."""
        seen = sender.sent_to_cache
        if len(seen) >= MAX_SENT_TO_CACHE:
            seen.clear()
        seen[dst] = target
        self._sent_to.setdefault(sender.key, {})[target.key] = target.conn_id
        self._received_from.setdefault(target.key, set()).add(sender.key)

    def _forward_via_mesh(self, src: NodePublic, dst: NodePublic, payload: bytes) -> bool:
        """Hand the packet to the oldest mesh link that has dst; True if dst is meshed at all."""
        links = self._mesh_routes.get(dst)
        if not links:
            return False
        if links[0].forward(src, dst, payload):
            self.counters.packets_forwarded_out += 1
        else:
            self.counters.drop(DropReason.MESH_QUEUE_FULL)
        return True

    # --- meshing -------------------------------------------------------------------------------

    def _present_frame(self, conn: ClientConn) -> bytes:
        ip, port = _remote_addr(conn.remote)
        return encode_peer_present(conn.key, ip, port, PeerPresentFlags.IS_REGULAR)

    def _tell_watchers(self, frame: bytes) -> None:
        for w in list(self._watchers.values()):
            if not w.enqueue_control(frame):
                self._watcher_overflow(w)

    def _watcher_overflow(self, w: ClientConn) -> None:
        log.warning(
            "mesh watcher %s fell behind; disconnecting it (it re-floods on reconnect)",
            w.key.short(),
        )
        self.counters.watcher_overflows += 1
        self._watchers.pop(w.conn_id, None)
        w.close()

    def _add_watcher(self, conn: ClientConn) -> None:
        if conn.key == self._public:
            return  # our own mesh link dialled ourselves (derper addWatcher ignores it too)
        if conn.watching:
            return
        from .client import MAX_PENDING_CONTROL_WATCHER  # noqa: PLC0415

        conn.watching = True
        conn.control_limit = MAX_PENDING_CONTROL_WATCHER
        self._watchers[conn.conn_id] = conn
        log.info("mesh peer %s watches our %d clients", conn.key.short(), len(self._keys))
        for ks in self._keys.values():
            c = ks.active or ks.conns[-1]
            if c.is_mesh_peer:
                continue
            if not conn.enqueue_control(self._present_frame(c)):
                self._watcher_overflow(conn)
                return

    def mesh_peer_present(self, link: MeshForwarder, key: NodePublic) -> None:
        """Our link to a peer learned that `key` is connected there."""
        if key == self._public:
            return
        links = self._mesh_routes.setdefault(key, [])
        if link not in links:
            links.append(link)

    def mesh_peer_gone(self, link: MeshForwarder, key: NodePublic) -> None:
        links = self._mesh_routes.get(key)
        if links is None or link not in links:
            return
        links.remove(link)
        if not links:
            del self._mesh_routes[key]
            if key not in self._keys:  # neither here nor on any peer: gone from the region
                self._peer_gone_from_region(key)

    def mesh_link_down(self, link: MeshForwarder) -> int:
        """The link dropped: forget everything it taught us (relearned on reconnect)."""
        keys = [k for k, links in self._mesh_routes.items() if link in links]
        for k in keys:
            self.mesh_peer_gone(link, k)
        return len(keys)

    def mesh_keys(self) -> int:
        return len(self._mesh_routes)

    # --- graceful shutdown ----------------------------------------------------------------------

    def announce_restart(self, reconnect_in_ms: int, try_for_ms: int, problem: str = "") -> int:
        """Tell every client we are going away (Health text, then Restarting); returns how many."""
        n = 0
        frames = [encode_health(problem)] if problem else []
        frames.append(encode_restarting(reconnect_in_ms, try_for_ms))
        for ks in self._keys.values():
            for c in ks.conns:
                for f in frames:
                    c.enqueue_control(f)
                n += 1
        return n

    def _queue_peer_gone(self, conn: ClientConn, peer: NodePublic, reason: PeerGoneReason) -> None:
        if conn.enqueue_peer_gone(peer, reason):
            self.counters.peer_gone_queued += 1
        else:
            self.counters.drop(DropReason.PEER_GONE_OVERFLOW)

    def _peer_gone_from_region(self, key: NodePublic) -> None:
        """`key`'s last connection left: tell everyone who received from it."""
        for dst, conn_id in self._sent_to.pop(key, {}).items():
            srcs = self._received_from.get(dst)
            if srcs is not None:
                srcs.discard(key)
                if not srcs:
                    del self._received_from[dst]
            dks = self._keys.get(dst)
            if dks is None:
                continue
            for c in dks.conns:
                if c.conn_id == conn_id:
                    self._queue_peer_gone(c, key, PeerGoneReason.DISCONNECTED)
        # `key` as a destination is gone too: forget who sent to it.
        for src in self._received_from.pop(key, set()):
            dsts = self._sent_to.get(src)
            if dsts is not None:
                dsts.pop(key, None)
                if not dsts:
                    del self._sent_to[src]

    # --- observation ---------------------------------------------------------------------------

    def note_handshake_failure(self) -> None:
        self.counters.handshake_failures += 1

    def note_bad_frame(self) -> None:
        self.counters.bad_frames += 1

    def note_slow_client(self) -> None:
        self.counters.slow_clients_dropped += 1

    def note_keepalive(self) -> None:
        self.counters.keepalives_sent += 1

    def stats(self) -> RelayStats:
        c = self.counters
        conns = [conn for ks in self._keys.values() for conn in ks.conns]
        return RelayStats(
            connections_current=len(conns),
            keys_current=len(self._keys),
            home_connections=sum(1 for conn in conns if conn.preferred),
            mesh_connections=sum(1 for conn in conns if conn.is_mesh_peer),
            connections_accepted=c.connections_accepted,
            connections_refused=c.connections_refused,
            admission_errors=c.admission_errors,
            handshake_failures=c.handshake_failures,
            bad_frames=c.bad_frames,
            slow_clients_dropped=c.slow_clients_dropped,
            packets_received=c.packets_received,
            bytes_received=c.bytes_received,
            disco_packets_received=c.disco_packets_received,
            packets_relayed=c.packets_relayed,
            bytes_relayed=c.bytes_relayed,
            pings_received=c.pings_received,
            pongs_queued=c.pongs_queued,
            peer_gone_queued=c.peer_gone_queued,
            keepalives_sent=c.keepalives_sent,
            unknown_frames=c.unknown_frames,
            keys_disconnected=c.keys_disconnected,
            watchers=len(self._watchers),
            mesh_keys=len(self._mesh_routes),
            packets_forwarded_out=c.packets_forwarded_out,
            packets_forwarded_in=c.packets_forwarded_in,
            drops=dict(c.drops),
        )
