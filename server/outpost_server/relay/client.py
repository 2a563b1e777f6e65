"""One registered DERP connection as the relay sees it: identity and send queues.

The relay core never writes to a socket. It puts work on a connection's
bounded queues and calls one of its hooks; the connection's writer (in `net/`)
drains them with `Relay.take_frames`. `wake` means "write soon" (the writer may
coalesce many wakes into one write); `flush`, used on the hot path once per
read and when a queue is full, means "write now if the socket can take it", so
that the caller can see the queue emptied before it decides to drop. Queue policy follows derper
(TS:derp/derpserver/derpserver.go `sendPkt`, `pktQueue`): 32 data + 32 disco
packets, and when a queue is full its oldest packet is dropped so fresh ones
get through. Packets wait already encoded as RecvPacket frames, so a write is
one join of queued bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from ..keys import NodePublic
from ..proto.derp import (
    RECV_PACKET_PREFIX_BYTES,
    ClientInfo,
    PeerGoneReason,
    encode_peer_gone,
    encode_pong,
    encode_recv_packet,
)
from .limiter import TokenBucket

SEND_QUEUE_DEPTH: Final = 32  # packets; derpserver defaultPerClientSendQueueDepth
# PeerGone notices pending for one client. derper leaves this uncapped (bounded by
# the peers it heard from); we cap it so a storm of departures cannot grow memory.
MAX_PENDING_PEER_GONE: Final = 4096
# Control frames (PeerPresent/PeerGone for mesh watchers, Health, Restarting) pending
# for one connection. A watcher gets one frame per connected client when it starts
# watching, so its cap is large; a watcher that still overflows is disconnected and
# re-floods on reconnect (derper gives each watcher an unbounded channel instead).
MAX_PENDING_CONTROL: Final = 16
MAX_PENDING_CONTROL_WATCHER: Final = 1 << 17
NOT_HERE_PER_SECOND: Final = 1.0  # derpserver peerGoneLim: rate.Every(time.Second)
NOT_HERE_BURST: Final = 3  # derpserver peerGoneLim burst
WRITE_BATCH_BYTES: Final = 256 * 1024  # most frame bytes handed to the writer per wake
# Destinations a sender has recently delivered to, remembered so the PeerGone
# bookkeeping (`sentTo`) is updated once per (sender, destination connection)
# rather than per packet. A cache: cleared when full, so a sender spraying keys
# costs at most this many entries.
MAX_SENT_TO_CACHE: Final = 1024

DISCO_MAGIC: Final = "TS💬".encode()  # 54 53 f0 9f 92 ac, TS:disco/disco.go
DISCO_MIN_BYTES: Final = 62  # magic 6 + disco key 32 + nonce 24 (disco.LooksLikeDiscoWrapper)


def looks_like_disco(payload: bytes) -> bool:
    return len(payload) >= DISCO_MIN_BYTES and payload[: len(DISCO_MAGIC)] == DISCO_MAGIC


Packet = bytes  # an encoded RecvPacket frame: header, source key, payload


class ClientConn:
    """A registered connection. Mutated only by the relay and its writer."""

    __slots__ = (
        "_close",
        "_flush",
        "_wake",
        "closed",
        "conn_id",
        "control",
        "control_limit",
        "data_queue",
        "disco_queue",
        "info",
        "is_mesh_peer",
        "key",
        "not_here_limiter",
        "peer_gone",
        "pong",
        "preferred",
        "queue_depth",
        "recv_prefix",
        "remote",
        "sent_to_cache",
        "watching",
    )

    def __init__(
        self,
        conn_id: int,
        key: NodePublic,
        info: ClientInfo,
        *,
        is_mesh_peer: bool,
        wake: Callable[[], None],
        close: Callable[[], None],
        flush: Callable[[], None] | None = None,
        queue_depth: int = SEND_QUEUE_DEPTH,
        remote: str = "",
    ) -> None:
        self.conn_id = conn_id
        self.key = key
        self.info = info
        self.is_mesh_peer = is_mesh_peer
        self.remote = remote
        self.queue_depth = queue_depth
        self._wake = wake
        self._flush = flush or wake
        self._close = close
        self.data_queue: deque[Packet] = deque()
        self.disco_queue: deque[Packet] = deque()
        self.peer_gone: deque[tuple[NodePublic, PeerGoneReason]] = deque()
        self.pong: bytes | None = None
        self.control: deque[bytes] = deque()  # encoded control frames, sent before packets
        self.control_limit = MAX_PENDING_CONTROL
        self.watching = False  # a mesh peer that sent WatchConns
        self.preferred = False
        self.closed = False
        self.not_here_limiter = TokenBucket(NOT_HERE_PER_SECOND, NOT_HERE_BURST)
        # raw destination key -> the connection this one last delivered to (see MAX_SENT_TO_CACHE)
        self.sent_to_cache: dict[bytes, ClientConn] = {}
        # (payload bytes, RecvPacket prefix) last built for packets from this
        # connection: WireGuard traffic repeats a few sizes, so most reuse it.
        self.recv_prefix: tuple[int, bytes] = (-1, b"")

    def __repr__(self) -> str:
        return f"ClientConn(#{self.conn_id} {self.key.short()} {self.remote})"

    def wake(self) -> None:
        """Work is queued: have the writer send it soon."""
        if not self.closed:
            self._wake()

    def flush(self) -> None:
        """Have the writer send what is queued now, if its socket can take it."""
        if not self.closed:
            self._flush()

    def close(self) -> None:
        """Ask the network side to close this connection (idempotent)."""
        if not self.closed:
            self.closed = True
            self._close()

    def enqueue_packet(self, src: NodePublic, payload: bytes) -> Packet | None:
        """Queue a packet; returns the packet dropped from the head to make room, if any.

        A full queue is first offered to the writer (`flush`), which may empty
        it at once if the socket can take bytes; only then is the oldest dropped.
        """
        q = self.disco_queue if looks_like_disco(payload) else self.data_queue
        if len(q) >= self.queue_depth:
            self.flush()
        dropped = q.popleft() if len(q) >= self.queue_depth else None
        q.append(encode_recv_packet(src, payload))
        self.wake()
        return dropped

    def enqueue_peer_gone(self, peer: NodePublic, reason: PeerGoneReason) -> bool:
        if len(self.peer_gone) >= MAX_PENDING_PEER_GONE:
            return False
        self.peer_gone.append((peer, reason))
        self.wake()
        return True

    def enqueue_control(self, frame: bytes) -> bool:
        """Queue an encoded control frame; False (nothing queued) when the cap is reached."""
        if len(self.control) >= self.control_limit:
            return False
        self.control.append(frame)
        self.wake()
        return True

    def set_pong(self, data: bytes) -> bool:
        """One pending pong at most: a client pinging faster than we write is ignored."""
        if self.pong is not None:
            return False
        self.pong = data
        self.wake()
        return True

    def has_pending(self) -> bool:
        return bool(
            self.pong is not None
            or self.control
            or self.peer_gone
            or self.disco_queue
            or self.data_queue
        )

    def take_frames(self, max_bytes: int = WRITE_BATCH_BYTES) -> tuple[list[bytes], int, int]:
        """Encode pending work: (frames, packets taken, payload bytes taken).

        Order: pong, control frames and PeerGone first (small, time-sensitive), then
        disco, then data.
        At least one frame is returned if anything is pending.
        """
        q = self.data_queue
        if not (self.pong is not None or self.control or self.peer_gone or self.disco_queue):
            # the hot path: only data packets wait
            if not q:
                return [], 0, 0
            taken = sum(map(len, q))
            if taken <= max_bytes:
                frames = list(q)
                q.clear()
                return frames, len(frames), taken - len(frames) * RECV_PACKET_PREFIX_BYTES
        frames = []
        size = 0
        packets = 0
        payload_bytes = 0
        if self.pong is not None:
            frames.append(encode_pong(self.pong))
            size += len(frames[-1])
            self.pong = None
        while self.control and size < max_bytes:
            frames.append(self.control.popleft())
            size += len(frames[-1])
        while self.peer_gone and size < max_bytes:
            peer, reason = self.peer_gone.popleft()
            frames.append(encode_peer_gone(peer, reason))
            size += len(frames[-1])
        for q in (self.disco_queue, self.data_queue):
            if q and size + (taken := sum(map(len, q))) <= max_bytes:  # usual: take it all
                n = len(q)
                frames += q
                q.clear()
                size += taken
                packets += n
                payload_bytes += taken - n * RECV_PACKET_PREFIX_BYTES
                continue
            while q and (size < max_bytes or not frames):
                frame = q.popleft()
                frames.append(frame)
                size += len(frame)
                packets += 1
                payload_bytes += len(frame) - RECV_PACKET_PREFIX_BYTES
        return frames, packets, payload_bytes

    def discard_queues(self) -> list[Packet]:
        """Empty the packet queues (connection gone); returns what was dropped."""
        dropped = list(self.disco_queue) + list(self.data_queue)
        self.disco_queue.clear()
        self.data_queue.clear()
        self.peer_gone.clear()
        self.control.clear()
        self.pong = None
        return dropped
