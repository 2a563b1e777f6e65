"""DERP wire protocol, server side, sans-IO.

Theory of operation
-------------------
DERP is a stream of frames `[type:1][length:4 BE][payload:length]`
(TS:derp/derp.go). After the HTTP upgrade the server speaks first:

    server -> ServerKey   magic "DERP🔑" + 32-byte server public key
    client -> ClientInfo  32-byte client node key + NaCl box(JSON) sealed to the server
    server -> ServerInfo  NaCl box({"version":2}) sealed to the client
    ... steady state: SendPacket / Ping / NotePreferred from the client,
        RecvPacket / KeepAlive / Pong / PeerGone from the server.

`FrameDecoder` turns bytes into frames incrementally: a partial frame just waits
for more bytes; a declared length above the per-type limit raises `FramingError`
before any payload is buffered, so a peer can never make us hold more than one
bounded frame. Frames of types we do not know are skipped without buffering.
`FrameDecoder.scan` is the relay's hot path: whole frames of one chosen type
(SendPacket) that lie inside the chunk just read are not copied out one by one
but reported as a `FrameRun` of offsets into that chunk; only a frame split
across reads is buffered (and still bounded by its type's limit).

`ServerConnection` is the per-connection state machine. It knows nothing about
sockets, clocks or routing: bytes in, typed events out (`receive_data`; or
`receive_batch`, the same events except that consecutive SendPackets come as
one `SendPackets` run, which the relay routes without an object per packet).
The first frame must be a ClientInfo that opens with the server key; it yields
`ClientHello`, after which the caller decides admission and calls
`accept(nonce)` to get the ServerInfo frame (or `refuse()`). Mesh-only frames
are refused unless the ClientInfo carried the configured mesh key. Every
malformed input raises a `ProtocolError` subclass and nothing else.

Encoders for every server->client frame are plain functions; the client->server
encoders exist for tests and for a future mesh client.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from nacl.exceptions import CryptoError
from nacl.public import Box
from nacl.public import PrivateKey as NaclPrivateKey
from nacl.public import PublicKey as NaclPublicKey

from ..errors import FramingError, LocalProtocolError, ProtocolError
from ..keys import KEY_BYTES, NodePublic, PrivateKey

# --- constants (TS:derp/derp.go unless noted) -------------------------------------------------

PROTOCOL_VERSION: Final = 2
MAGIC: Final = "DERP🔑".encode()  # 44 45 52 50 f0 9f 94 91
FRAME_HEADER_BYTES: Final = 5  # 1 type byte + 4-byte big-endian length
NONCE_BYTES: Final = 24  # NaCl box nonce
BOX_OVERHEAD_BYTES: Final = 16  # Poly1305 tag
PING_DATA_BYTES: Final = 8

MAX_PACKET_BYTES: Final = 64 << 10  # derp.MaxPacketSize: relayed payload, excluding keys/header
MAX_CLIENT_INFO_BYTES: Final = 256 * 1024  # derpserver recvClientKey cap (JSON-exhaustion guard)
MIN_CLIENT_INFO_BYTES: Final = KEY_BYTES + NONCE_BYTES  # recvClientKey "short client info"
MAX_PING_BYTES: Final = 1000  # derpserver handleFramePing "ping body too large"
MAX_UNKNOWN_FRAME_BYTES: Final = MAX_PACKET_BYTES + KEY_BYTES  # derpserver maxUnknownFrameLen
MAX_CLIENT_READ_FRAME_BYTES: Final = 1 << 20  # derp_client.go recvTimeout: client rejects > 1 MiB
MAX_WRITE_FRAME_BYTES: Final = 10 << 20  # derp.WriteFrame refuses larger frames
MAX_APP_NAME_CHARS: Final = 256  # ClientInfo.AppName: informative only; bound what we keep
PEER_PRESENT_BYTES: Final = KEY_BYTES + 16 + 2 + 1  # derpserver peerPresentFrameLen = 51
MAX_HEALTH_BYTES: Final = 4096  # our own cap on the Health problem text we emit


class FrameType(enum.IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class PeerGoneReason(enum.IntEnum):
    DISCONNECTED = 0x00  # peer's last connection to this region went away
    NOT_HERE = 0x01  # server does not know the destination key
    MESH_CONN_BROKE = 0xF0  # synthesised by mesh watchers; never on the wire


class PeerPresentFlags(enum.IntFlag):
    IS_REGULAR = 1 << 0
    IS_MESH_PEER = 1 << 1
    IS_PROBER = 1 << 2
    NOT_IDEAL = 1 << 3


_HEADER = struct.Struct(">BI")


def _name(frame_type: int) -> str:
    try:
        return FrameType(frame_type).name
    except ValueError:
        return f"0x{frame_type:02x}"


# --- incremental decoder ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame of a type the reader buffers."""

    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SkippedFrame:
    """A frame of a type the reader does not buffer; its payload is discarded."""

    type: int
    length: int


