"""Request-head parsing and map-message framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outpost_server.errors import FramingError, HTTPRequestError
from outpost_server.proto import http1, mapframe


def test_head_parses_and_leaves_following_bytes() -> None:
    raw = b"GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nDerp-Fast-Start: 1\r\n\r\n\x02\x00\x00"
    head, used = http1.parse_head(raw)  # type: ignore[misc]
    assert head.path == "/derp" and head.header("upgrade") == "DERP"
    assert raw[used:] == b"\x02\x00\x00"


def test_incomplete_head_waits() -> None:
    assert http1.parse_head(b"GET /key HTTP/1.1\r\nHost: x\r\n") is None


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        (b"GET\r\n\r\n", "malformed request line"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", "unsupported method"),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", "must be a path"),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "malformed header"),
        (b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", "not ASCII"),
    ],
)
def test_malformed_heads_name_the_problem(raw: bytes, msg: str) -> None:
    with pytest.raises(HTTPRequestError, match=msg):
        http1.parse_head(raw)


def test_oversized_head_is_431() -> None:
    with pytest.raises(HTTPRequestError) as exc:
        http1.parse_head(b"GET / HTTP/1.1\r\n" + b"a" * (http1.MAX_REQUEST_HEAD_BYTES + 10))
    assert exc.value.status == 431


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_arbitrary_heads_only_raise_http_request_error(data: bytes) -> None:
    try:
        http1.parse_head(data)
    except HTTPRequestError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=5), max_size=4), st.integers(1, 50))
@settings(max_examples=100)
def test_map_messages_round_trip_through_any_chunking(msgs: list[dict], step: int) -> None:  # type: ignore[type-arg]
    wire = b"".join(mapframe.encode(mapframe.dumps(m)) for m in msgs)
    dec = mapframe.Decoder()
    out = []
    for i in range(0, len(wire), step):
        out += dec.feed(wire[i : i + step])
    assert out == msgs


def test_keepalive_bytes_are_identical_each_time() -> None:
    assert mapframe.KEEPALIVE_MESSAGE == mapframe.encode(b'{"KeepAlive":true}')
    assert mapframe.KEEPALIVE_MESSAGE[4:8] == b"\x28\xb5\x2f\xfd"  # zstd magic: clients need zstd


@given(st.binary(max_size=200))
def test_arbitrary_map_bytes_only_raise_framing_error(data: bytes) -> None:
    try:
        mapframe.Decoder().feed(data)
    except FramingError:
        pass
