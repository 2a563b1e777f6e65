"""The bundle file: byte layout, manifest schema and signature block (SPEC.md §2-§5).

    offset  size  field
    0       8     magic  89 4F 50 42 0D 0A 1A 0A  ("\\x89OPB\\r\\n\\x1a\\n")
    8       1     format version, 0x01
    9       4     manifest length M, big-endian
    13      4     signature block length S, big-endian
    17      M     manifest: canonical CBOR map
    17+M    S     signature block: canonical CBOR array of [key_id, signature]
    17+M+S  ...   payloads, concatenated in manifest order, nothing after

Both lengths sit in the fixed header so a verifier bounds and slices the
manifest and signatures without reading a byte of payload, and checks every
signature over the raw manifest bytes before it decodes any CBOR at all.
Everything here is parsing and building only; trust decisions live in verify.py.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import cbor
from .errors import BundleRejected, CBORError, Check

MAGIC = (
    b"\x89OPB\r\n\x1a\n"  # high bit + CRLF + ^Z + LF: text-mode or 7-bit copies corrupt it visibly
)
FORMAT_VERSION = 1
HEADER = struct.Struct(">8sBII")  # magic, version, manifest length, signature block length
HEADER_BYTES = HEADER.size  # 17

MAX_BUNDLE_BYTES = (
    64 * 1024 * 1024
)  # largest expected payload is an audit export; read whole into RAM
MAX_MANIFEST_BYTES = 16 * 1024  # 64 payload entries of ~100 bytes plus the fixed fields, with room
MAX_SIGNATURE_BLOCK_BYTES = 2048  # 16 signatures of 78 bytes each plus CBOR heads
MAX_SIGNATURES = 16  # no kind needs more than a 16-of-N quorum
MAX_PAYLOADS = 64  # enrolment-key batches and CA chains are a handful of files
MANIFEST_MAX_DEPTH = 3  # map > payloads array > payload map; anything deeper is hostile
SIGNATURE_BLOCK_MAX_DEPTH = 2  # array > [key_id, signature]
MAX_ID_BYTES = 64  # names, appliance IDs: short printable identifiers
MAX_SEQ = 2**63 - 1  # stored in SQLite INTEGER by the applier
MAX_TIME = 2**40  # unix seconds, year ~36812: rejects garbage without a calendar
KEY_ID_BYTES = 8  # first 8 bytes of SHA-256(public key); unique within one trust store
ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
SHA256_BYTES = 32

# Signed bytes = SIGNATURE_CONTEXT || manifest bytes. The context keeps a bundle
# signature from ever being valid as any other Ed25519 message (e.g. an audit checkpoint).
SIGNATURE_CONTEXT = b"outpost-bundle-v1\x00"

# system-update: the new root, kernel and initrd travel beside the bundle and are
# bound by the digests in its system-update.json (outpost_appliance.sysupdate).
INBOUND_KINDS = frozenset({"enrolment-keys", "policy", "trust-store", "ca-material", "system-update"})
OUTBOUND_KINDS = frozenset({"audit-export", "node-inventory", "client-enrolment"})
ALL_KINDS = INBOUND_KINDS | OUTBOUND_KINDS

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MANIFEST_KEYS = frozenset({"kind", "appliance", "seq", "created", "expires", "payloads"})
_PAYLOAD_KEYS = frozenset({"name", "size", "sha256"})


def key_id_for(public_key: bytes) -> str:
    """The signer key id: hex of the first 8 bytes of SHA-256 over the raw public key."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES].hex()