@dataclass(slots=True)  # not frozen: built once per read, frozen init costs more
class FrameRun:
    """Consecutive complete frames of one type, left in place in `data`.

    Frame i spans `data[starts[i]:ends[i]]`, header included; its payload starts
    at `starts[i] + FRAME_HEADER_BYTES`.
    """

    type: int
    data: bytes
    starts: list[int]
    ends: list[int]


LimitFn = Callable[[int], int | None]
"""Given a frame type: the largest payload to buffer, or None to skip the frame.
May raise `FramingError` to refuse the type outright."""


class FrameDecoder:
    """Incremental DERP frame reader. Feed bytes, then pull frames until None."""

    __slots__ = ("_buf", "_limit_for", "_pending", "_skip_remaining", "_unknown_limit")

    def __init__(self, limit_for: LimitFn, *, unknown_limit: int = MAX_UNKNOWN_FRAME_BYTES) -> None:
        self._limit_for = limit_for
        self._unknown_limit = unknown_limit
        self._buf = bytearray()
        self._pending: tuple[int, int] | None = None  # (type, length) of a header already read
        self._skip_remaining = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._skip_remaining:
            n = min(self._skip_remaining, len(data))
            self._skip_remaining -= n
            data = data[n:]
        self._buf += data

    def _partial_need(self) -> int:
        """Bytes still needed to finish the header, frame or skip in progress (0: none)."""
        if self._skip_remaining:
            return self._skip_remaining
        if self._pending is not None:
            return self._pending[1] - len(self._buf)
        if self._buf:
            return FRAME_HEADER_BYTES - len(self._buf)
        return 0

    def scan(
        self,
        data: bytes,
        run: tuple[int, int, int],
        out: list[Frame | SkippedFrame | FrameRun],
    ) -> None:
        """Feed `data` and append every frame it completes to `out`, in order.

        `run` is (type, min, max): frames of that type with a payload of min..max
        bytes that lie wholly inside `data` come as `FrameRun`s (no copy);
        everything else (other types, such a frame of another size, a frame that
        began in an earlier read) comes exactly as `next_frame` would return it.
        If a frame is refused, the frames before it are in `out` when
        `FramingError` is raised. The caller must not change what `limit_for`
        answers for the run type while a scan could see it, and max must not
        exceed that limit.
        """
        run_type, run_min, run_max = run
        n = len(data)
        off = 0
        # Finish whatever an earlier read left half done, feeding only its bytes.
        if self._buf or self._pending is not None or self._skip_remaining:
            while off < n and (need := self._partial_need()):
                take = min(need, n - off)
                self.feed(data[off : off + take])
                off += take
                while (f := self.next_frame()) is not None:
                    out.append(f)
        header = _HEADER.unpack_from
        starts: list[int] = []
        ends: list[int] = []
        try:
            while n - off >= FRAME_HEADER_BYTES:
                frame_type, length = header(data, off)
                end = off + FRAME_HEADER_BYTES + length
                if frame_type == run_type and run_min <= length <= run_max:
                    if end > n:
                        break
                    starts.append(off)
                    ends.append(end)
                    off = end
                    continue
                limit = self._limit_for(frame_type)  # may refuse the type outright
                if limit is None:
                    if length > self._unknown_limit:
                        raise FramingError(
                            f"frame {_name(frame_type)} of {length} bytes exceeds "
                            f"{self._unknown_limit}"
                        )
                elif length > limit:
                    raise FramingError(
                        f"frame {_name(frame_type)} of {length} bytes exceeds {limit}"
                    )
                elif end > n:
                    break  # header checked; the rest is buffered below
                if starts:
                    out.append(FrameRun(run_type, data, starts, ends))
                    starts, ends = [], []
                if limit is None:
                    out.append(SkippedFrame(frame_type, length))
                    if end > n:
                        self._skip_remaining = end - n
                        return
                else:
                    out.append(Frame(frame_type, data[off + FRAME_HEADER_BYTES : end]))
                off = end
        finally:
            if starts:
                out.append(FrameRun(run_type, data, starts, ends))
        if off < n:
            # The start of a frame (header checked above if complete): hand it to
            # the buffered path, which holds at most one frame of its type's limit.
            self.feed(data[off:])
            while (f := self.next_frame()) is not None:  # pragma: no cover - defensive
                out.append(f)

    def next_frame(self) -> Frame | SkippedFrame | None:
        while True:
            if self._skip_remaining:
                n = min(self._skip_remaining, len(self._buf))
                del self._buf[:n]
                self._skip_remaining -= n
                if self._skip_remaining:
                    return None
            if self._pending is None:
                if len(self._buf) < FRAME_HEADER_BYTES:
                    return None
                frame_type, length = _HEADER.unpack_from(self._buf, 0)
                del self._buf[:FRAME_HEADER_BYTES]
                limit = self._limit_for(frame_type)
                if limit is None:
                    if length > self._unknown_limit:
                        raise FramingError(
                            f"frame {_name(frame_type)} of {length} bytes exceeds "
                            f"{self._unknown_limit}"
                        )
                    self._skip_remaining = length
                    if length:
                        n = min(length, len(self._buf))
                        del self._buf[:n]
                        self._skip_remaining -= n
                    return SkippedFrame(frame_type, length)
                if length > limit:
                    raise FramingError(
                        f"frame {_name(frame_type)} of {length} bytes exceeds {limit}"
                    )
                self._pending = (frame_type, length)
            frame_type, length = self._pending
            if len(self._buf) < length:
                return None
            payload = bytes(self._buf[:length])
            del self._buf[:length]
            self._pending = None
            return Frame(frame_type, payload)


