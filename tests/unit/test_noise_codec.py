"""Noise framing and record layer: bounds and error types under arbitrary input."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from outpost_server.errors import NoiseError
from outpost_server.keys import PrivateKey
from outpost_server.proto import noise

SERVER = PrivateKey(bytes(range(32)))


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_arbitrary_initiation_bytes_only_raise_noise_error(data: bytes) -> None:
    try:
        noise.accept(SERVER, data, PrivateKey(bytes(32 * [7])))
    except NoiseError:
        pass


@given(st.binary(min_size=96, max_size=96))
def test_well_framed_but_random_initiation_fails_authentication(body: bytes) -> None:
    msg = struct.pack(">HBH", 133, 1, 96) + body
    with pytest.raises(NoiseError):
        noise.accept(SERVER, msg, PrivateKey(bytes(32 * [7])))


@given(st.binary(max_size=5000))
@settings(max_examples=200)
def test_arbitrary_transport_bytes_only_raise_noise_error(data: bytes) -> None:
    t = noise.Transport(bytes(32), bytes(32))
    try:
        t.feed(data)
    except NoiseError:
        pass


def test_record_over_limit_is_refused_before_buffering() -> None:
    t = noise.Transport(bytes(32), bytes(32))
    with pytest.raises(NoiseError, match="exceeds the 4096-byte limit"):
        t.feed(struct.pack(">BH", noise.MSG_TYPE_RECORD, 4094))


def test_non_record_type_after_handshake_is_refused() -> None:
    t = noise.Transport(bytes(32), bytes(32))
    with pytest.raises(NoiseError, match="unexpected message type 2"):
        t.feed(b"\x02\x00\x10" + bytes(16))


def test_error_frame_carries_the_text() -> None:
    frame = noise.error_frame("bad")
    assert frame == b"\x03\x00\x03bad"


def test_idle_transport_holds_keys_not_openssl_contexts() -> None:
    """Each ChaCha20Poly1305 object keeps ~2.2 KiB of C memory: an idle
    connection holds only the keys, and records still round-trip."""
    server = noise.Transport(rx_key=bytes(range(32)), tx_key=bytes(32))
    client = noise.Transport(rx_key=bytes(32), tx_key=bytes(range(32)))
    for size in (0, 1, noise.MAX_PLAINTEXT_BYTES + 1, 3 * noise.MAX_PLAINTEXT_BYTES):
        data = bytes(i % 251 for i in range(size))
        assert server.feed(client.seal(data)) == data
        assert client.feed(server.seal(data)) == data
    for cipher in (server._rx, server._tx):
        held = [getattr(cipher, name) for name in cipher.__slots__]
        assert not any(isinstance(v, ChaCha20Poly1305) for v in held)
