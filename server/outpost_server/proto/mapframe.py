"""Framing of `/machine/map` response messages. Sans-IO.

Each message on a map stream is a 4-byte **little-endian** length followed by
that many bytes of a zstd frame holding the JSON MapResponse
(TS:control/controlclient/direct.go decodeMsg). Clients 1.78-1.103 always ask
for zstd and have no uncompressed fallback, so we always compress.
Keep-alives are sent as byte-identical messages so the client's cache of the
compressed keep-alive (`keepAliveZ`) skips decompression.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson
import zstandard

from ..errors import FramingError

MAX_MAP_MESSAGE_BYTES = 64 * 1024 * 1024  # our own cap on one compressed message we decode
ZSTD_LEVEL = 1  # fastest: on map JSON (keys are random) as small as level 3 at half the CPU

_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_decompressor = zstandard.ZstdDecompressor()


# Pre-encoded JSON spliced into a message as is: a peer's JSON is encoded once
# per node revision and shared by every map that carries it.
Fragment = orjson.Fragment


def dumps(obj: Any) -> bytes:
    """Go-compatible compact JSON (no spaces, UTF-8). Integer map keys are
    written as strings, as Go's encoding/json does for map[int]T."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def fragment_list(parts: list[bytes]) -> Fragment:
    """A JSON array of pre-encoded items."""
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


def encode(payload_json: bytes) -> bytes:
    frame = _compressor.compress(payload_json)
    return struct.pack("<I", len(frame)) + frame


KEEPALIVE_MESSAGE = encode(b'{"KeepAlive":true}')


class Decoder:
    """Client-side incremental decoder (used by tests and the load harness)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= 4:
            (length,) = struct.unpack_from("<I", self._buf, 0)
            if length == 0 or length > MAX_MAP_MESSAGE_BYTES:
                raise FramingError(f"map message length {length} out of range")
            if len(self._buf) < 4 + length:
                break
            frame = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            try:
                raw = _decompressor.decompress(frame, max_output_size=MAX_MAP_MESSAGE_BYTES)
                msg = orjson.loads(raw)
            except (zstandard.ZstdError, orjson.JSONDecodeError) as exc:
                raise FramingError(f"undecodable map message: {exc}") from None
            if not isinstance(msg, dict):
                raise FramingError("map message is not a JSON object")
            out.append(msg)
        return out