def client_read_limit(frame_type: int) -> int:
    """What an official client accepts from a server: any frame up to 1 MiB."""
    return MAX_CLIENT_READ_FRAME_BYTES


# --- encoders ---------------------------------------------------------------------------------


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    if not 0 <= frame_type <= 0xFF:
        raise LocalProtocolError("frame type out of range")
    if len(payload) > MAX_WRITE_FRAME_BYTES:
        raise LocalProtocolError(f"frame of {len(payload)} bytes is too large to write")
    return _HEADER.pack(frame_type, len(payload)) + payload


def _seal(private: PrivateKey, peer: NodePublic, message: bytes, nonce: bytes) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise LocalProtocolError("NaCl nonce must be 24 bytes")
    box = Box(NaclPrivateKey(private.secret_bytes()), NaclPublicKey(peer.raw))
    return bytes(box.encrypt(message, nonce))  # nonce || ciphertext, as key.SealTo


def _open(private: PrivateKey, peer_raw: bytes, sealed: bytes, what: str) -> bytes:
    if len(sealed) < NONCE_BYTES + BOX_OVERHEAD_BYTES:
        raise ProtocolError(f"{what}: sealed box of {len(sealed)} bytes is too short")
    try:
        box = Box(NaclPrivateKey(private.secret_bytes()), NaclPublicKey(peer_raw))
        return bytes(box.decrypt(sealed[NONCE_BYTES:], sealed[:NONCE_BYTES]))
    except (CryptoError, ValueError, TypeError):
        raise ProtocolError(f"{what}: cannot open sealed box") from None


