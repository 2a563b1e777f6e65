"""ts2021 Noise transport, server (responder) side. Sans-IO.

Theory of operation
-------------------
A Tailscale client opens a control connection with `POST /ts2021`, carrying the
first Noise message (101 bytes) base64-encoded in `X-Tailscale-Handshake`. The
handshake is `Noise_IK_25519_ChaChaPoly_BLAKE2s`: the client already knows our
static key from `GET /key`, so one round trip authenticates both sides. We
answer with a 51-byte response message right after the HTTP 101 head; from
then on the byte stream is a sequence of records

    0x04 | uint16 BE ciphertext length | ChaCha20-Poly1305(ciphertext + tag)

with one key per direction and a nonce of 4 zero bytes followed by a
**big-endian** 64-bit counter (TS:control/controlbase/conn.go; the Noise spec
says little-endian, so a stock Noise library fails on the second record).

The prologue binds the client's protocol version (its capability version) into
the handshake hash: "Tailscale Control Protocol v<version>".

Nothing here touches sockets or clocks; randomness (the ephemeral key) is a
parameter. `net/noise_conn.py` drives these objects from asyncio.
Facts: shared/docs/reference/control-protocol.md §2.3-2.7.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import LocalProtocolError, NoiseError
from ..keys import KEY_BYTES, MachinePublic, PrivateKey

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE_PREFIX = b"Tailscale Control Protocol v"

MSG_TYPE_INITIATION = 1
MSG_TYPE_RESPONSE = 2
MSG_TYPE_ERROR = 3
MSG_TYPE_RECORD = 4

TAG_BYTES = 16  # Poly1305 tag
INITIATION_HEADER_BYTES = 5  # version u16 + type u8 + length u16 (messages.go initiationHeaderLen)
HEADER_BYTES = 3  # type u8 + length u16 for every other frame (messages.go headerLen)
INITIATION_PAYLOAD_BYTES = KEY_BYTES + (KEY_BYTES + TAG_BYTES) + TAG_BYTES  # 96
INITIATION_BYTES = INITIATION_HEADER_BYTES + INITIATION_PAYLOAD_BYTES  # 101
RESPONSE_PAYLOAD_BYTES = KEY_BYTES + TAG_BYTES  # 48
RESPONSE_BYTES = HEADER_BYTES + RESPONSE_PAYLOAD_BYTES  # 51
MAX_RECORD_BYTES = 4096  # controlbase maxMessageSize, header included
MAX_CIPHERTEXT_BYTES = MAX_RECORD_BYTES - HEADER_BYTES  # 4093
MAX_PLAINTEXT_BYTES = MAX_CIPHERTEXT_BYTES - TAG_BYTES  # 4077
MAX_ERROR_TEXT_BYTES = 64 * 1024  # error frames are truncated to 64 KiB by controlbase
MAX_NONCE = 2**64 - 1  # counter value 2^64-1 is "cipher exhausted"

_ZERO_NONCE = bytes(12)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise HKDF with HMAC-BLAKE2s, two outputs (RFC 5869 expand, info empty)."""
    prk = hmac.new(chaining_key, ikm, hashlib.blake2s).digest()
    out1 = hmac.new(prk, b"\x01", hashlib.blake2s).digest()
    out2 = hmac.new(prk, out1 + b"\x02", hashlib.blake2s).digest()
    return out1, out2


class _Symmetric:
    """The Noise SymmetricState, with the single-use handshake keys IK needs."""

    def __init__(self, version: int) -> None:
        self.h = _hash(PROTOCOL_NAME)
        self.ck = self.h
        self.mix_hash(PROLOGUE_PREFIX + str(version).encode())

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_dh(self, shared: bytes) -> bytes:
        self.ck, key = _hkdf2(self.ck, shared)
        return key

    def decrypt_and_hash(self, key: bytes, ciphertext: bytes) -> bytes:
        try:
            plaintext = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, self.h)
        except InvalidTag:
            raise NoiseError("handshake authentication failed") from None
        self.mix_hash(ciphertext)
        return plaintext

    def encrypt_and_hash(self, key: bytes, plaintext: bytes) -> bytes:
        ciphertext = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, self.h)
        self.mix_hash(ciphertext)
        return ciphertext


@dataclass(frozen=True, slots=True)
class Initiation:
    """A parsed (not yet authenticated) client initiation message."""

    version: int
    ephemeral: bytes
    encrypted_static: bytes
    tag: bytes


