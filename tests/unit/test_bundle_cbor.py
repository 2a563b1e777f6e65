"""The strict canonical CBOR codec: round trips, and only CBORError on hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outpost_server.bundles import cbor
from outpost_server.bundles.errors import BundleRejected, CBORError, Check
from outpost_server.bundles.format import Manifest, PayloadEntry, decode_manifest
from outpost_server.errors import ProtocolError

scalars = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.booleans()
    | st.none()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
manifests = st.builds(
    Manifest,
    kind=st.sampled_from(
        ["policy", "enrolment-keys", "trust-store", "ca-material", "audit-export"]
    ),
    appliance=ids,
    seq=st.integers(0, 2**63 - 1),
    created=st.integers(0, 2**39),
    expires=st.integers(2**39 + 1, 2**40),
    payloads=st.lists(
        st.builds(
            PayloadEntry,
            name=ids,
            size=st.integers(0, 2**26),
            sha256=st.binary(min_size=32, max_size=32),
        ),
        max_size=5,
        unique_by=lambda p: p.name,
    ).map(tuple),
)


@given(values)
def test_decode_of_encode_is_identity(v: object) -> None:
    assert cbor.decode(cbor.encode(v), max_depth=64) == v


@given(values)
def test_encoding_is_canonical_so_reencoding_a_decoded_value_gives_the_same_bytes(
    v: object,
) -> None:
    raw = cbor.encode(v)
    assert cbor.encode(cbor.decode(raw, max_depth=64)) == raw


@given(manifests)
def test_manifest_decode_of_encode_is_identity(m: Manifest) -> None:
    assert decode_manifest(m.to_cbor()) == m


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_the_protocol_error(data: bytes) -> None:
    try:
        decode_manifest(data)
    except BundleRejected as exc:
        assert isinstance(exc, ProtocolError)
        assert exc.check in (Check.MALFORMED_CBOR, Check.INVALID_MANIFEST)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("9f00ff", "malformed-cbor: indefinite-length items are not allowed"),
        ("5f4100ff", "malformed-cbor: indefinite-length items are not allowed"),
        (
            "5b4000000000000000",
            f"malformed-cbor: declared length {2**62} exceeds the 0 bytes that remain",
        ),
        (
            "9b00000000ffffffff",
            "malformed-cbor: non-canonical: integer argument not in shortest form",
        ),
        (
            "9a00100000",
            f"malformed-cbor: declared count {0x100000} exceeds the 0 bytes that remain",
        ),
        (
            "bafffffff0",
            f"malformed-cbor: declared count {0xFFFFFFF0} exceeds the 0 bytes that remain",
        ),
        ("1817", "malformed-cbor: non-canonical: integer argument not in shortest form"),
        ("a2616200616100", "malformed-cbor: non-canonical: map keys not in sorted order"),
        ("a2616100616100", "malformed-cbor: duplicate map key 'a'"),
        ("a10100", "malformed-cbor: map keys must be text strings"),
        ("c100", "malformed-cbor: tags are not allowed"),
        ("f93c00", "malformed-cbor: floats and other simple values are not allowed"),
        ("62c328", "malformed-cbor: text string is not valid UTF-8"),
        ("0000", "malformed-cbor: 1 trailing bytes after the CBOR item"),
        ("", "malformed-cbor: truncated: expected a data item"),
        ("19", "malformed-cbor: truncated: integer argument cut short"),
        ("1c", "malformed-cbor: reserved additional information value 28"),
    ],
)
def test_hostile_cbor_is_refused_with_its_reason(raw: str, message: str) -> None:
    with pytest.raises(CBORError) as exc:
        cbor.decode(bytes.fromhex(raw))
    assert str(exc.value) == message


def test_deep_nesting_is_refused_before_recursing_past_the_limit() -> None:
    with pytest.raises(CBORError, match="nesting deeper than 8"):
        cbor.decode(b"\x81" * 100_000 + b"\x00")


def test_item_count_limit_bounds_work_on_flat_input() -> None:
    with pytest.raises(CBORError, match="too many data items"):
        cbor.decode(b"\x99\x03\xe8" + b"\x00" * 1000, max_items=100)