def encode_server_key(server: NodePublic) -> bytes:
    return encode_frame(FrameType.SERVER_KEY, MAGIC + server.raw)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """ServerInfo JSON (TS:derp/derp.go). Non-zero token bucket makes clients drop excess sends."""

    version: int = PROTOCOL_VERSION
    token_bucket_bytes_per_second: int = 0
    token_bucket_bytes_burst: int = 0

    def to_json(self) -> bytes:
        doc: dict[str, int] = {}
        if self.version:
            doc["version"] = self.version
        if self.token_bucket_bytes_per_second:
            doc["TokenBucketBytesPerSecond"] = self.token_bucket_bytes_per_second
        if self.token_bucket_bytes_burst:
            doc["TokenBucketBytesBurst"] = self.token_bucket_bytes_burst
        return json.dumps(doc, separators=(",", ":")).encode()


def encode_server_info(
    server_key: PrivateKey, client: NodePublic, info: ServerInfo, nonce: bytes
) -> bytes:
    return encode_frame(FrameType.SERVER_INFO, _seal(server_key, client, info.to_json(), nonce))


def encode_recv_packet(src: NodePublic, payload: bytes) -> bytes:
    if len(payload) > MAX_PACKET_BYTES:
        raise LocalProtocolError("relayed packet exceeds MAX_PACKET_BYTES")
    return encode_frame(FrameType.RECV_PACKET, src.raw + payload)


RECV_PACKET_PREFIX_BYTES: Final = FRAME_HEADER_BYTES + KEY_BYTES


def recv_packet_prefix(src: NodePublic, payload_bytes: int) -> bytes:
    """Header and source key of a RecvPacket frame: prefix + payload is the frame.

    The relay's hot path builds frames as `prefix + payload` so that the payload
    is copied once, straight out of the bytes the sender's SendPacket came in.
    """
    if not 0 <= payload_bytes <= MAX_PACKET_BYTES:
        raise LocalProtocolError("relayed packet exceeds MAX_PACKET_BYTES")
    return _HEADER.pack(FrameType.RECV_PACKET, KEY_BYTES + payload_bytes) + src.raw


def encode_keep_alive() -> bytes:
    return encode_frame(FrameType.KEEP_ALIVE)


def encode_peer_gone(peer: NodePublic, reason: PeerGoneReason) -> bytes:
    return encode_frame(FrameType.PEER_GONE, peer.raw + bytes([reason]))


def encode_peer_present(
    peer: NodePublic,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    flags: PeerPresentFlags,
) -> bytes:
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError("port out of range")
    ip16 = (
        ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed).packed
        if isinstance(ip, ipaddress.IPv4Address)
        else ip.packed
    )
    return encode_frame(
        FrameType.PEER_PRESENT, peer.raw + ip16 + struct.pack(">HB", port, int(flags) & 0xFF)
    )


def encode_pong(data: bytes) -> bytes:
    if len(data) != PING_DATA_BYTES:
        raise LocalProtocolError("pong data must be 8 bytes")
    return encode_frame(FrameType.PONG, data)


def encode_health(problem: str) -> bytes:
    """Health frame: empty text means healthy."""
    raw = problem.encode()
    if len(raw) > MAX_HEALTH_BYTES:
        raise LocalProtocolError("health text too long")
    return encode_frame(FrameType.HEALTH, raw)


def encode_restarting(reconnect_in_ms: int, try_for_ms: int) -> bytes:
    return encode_frame(FrameType.RESTARTING, struct.pack(">II", reconnect_in_ms, try_for_ms))


# client -> server (tests and the future mesh client)


def encode_client_info(
    client_key: PrivateKey, server: NodePublic, info: ClientInfo, nonce: bytes
) -> bytes:
    sealed = _seal(client_key, server, info.to_json(), nonce)
    return encode_frame(FrameType.CLIENT_INFO, client_key.public_raw + sealed)