@dataclass(frozen=True, slots=True)
class PayloadEntry:
    name: str
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Manifest:
    kind: str
    appliance: str
    seq: int
    created: int
    expires: int
    payloads: tuple[PayloadEntry, ...]

    @property
    def signer_set(self) -> str:
        """Sequence numbers are monotonic per signer set; a kind's signers form one set."""
        return self.kind

    def to_cbor(self) -> bytes:
        return cbor.encode(
            {
                "kind": self.kind,
                "appliance": self.appliance,
                "seq": self.seq,
                "created": self.created,
                "expires": self.expires,
                "payloads": [
                    {"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.payloads
                ],
            }
        )


@dataclass(frozen=True, slots=True)
class Signature:
    key_id: str  # hex, 16 digits
    signature: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """A bundle split at its header lengths; nothing inside has been decoded yet."""

    manifest_bytes: bytes
    signature_bytes: bytes
    payload_offset: int


def _invalid(detail: str) -> BundleRejected:
    return BundleRejected(Check.INVALID_MANIFEST, detail)


def parse_frame(data: bytes) -> Frame:
    """SPEC.md §6 checks 1-6: size, header, and that manifest and signatures are present."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleRejected(
            Check.TOO_LARGE, f"bundle is {len(data)} bytes, limit {MAX_BUNDLE_BYTES}"
        )
    if len(data) < HEADER_BYTES:
        raise BundleRejected(
            Check.TRUNCATED, f"header needs {HEADER_BYTES} bytes, file has {len(data)}"
        )
    magic, version, m_len, s_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BundleRejected(Check.BAD_MAGIC, "not an Outpost bundle")
    if version != FORMAT_VERSION:
        raise BundleRejected(
            Check.UNSUPPORTED_VERSION, f"format version {version}, expected {FORMAT_VERSION}"
        )
    if m_len > MAX_MANIFEST_BYTES:
        raise BundleRejected(
            Check.TOO_LARGE, f"manifest is {m_len} bytes, limit {MAX_MANIFEST_BYTES}"
        )
    if s_len > MAX_SIGNATURE_BLOCK_BYTES:
        raise BundleRejected(
            Check.TOO_LARGE, f"signature block is {s_len} bytes, limit {MAX_SIGNATURE_BLOCK_BYTES}"
        )
    if len(data) < HEADER_BYTES + m_len + s_len:
        raise BundleRejected(Check.TRUNCATED, "file ends inside the manifest or signature block")
    manifest_end = HEADER_BYTES + m_len
    return Frame(
        manifest_bytes=bytes(data[HEADER_BYTES:manifest_end]),
        signature_bytes=bytes(data[manifest_end : manifest_end + s_len]),
        payload_offset=manifest_end + s_len,
    )


def decode_signatures(raw: bytes) -> tuple[Signature, ...]:
    """The signature block: array of [key_id(8 bytes), signature(64 bytes)], key ids ascending."""
    try:
        value = cbor.decode(
            raw, max_depth=SIGNATURE_BLOCK_MAX_DEPTH, max_items=3 * MAX_SIGNATURES + 1
        )
    except CBORError as exc:
        raise BundleRejected(Check.INVALID_SIGNATURES, exc.detail) from None
    if not isinstance(value, list):
        raise BundleRejected(Check.INVALID_SIGNATURES, "signature block is not an array")
    if len(value) > MAX_SIGNATURES:
        raise BundleRejected(Check.INVALID_SIGNATURES, f"more than {MAX_SIGNATURES} signatures")
    out: list[Signature] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or not isinstance(item[1], bytes)
            or len(item[0]) != KEY_ID_BYTES
            or len(item[1]) != ED25519_SIGNATURE_BYTES
        ):
            raise BundleRejected(
                Check.INVALID_SIGNATURES, "entry is not [8-byte key id, 64-byte signature]"
            )
        sig = Signature(item[0].hex(), item[1])
        if out and sig.key_id <= out[-1].key_id:
            if sig.key_id == out[-1].key_id:
                raise BundleRejected(Check.INVALID_SIGNATURES, f"key {sig.key_id} signs twice")
            raise BundleRejected(Check.INVALID_SIGNATURES, "signatures not sorted by key id")
        out.append(sig)
    return tuple(out)


def encode_signatures(sigs: Sequence[Signature]) -> bytes:
    ordered = sorted(sigs, key=lambda s: s.key_id)
    return cbor.encode([[bytes.fromhex(s.key_id), s.signature] for s in ordered])


def _uint(m: Mapping[str, cbor.Value], key: str, limit: int) -> int:
    v = m[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
        raise _invalid(f"{key} must be an integer in 0..{limit}")
    return v


def _ident(m: Mapping[str, cbor.Value], key: str) -> str:
    v = m[key]
    if not isinstance(v, str) or not _ID_RE.fullmatch(v):
        raise _invalid(f"{key} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    return v


def decode_manifest(raw: bytes) -> Manifest:
    """SPEC.md §6 checks 11-12: canonical CBOR, then the manifest schema."""
    value = cbor.decode(raw, max_depth=MANIFEST_MAX_DEPTH, max_items=8 * MAX_PAYLOADS + 16)
    if not isinstance(value, dict):
        raise _invalid("manifest is not a map")
    if set(value) != _MANIFEST_KEYS:
        missing = sorted(_MANIFEST_KEYS - set(value))
        extra = sorted(set(value) - _MANIFEST_KEYS)
        raise _invalid(f"manifest keys wrong (missing {missing}, unknown {extra})")
    kind = value["kind"]
    if not isinstance(kind, str) or kind not in ALL_KINDS:
        raise _invalid("unknown kind")
    appliance = _ident(value, "appliance")
    seq = _uint(value, "seq", MAX_SEQ)
    created = _uint(value, "created", MAX_TIME)
    expires = _uint(value, "expires", MAX_TIME)
    if expires <= created:
        raise _invalid("expires must be after created")
    raw_payloads = value["payloads"]
    if not isinstance(raw_payloads, list) or len(raw_payloads) > MAX_PAYLOADS:
        raise _invalid(f"payloads must be an array of at most {MAX_PAYLOADS} entries")
    payloads: list[PayloadEntry] = []
    names: set[str] = set()
    for p in raw_payloads:
        if not isinstance(p, dict) or set(p) != _PAYLOAD_KEYS:
            raise _invalid("payload entry must be a map of exactly name, size, sha256")
        name = _ident(p, "name")
        if name in names:
            raise _invalid(f"duplicate payload name {name!r}")
        names.add(name)
        size = _uint(p, "size", MAX_BUNDLE_BYTES)
        digest = p["sha256"]
        if not isinstance(digest, bytes) or len(digest) != SHA256_BYTES:
            raise _invalid("sha256 must be 32 bytes")
        payloads.append(PayloadEntry(name, size, digest))
    return Manifest(kind, appliance, seq, created, expires, tuple(payloads))


def split_payloads(data: bytes, frame: Frame, manifest: Manifest) -> dict[str, bytes]:
    """Slice payloads by the manifest's sizes; the file must end exactly after the last."""
    declared = sum(p.size for p in manifest.payloads)
    available = len(data) - frame.payload_offset
    if available < declared:
        raise BundleRejected(
            Check.TRUNCATED, f"payloads declare {declared} bytes, file has {available}"
        )
    if available > declared:
        raise BundleRejected(
            Check.TRAILING_BYTES, f"{available - declared} bytes after the last payload"
        )
    out: dict[str, bytes] = {}
    pos = frame.payload_offset
    for p in manifest.payloads:
        out[p.name] = bytes(data[pos : pos + p.size])
        pos += p.size
    return out


def build(
    manifest: Manifest, payloads: Mapping[str, bytes], signatures: Sequence[Signature] = ()
) -> bytes:
    """Assemble a bundle; `payloads` must match the manifest (names, sizes, digests)."""
    for p in manifest.payloads:
        body = payloads[p.name]
        if len(body) != p.size or hashlib.sha256(body).digest() != p.sha256:
            raise ValueError(f"payload {p.name!r} does not match its manifest entry")
    return assemble(
        manifest.to_cbor(),
        encode_signatures(signatures),
        [payloads[p.name] for p in manifest.payloads],
    )


def assemble(manifest_bytes: bytes, signature_bytes: bytes, bodies: Sequence[bytes]) -> bytes:
    """Raw framing with no checks: also used to build deliberately broken test vectors."""
    head = HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes), len(signature_bytes))
    return head + manifest_bytes + signature_bytes + b"".join(bodies)


def manifest_for(  # noqa: PLR0917 - one argument per field
    kind: str, appliance: str, seq: int, created: int, expires: int, payloads: Mapping[str, bytes]
) -> Manifest:
    """A manifest describing `payloads` in the given order."""
    entries = tuple(
        PayloadEntry(n, len(b), hashlib.sha256(b).digest()) for n, b in payloads.items()
    )
    m = Manifest(kind, appliance, seq, created, expires, entries)
    decode_manifest(m.to_cbor())  # refuse to build what a verifier would reject
    return m


def signed_message(manifest_bytes: bytes) -> bytes:
    return SIGNATURE_CONTEXT + manifest_bytes
