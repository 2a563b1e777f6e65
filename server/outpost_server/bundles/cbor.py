"""Strict canonical CBOR: the subset of RFC 8949 that bundles and the audit chain use.

Why our own codec instead of cbor2: the decoder is fed bytes from removable
media, so it must refuse a CBOR bomb *before* allocating for it (a declared
length larger than the bytes that remain, a count of items that cannot fit,
nesting past a fixed depth, indefinite lengths), and it must accept exactly one
encoding per value so signatures and hashes over "the canonical bytes" mean one
thing. Both properties are easiest to prove for a hundred lines we own.

The subset (SPEC.md §3): unsigned and negative integers (-2**64 .. 2**64-1),
byte strings, UTF-8 text strings, arrays, maps with *text* keys, and the simple
values false/true/null. No tags, no floats, no indefinite lengths. Canonical =
RFC 8949 §4.2.1 core deterministic encoding: shortest argument encoding, map
keys sorted by the bytewise order of their encodings, no duplicate keys.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from ..errors import LocalProtocolError
from .errors import CBORError

Value = int | str | bytes | bool | None | list["Value"] | dict[str, "Value"]

DEFAULT_MAX_DEPTH = 8  # containers inside containers; every Outpost structure needs <= 8
DEFAULT_MAX_ITEMS = 1_000_000  # data items per document; bounds CPU on a hostile 64 MiB input
UINT64_MAX = 2**64 - 1  # CBOR's argument is at most 64 bits

_MAJOR_UINT, _MAJOR_NINT, _MAJOR_BYTES, _MAJOR_TEXT = 0, 1, 2, 3
_MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 4, 5, 6, 7
_SIMPLE_FALSE, _SIMPLE_TRUE, _SIMPLE_NULL = 20, 21, 22
_INDEFINITE = 31


def _head(major: int, arg: int) -> bytes:
    if arg < 24:
        return bytes([major << 5 | arg])
    if arg <= 0xFF:
        return bytes([major << 5 | 24, arg])
    if arg <= 0xFFFF:
        return bytes([major << 5 | 25]) + struct.pack(">H", arg)
    if arg <= 0xFFFFFFFF:
        return bytes([major << 5 | 26]) + struct.pack(">I", arg)
    return bytes([major << 5 | 27]) + struct.pack(">Q", arg)


def encode(value: object) -> bytes:
    """The one canonical encoding of `value`; unsupported types are a bug of the caller."""
    out = bytearray()
    _encode_into(out, value, 0)
    return bytes(out)


def _encode_into(out: bytearray, value: object, depth: int) -> None:
    if depth > 64:  # a cycle or absurd nesting is a caller bug, not input
        raise LocalProtocolError("CBOR encode: nesting too deep")
    if value is False:
        out.append(_MAJOR_SIMPLE << 5 | _SIMPLE_FALSE)
    elif value is True:
        out.append(_MAJOR_SIMPLE << 5 | _SIMPLE_TRUE)
    elif value is None:
        out.append(_MAJOR_SIMPLE << 5 | _SIMPLE_NULL)
    elif isinstance(value, int):
        if 0 <= value <= UINT64_MAX:
            out += _head(_MAJOR_UINT, value)
        elif -(2**64) <= value < 0:
            out += _head(_MAJOR_NINT, -1 - value)
        else:
            raise LocalProtocolError("CBOR encode: integer out of 64-bit range")
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out += _head(_MAJOR_BYTES, len(raw)) + raw
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += _head(_MAJOR_TEXT, len(raw)) + raw
    elif isinstance(value, Mapping):
        items: list[tuple[bytes, object]] = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise LocalProtocolError("CBOR encode: map keys must be text")
            items.append((encode(k), v))
        items.sort(key=lambda kv: kv[0])
        out += _head(_MAJOR_MAP, len(items))
        for k_raw, v in items:
            out += k_raw
            _encode_into(out, v, depth + 1)
    elif isinstance(value, Sequence):
        out += _head(_MAJOR_ARRAY, len(value))
        for v in value:
            _encode_into(out, v, depth + 1)
    else:
        raise LocalProtocolError(f"CBOR encode: unsupported type {type(value).__name__}")


def decode(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int = DEFAULT_MAX_ITEMS
) -> Value:
    """Decode exactly one canonical item filling all of `data`, or raise CBORError."""
    dec = _Decoder(data, max_depth, max_items)
    value = dec.item(0)
    if dec.pos != len(data):
        raise CBORError(f"{len(data) - dec.pos} trailing bytes after the CBOR item")
    return value


class _Decoder:
    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.max_depth = max_depth
        self.items_left = max_items

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        if n > self.remaining():
            raise CBORError(f"declared length {n} exceeds the {self.remaining()} bytes that remain")
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return raw

    def _head(self) -> tuple[int, int, int]:
        if self.remaining() < 1:
            raise CBORError("truncated: expected a data item")
        initial = self.data[self.pos]
        self.pos += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info <= 27:
            width = 1 << (info - 24)
            if self.remaining() < width:
                raise CBORError("truncated: integer argument cut short")
            arg = int.from_bytes(self._take(width), "big")
            # shortest form: an argument that fits a narrower encoding must use it
            floor = 24 if width == 1 else 1 << (4 * width)
            if arg < floor:
                raise CBORError("non-canonical: integer argument not in shortest form")
            return major, info, arg
        if info == _INDEFINITE:
            raise CBORError("indefinite-length items are not allowed")
        raise CBORError(f"reserved additional information value {info}")

    def item(self, depth: int) -> Value:
        self.items_left -= 1
        if self.items_left < 0:
            raise CBORError("too many data items")
        major, info, arg = self._head()
        if major == _MAJOR_UINT:
            return arg
        if major == _MAJOR_NINT:
            return -1 - arg
        if major == _MAJOR_BYTES:
            return self._take(arg)
        if major == _MAJOR_TEXT:
            try:
                return self._take(arg).decode("utf-8")
            except UnicodeDecodeError:
                raise CBORError("text string is not valid UTF-8") from None
        if major in (_MAJOR_ARRAY, _MAJOR_MAP):
            if depth + 1 > self.max_depth:
                raise CBORError(f"nesting deeper than {self.max_depth}")
            # every item takes at least one byte: refuse counts that cannot fit before looping
            per_entry = 2 if major == _MAJOR_MAP else 1
            if arg > self.remaining() // per_entry:
                raise CBORError(
                    f"declared count {arg} exceeds the {self.remaining()} bytes that remain"
                )
            if major == _MAJOR_ARRAY:
                return [self.item(depth + 1) for _ in range(arg)]
            return self._map(arg, depth + 1)
        if major == _MAJOR_TAG:
            raise CBORError("tags are not allowed")
        if info == _SIMPLE_FALSE:
            return False
        if info == _SIMPLE_TRUE:
            return True
        if info == _SIMPLE_NULL:
            return None
        raise CBORError("floats and other simple values are not allowed")

    def _map(self, count: int, depth: int) -> dict[str, Value]:
        out: dict[str, Value] = {}
        previous: bytes | None = None
        for _ in range(count):
            start = self.pos
            key = self.item(depth)
            if not isinstance(key, str):
                raise CBORError("map keys must be text strings")
            key_raw = bytes(self.data[start : self.pos])
            if previous is not None and key_raw <= previous:
                if key_raw == previous:
                    raise CBORError(f"duplicate map key {key!r}")
                raise CBORError("non-canonical: map keys not in sorted order")
            previous = key_raw
            out[key] = self.item(depth)
        return out