def encode_send_packet(dst: NodePublic, payload: bytes) -> bytes:
    if len(payload) > MAX_PACKET_BYTES:
        raise LocalProtocolError("packet exceeds MAX_PACKET_BYTES")
    return encode_frame(FrameType.SEND_PACKET, dst.raw + payload)


def encode_forward_packet(src: NodePublic, dst: NodePublic, payload: bytes) -> bytes:
    if len(payload) > MAX_PACKET_BYTES:
        raise LocalProtocolError("packet exceeds MAX_PACKET_BYTES")
    return encode_frame(FrameType.FORWARD_PACKET, src.raw + dst.raw + payload)


def encode_note_preferred(preferred: bool) -> bytes:
    return encode_frame(FrameType.NOTE_PREFERRED, b"\x01" if preferred else b"\x00")


def encode_ping(data: bytes) -> bytes:
    if len(data) != PING_DATA_BYTES:
        raise LocalProtocolError("ping data must be 8 bytes")
    return encode_frame(FrameType.PING, data)


def encode_watch_conns() -> bytes:
    return encode_frame(FrameType.WATCH_CONNS)


def encode_close_peer(target: NodePublic) -> bytes:
    return encode_frame(FrameType.CLOSE_PEER, target.raw)


# --- server->client payload parsers (client side; tests and future mesh) ----------------------


def parse_server_key(payload: bytes) -> NodePublic:
    """derp_client.go recvServerKey: >= 40 bytes, magic first, extra bytes allowed."""
    if len(payload) < len(MAGIC) + KEY_BYTES or payload[: len(MAGIC)] != MAGIC:
        raise FramingError("bad ServerKey frame")
    return NodePublic(payload[len(MAGIC) : len(MAGIC) + KEY_BYTES])


def open_server_info(client_key: PrivateKey, server: NodePublic, payload: bytes) -> ServerInfo:
    doc = _json_object(_open(client_key, server.raw, payload, "ServerInfo"), "ServerInfo")
    return ServerInfo(
        version=_get_int(doc, "version"),
        token_bucket_bytes_per_second=_get_int(doc, "TokenBucketBytesPerSecond"),
        token_bucket_bytes_burst=_get_int(doc, "TokenBucketBytesBurst"),
    )


def parse_recv_packet(payload: bytes) -> tuple[NodePublic, bytes]:
    if len(payload) < KEY_BYTES:
        raise FramingError("short RecvPacket frame")
    return NodePublic(payload[:KEY_BYTES]), payload[KEY_BYTES:]


def parse_peer_gone(payload: bytes) -> tuple[NodePublic, PeerGoneReason]:
    if len(payload) < KEY_BYTES:
        raise FramingError("short PeerGone frame")
    reason = payload[KEY_BYTES] if len(payload) > KEY_BYTES else 0
    try:
        return NodePublic(payload[:KEY_BYTES]), PeerGoneReason(reason)
    except ValueError:
        raise FramingError(f"unknown PeerGone reason {reason}") from None


def parse_peer_present(
    payload: bytes,
) -> tuple[NodePublic, ipaddress.IPv4Address | ipaddress.IPv6Address, int, PeerPresentFlags]:
    if len(payload) < PEER_PRESENT_BYTES:
        raise FramingError("short PeerPresent frame")
    ip6 = ipaddress.IPv6Address(payload[KEY_BYTES : KEY_BYTES + 16])
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ip6.ipv4_mapped or ip6
    port, flags = struct.unpack_from(">HB", payload, KEY_BYTES + 16)
    return NodePublic(payload[:KEY_BYTES]), ip, port, PeerPresentFlags(flags)


def parse_restarting(payload: bytes) -> tuple[int, int]:
    if len(payload) < 8:
        raise FramingError("short Restarting frame")
    reconnect_in, try_for = struct.unpack_from(">II", payload, 0)
    return int(reconnect_in), int(try_for)


# --- ClientInfo -------------------------------------------------------------------------------