def parse_initiation(message: bytes) -> Initiation:
    """Check the framing of the 101-byte initiation, as controlbase.Server does."""
    if len(message) != INITIATION_BYTES:
        raise NoiseError(
            f"handshake initiation is {len(message)} bytes, expected {INITIATION_BYTES}"
        )
    version, msg_type, length = struct.unpack_from(">HBH", message, 0)
    if msg_type != MSG_TYPE_INITIATION:
        raise NoiseError(f"unexpected handshake message type {msg_type}, expected initiation")
    if length != INITIATION_PAYLOAD_BYTES:
        raise NoiseError(f"handshake initiation payload length {length}, expected 96")
    body = message[INITIATION_HEADER_BYTES:]
    return Initiation(
        version=version,
        ephemeral=body[:KEY_BYTES],
        encrypted_static=body[KEY_BYTES : 2 * KEY_BYTES + TAG_BYTES],
        tag=body[2 * KEY_BYTES + TAG_BYTES :],
    )


def error_frame(text: str) -> bytes:
    """An unauthenticated error frame (type 3), sent instead of a response."""
    data = text.encode("utf-8", "replace")[:MAX_ERROR_TEXT_BYTES]
    return struct.pack(">BH", MSG_TYPE_ERROR, min(len(data), 0xFFFF)) + data[:0xFFFF]


class _CipherState:
    """One direction of the transport: a key and a big-endian counter.

    Holds the key, not a `ChaCha20Poly1305` object: each of those keeps ~2.2 KiB
    of OpenSSL context outside Python's heap, two per connection that sits idle
    for hours, while building one costs ~1 us. `aead()` makes one for a batch
    of records (one `feed` or `seal` call).
    """

    __slots__ = ("_counter", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0

    def aead(self) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(self._key)

    def _next_nonce(self) -> bytes:
        if self._counter >= MAX_NONCE:
            raise NoiseError("cipher exhausted")
        nonce = b"\x00\x00\x00\x00" + self._counter.to_bytes(8, "big")
        self._counter += 1
        return nonce

    def seal(self, plaintext: bytes, aead: ChaCha20Poly1305 | None = None) -> bytes:
        return (aead or self.aead()).encrypt(self._next_nonce(), plaintext, None)

    def open(self, ciphertext: bytes, aead: ChaCha20Poly1305 | None = None) -> bytes:
        try:
            return (aead or self.aead()).decrypt(self._next_nonce(), ciphertext, None)
        except InvalidTag:
            raise NoiseError("record decryption failed") from None


class Transport:
    """The post-handshake record layer for one connection (server side).

    `feed(data)` takes raw bytes from the wire and returns the decrypted
    application bytes available so far; partial records wait in a buffer that
    can never exceed one record. `seal(data)` splits application bytes into
    records of at most MAX_PLAINTEXT_BYTES.
    """

    __slots__ = ("_buf", "_dead", "_rx", "_tx")

    def __init__(self, rx_key: bytes, tx_key: bytes) -> None:
        self._rx = _CipherState(rx_key)
        self._tx = _CipherState(tx_key)
        self._buf = bytearray()
        self._dead = False

    def feed(self, data: bytes) -> bytes:
        if self._dead:
            raise LocalProtocolError("transport already failed")
        self._buf += data
        out = bytearray()
        aead = None
        try:
            while len(self._buf) >= HEADER_BYTES:
                msg_type, length = struct.unpack_from(">BH", self._buf, 0)
                if msg_type != MSG_TYPE_RECORD:
                    raise NoiseError(f"unexpected message type {msg_type} after handshake")
                if length > MAX_CIPHERTEXT_BYTES:
                    raise NoiseError(
                        f"record of {length + HEADER_BYTES} bytes exceeds the "
                        f"{MAX_RECORD_BYTES}-byte limit"
                    )
                if length < TAG_BYTES:
                    raise NoiseError(f"record of {length} bytes is shorter than its tag")
                if len(self._buf) < HEADER_BYTES + length:
                    break
                ciphertext = bytes(self._buf[HEADER_BYTES : HEADER_BYTES + length])
                del self._buf[: HEADER_BYTES + length]
                aead = aead or self._rx.aead()
                out += self._rx.open(ciphertext, aead)
        except NoiseError:
            self._dead = True
            raise
        return bytes(out)

    def seal(self, data: bytes) -> bytes:
        out = bytearray()
        aead = self._tx.aead() if data else None
        for start in range(0, len(data), MAX_PLAINTEXT_BYTES):
            chunk = data[start : start + MAX_PLAINTEXT_BYTES]
            ciphertext = self._tx.seal(chunk, aead)
            out += struct.pack(">BH", MSG_TYPE_RECORD, len(ciphertext)) + ciphertext
        return bytes(out)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Result of a successful handshake."""

    response: bytes  # the 51-byte response message to write after the 101 head
    transport: Transport
    peer: MachinePublic  # the client's authenticated machine key
    version: int  # the client's protocol (= capability) version
    handshake_hash: bytes


def accept(static: PrivateKey, message: bytes, ephemeral: PrivateKey) -> Accepted:
    """Run the responder side of Noise IK over one initiation message.

    Raises NoiseError for malformed framing or failed authentication; the
    caller then sends `error_frame(str(err))` (framing) or just closes.
    """
    init = parse_initiation(message)
    sym = _Symmetric(init.version)
    sym.mix_hash(static.public_raw)  # pre-message <- s

    # -> e, es, s, ss
    sym.mix_hash(init.ephemeral)
    try:
        es = static.dh(init.ephemeral)
    except ValueError:
        raise NoiseError("invalid client ephemeral key") from None
    key = sym.mix_dh(es)
    client_static = sym.decrypt_and_hash(key, init.encrypted_static)
    try:
        ss = static.dh(client_static)
    except ValueError:
        raise NoiseError("invalid client machine key") from None
    key = sym.mix_dh(ss)
    sym.decrypt_and_hash(key, init.tag)

    # <- e, ee, se
    sym.mix_hash(ephemeral.public_raw)
    try:
        ee = ephemeral.dh(init.ephemeral)
        se = ephemeral.dh(client_static)
    except ValueError:
        raise NoiseError("invalid client key") from None
    sym.mix_dh(ee)
    key = sym.mix_dh(se)
    tag = sym.encrypt_and_hash(key, b"")
    response = (
        struct.pack(">BH", MSG_TYPE_RESPONSE, RESPONSE_PAYLOAD_BYTES) + ephemeral.public_raw + tag
    )

    k1, k2 = _hkdf2(sym.ck, b"")  # Split: client sends with k1, server with k2
    return Accepted(
        response=response,
        transport=Transport(rx_key=k1, tx_key=k2),
        peer=MachinePublic(client_static),
        version=init.version,
        handshake_hash=sym.h,
    )


class Initiator:
    """Client side of the handshake, for tests and the load harness only.

    Real clients are the proof of interoperability; this exists so that the
    server can be exercised in memory and under load.
    """

    def __init__(
        self, machine: PrivateKey, server_public: bytes, version: int, ephemeral: PrivateKey
    ) -> None:
        self._machine = machine
        self._server = server_public
        self._eph = ephemeral
        self.version = version
        self._sym = _Symmetric(version)
        self._sym.mix_hash(server_public)

    def initiation(self) -> bytes:
        sym = self._sym
        sym.mix_hash(self._eph.public_raw)
        key = sym.mix_dh(self._eph.dh(self._server))
        enc_static = sym.encrypt_and_hash(key, self._machine.public_raw)
        key = sym.mix_dh(self._machine.dh(self._server))
        tag = sym.encrypt_and_hash(key, b"")
        header = struct.pack(">HBH", self.version, MSG_TYPE_INITIATION, INITIATION_PAYLOAD_BYTES)
        return header + self._eph.public_raw + enc_static + tag

    def finish(self, response: bytes) -> Transport:
        """Consume the 51-byte response; returns a transport with client roles."""
        if len(response) < HEADER_BYTES:
            raise NoiseError("short handshake response")
        msg_type, length = struct.unpack_from(">BH", response, 0)
        if msg_type == MSG_TYPE_ERROR:
            text = response[HEADER_BYTES : HEADER_BYTES + length].decode("utf-8", "replace")
            raise NoiseError(f"server error: {text!r}")
        if msg_type != MSG_TYPE_RESPONSE or length != RESPONSE_PAYLOAD_BYTES:
            raise NoiseError("malformed handshake response")
        if len(response) != RESPONSE_BYTES:
            raise NoiseError("handshake response has the wrong size")
        server_eph = response[HEADER_BYTES : HEADER_BYTES + KEY_BYTES]
        sym = self._sym
        sym.mix_hash(server_eph)
        sym.mix_dh(self._eph.dh(server_eph))
        key = sym.mix_dh(self._machine.dh(server_eph))
        sym.decrypt_and_hash(key, response[HEADER_BYTES + KEY_BYTES :])
        k1, k2 = _hkdf2(sym.ck, b"")
        self.handshake_hash = sym.h
        return Transport(rx_key=k2, tx_key=k1)