MESH_KEY_BYTES: Final = 32  # key.DERPMesh: 32 bytes as 64 hex digits
_INT64_MAX: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """ClientInfo JSON (TS:derp/derp_client.go).

    tailscaled sends exactly {"version":2,"CanAckPings":true}.
    """

    version: int = 0
    can_ack_pings: bool = False
    mesh_key: bytes | None = None
    is_prober: bool = False
    app_name: str = ""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {}
        if self.mesh_key is not None:
            doc["meshKey"] = self.mesh_key.hex()
        if self.version:
            doc["version"] = self.version
        doc["CanAckPings"] = self.can_ack_pings
        if self.is_prober:
            doc["IsProber"] = True
        if self.app_name:
            doc["AppName"] = self.app_name
        return json.dumps(doc, separators=(",", ":")).encode()


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(f"{what}: not JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what}: JSON is not an object")
    # Go's encoding/json matches keys case-insensitively; the last duplicate wins.
    return {str(k).lower(): v for k, v in doc.items()}


def _get_int(doc: dict[str, Any], key: str) -> int:
    v = doc.get(key.lower())
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not -_INT64_MAX - 1 <= v <= _INT64_MAX:
        raise ProtocolError(f"{key} must be an integer")
    return v


def _get_bool(doc: dict[str, Any], key: str) -> bool:
    v = doc.get(key.lower())
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ProtocolError(f"{key} must be a boolean")
    return v


def parse_client_info_json(raw: bytes) -> ClientInfo:
    doc = _json_object(raw, "ClientInfo")
    mesh_key: bytes | None = None
    mk = doc.get("meshkey")
    if mk is not None:
        if not isinstance(mk, str) or len(mk) != 2 * MESH_KEY_BYTES:
            raise ProtocolError("ClientInfo: meshKey must be 64 hex digits")
        try:
            mesh_key = bytes.fromhex(mk)
        except ValueError:
            raise ProtocolError("ClientInfo: meshKey is not hex") from None
        if mesh_key == bytes(MESH_KEY_BYTES):
            mesh_key = None  # omitzero: the zero key means "no mesh key"
    app_name = doc.get("appname")
    if app_name is None:
        app_name = ""
    if not isinstance(app_name, str) or len(app_name) > MAX_APP_NAME_CHARS:
        raise ProtocolError("ClientInfo: bad AppName")
    return ClientInfo(
        version=_get_int(doc, "version"),
        can_ack_pings=_get_bool(doc, "CanAckPings"),
        mesh_key=mesh_key,
        is_prober=_get_bool(doc, "IsProber"),
        app_name=app_name,
    )


def open_client_info(server_key: PrivateKey, payload: bytes) -> tuple[NodePublic, ClientInfo]:
    """ClientInfo frame payload: client key || nonce || box(JSON) sealed to the server."""
    if len(payload) < MIN_CLIENT_INFO_BYTES:
        raise FramingError(f"short ClientInfo frame ({len(payload)} bytes)")
    if len(payload) > MAX_CLIENT_INFO_BYTES:
        raise FramingError(f"long ClientInfo frame ({len(payload)} bytes)")
    client_raw = payload[:KEY_BYTES]
    plaintext = _open(server_key, client_raw, payload[KEY_BYTES:], "ClientInfo")
    return NodePublic(client_raw), parse_client_info_json(plaintext)


# --- server connection state machine ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientHello:
    """ClientInfo opened and valid; the caller must now accept() or refuse()."""

    key: NodePublic
    info: ClientInfo
    is_mesh_peer: bool


@dataclass(frozen=True, slots=True)
class SendPacket:
    dst: NodePublic
    payload: bytes


@dataclass(slots=True)  # not frozen: built once per read, frozen init costs more
class SendPackets:
    """Consecutive SendPacket frames from one read, as offsets into its bytes.

    Frame i is `data[starts[i]:ends[i]]`: 5-byte header, 32-byte destination
    key, payload. Each has already been checked to be a well-formed SendPacket.
    """

    data: bytes
    starts: list[int]
    ends: list[int]

    def __len__(self) -> int:
        return len(self.starts)

    def packets(self) -> list[SendPacket]:
        """The same packets as `SendPacket` events (tests and slow paths)."""
        d = self.data
        k = FRAME_HEADER_BYTES + KEY_BYTES
        return [
            SendPacket(NodePublic(d[s + FRAME_HEADER_BYTES : s + k]), d[s + k : e])
            for s, e in zip(self.starts, self.ends, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class ForwardPacket:
    """Mesh only: a packet another region server relays for src."""

    src: NodePublic
    dst: NodePublic
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes  # the first 8 bytes, echoed in the Pong


@dataclass(frozen=True, slots=True)
class NotePreferred:
    preferred: bool


@dataclass(frozen=True, slots=True)
class WatchConns:
    """Mesh only: subscribe to PeerPresent / PeerGone for local clients."""


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """Mesh only: close every connection of target."""

    target: NodePublic


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    frame_type: int
    length: int


DerpEvent = (
    ClientHello
    | SendPacket
    | ForwardPacket
    | Ping
    | NotePreferred
    | WatchConns
    | ClosePeer
    | UnknownFrame
)

# Largest payload the server buffers per client->server frame type once connected.
_STEADY_LIMITS: Final[dict[int, int]] = {
    FrameType.SEND_PACKET: KEY_BYTES + MAX_PACKET_BYTES,
    FrameType.FORWARD_PACKET: 2 * KEY_BYTES + MAX_PACKET_BYTES,
    FrameType.NOTE_PREFERRED: 1,  # derpserver: length must be exactly 1
    FrameType.WATCH_CONNS: 0,  # derpserver: length must be 0
    FrameType.CLOSE_PEER: KEY_BYTES,  # derpserver: exactly one key
    FrameType.PING: MAX_PING_BYTES,
}
# (type, min, max payload) of the frames receive_batch leaves in place as runs
_SEND_RUN: Final = (int(FrameType.SEND_PACKET), KEY_BYTES, _STEADY_LIMITS[FrameType.SEND_PACKET])
_MESH_ONLY: Final = frozenset(
    {FrameType.FORWARD_PACKET, FrameType.WATCH_CONNS, FrameType.CLOSE_PEER}
)


class ConnState(enum.Enum):
    AWAIT_CLIENT_INFO = "await-client-info"
    AWAIT_ADMISSION = "await-admission"
    ESTABLISHED = "established"
    CLOSED = "closed"


class ServerConnection:
    """Server side of one DERP connection, from ServerKey to close."""

    def __init__(self, server_key: PrivateKey, *, mesh_key: bytes | None = None) -> None:
        if mesh_key is not None and len(mesh_key) != MESH_KEY_BYTES:
            raise LocalProtocolError("mesh key must be 32 bytes")
        self._server_key = server_key
        self._mesh_key = mesh_key
        self._decoder = FrameDecoder(self._limit_for)
        self.state = ConnState.AWAIT_CLIENT_INFO
        self.client: NodePublic | None = None
        self.info: ClientInfo | None = None
        self.is_mesh_peer = False

    @property
    def server_public(self) -> NodePublic:
        return NodePublic(self._server_key.public_raw)

    def server_key_frame(self) -> bytes:
        """The first frame, sent right after the upgrade."""
        return encode_server_key(self.server_public)

    def _limit_for(self, frame_type: int) -> int | None:
        if self.state is ConnState.AWAIT_CLIENT_INFO:
            if frame_type != FrameType.CLIENT_INFO:
                raise FramingError(f"expected ClientInfo first, got frame {_name(frame_type)}")
            return MAX_CLIENT_INFO_BYTES
        limit = _STEADY_LIMITS.get(frame_type)
        if limit is not None and frame_type in _MESH_ONLY and not self.is_mesh_peer:
            raise FramingError(f"frame {_name(frame_type)} needs mesh permission")
        return limit

    def receive_data(self, data: bytes) -> list[DerpEvent]:
        """Feed bytes from the client; return the events they complete."""
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("connection is closed")
        events: list[DerpEvent] = []
        try:
            self._decoder.feed(data)
            while (frame := self._decoder.next_frame()) is not None:
                events.append(self._handle(frame))
        except ProtocolError:
            self.state = ConnState.CLOSED
            raise
        return events

    def receive_batch(
        self, data: bytes, out: list[DerpEvent | SendPackets] | None = None
    ) -> list[DerpEvent | SendPackets]:
        """Like `receive_data`, but consecutive SendPackets come as one `SendPackets`.

        Once established this is the relay's per-read entry point: whole
        SendPacket frames stay in `data` and are not turned into objects here.
        Events are appended to `out` (returned); if a frame is malformed, the
        events of the frames before it are in `out` when the error is raised, so
        a caller can still deliver them, as derper would have.
        """
        events: list[DerpEvent | SendPackets] = [] if out is None else out
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("connection is closed")
        if self.state is not ConnState.ESTABLISHED:
            events += self.receive_data(data)
            return events
        items: list[Frame | SkippedFrame | FrameRun] = []
        error: ProtocolError | None = None
        try:
            self._decoder.scan(data, _SEND_RUN, items)
        except ProtocolError as exc:
            error = exc
        try:
            for item in items:
                if isinstance(item, FrameRun):
                    events.append(SendPackets(item.data, item.starts, item.ends))
                else:
                    events.append(self._handle(item))
            if error is not None:
                raise error
        except ProtocolError:
            self.state = ConnState.CLOSED
            raise
        return events

    def _handle(self, frame: Frame | SkippedFrame) -> DerpEvent:
        if isinstance(frame, SkippedFrame):
            return UnknownFrame(frame.type, frame.length)
        if self.state is ConnState.AWAIT_CLIENT_INFO:
            return self._hello(frame.payload)
        p = frame.payload
        t = frame.type
        if t == FrameType.SEND_PACKET:
            if len(p) < KEY_BYTES:
                raise FramingError("short SendPacket frame")
            return SendPacket(NodePublic(p[:KEY_BYTES]), p[KEY_BYTES:])
        if t == FrameType.PING:
            if len(p) < PING_DATA_BYTES:
                raise FramingError(f"short Ping frame ({len(p)} bytes)")
            return Ping(p[:PING_DATA_BYTES])
        if t == FrameType.NOTE_PREFERRED:
            if len(p) != 1:
                raise FramingError("NotePreferred frame must be 1 byte")
            return NotePreferred(p[0] != 0)
        if t == FrameType.FORWARD_PACKET:
            if len(p) < 2 * KEY_BYTES:
                raise FramingError("short ForwardPacket frame")
            return ForwardPacket(
                NodePublic(p[:KEY_BYTES]), NodePublic(p[KEY_BYTES : 2 * KEY_BYTES]), p[64:]
            )
        if t == FrameType.WATCH_CONNS:
            return WatchConns()
        if t == FrameType.CLOSE_PEER:
            if len(p) != KEY_BYTES:
                raise FramingError("ClosePeer frame must be one key")
            return ClosePeer(NodePublic(p))
        # unreachable: the decoder only buffers types listed in _STEADY_LIMITS
        raise LocalProtocolError(f"decoder buffered unexpected frame {_name(t)}")

    def _hello(self, payload: bytes) -> ClientHello:
        key, info = open_client_info(self._server_key, payload)
        self.client = key
        self.info = info
        self.is_mesh_peer = (
            self._mesh_key is not None
            and info.mesh_key is not None
            and hmac.compare_digest(self._mesh_key, info.mesh_key)
        )
        self.state = ConnState.AWAIT_ADMISSION
        return ClientHello(key, info, self.is_mesh_peer)

    def accept(self, nonce: bytes, info: ServerInfo | None = None) -> bytes:
        """Admit the client: returns the sealed ServerInfo frame to send."""
        if self.state is not ConnState.AWAIT_ADMISSION or self.client is None:
            raise LocalProtocolError("accept() without a pending ClientInfo")
        self.state = ConnState.ESTABLISHED
        return encode_server_info(self._server_key, self.client, info or ServerInfo(), nonce)

    def refuse(self) -> None:
        """Admission refused: the caller closes the stream without sending anything."""
        self.state = ConnState.CLOSED
