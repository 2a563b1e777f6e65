"""Backup file format, version 1: sans-IO encoding, sealing and stream encryption.

Theory of operation
-------------------
A backup is one file, written in a single pass and readable in a single pass:

    MAGIC (8) | VERSION (1) | stream header (24) | frame* | manifest | signature (64)
              | manifest length (u32 BE) | END_MAGIC (8)

* The body (everything before the manifest) is a tar archive, compressed with
  zstd, encrypted with libsodium's secretstream (XChaCha20-Poly1305) under a
  fresh random 32-byte file key. Each frame is `u32 BE length | ciphertext`;
  the last frame carries TAG_FINAL, so a body cut short at a frame boundary is
  detected, and each frame's additional data is the backup id, so frames cannot
  be moved between backups.
* The file key is never stored in clear. It is *sealed* to each recovery
  public key (X25519, libsodium sealed box: an ephemeral key per seal), and/or
  wrapped with a key derived from a passphrase (Argon2id + secretbox). The
  appliance keeps only public keys, so it cannot read its own backups unless
  the site chose the passphrase mode.
* The manifest (CBOR) says what, when, sizes, digests, schema and software
  version, and carries the sealed keys and the SHA-256 of the whole body. It is
  signed with the appliance's Ed25519 audit key, so anyone can check a backup's
  integrity and origin without any secret: read the trailer, check the
  signature, hash the body.

The trailer sits at the end so the writer never seeks back; a file cut short
anywhere lacks END_MAGIC (or fails the body digest) and is refused.
Nothing here does I/O or reads the clock: callers pass bytes, keys and times.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl import bindings as sodium
from nacl import pwhash
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox

from ..errors import DomainError

MAGIC = b"\x89OPBAK\r\n"
END_MAGIC = b"\nOPBEND\x1a"
FORMAT_VERSION = 1
SIGNATURE_DOMAIN = b"outpost-backup-manifest-v1\x00"  # signatures over manifests and nothing else
PREFIX_BYTES = len(MAGIC) + 1
STREAM_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
STREAM_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
FILE_KEY_BYTES = 32
SIGNATURE_BYTES = 64
TRAILER_FIXED_BYTES = SIGNATURE_BYTES + 4 + len(END_MAGIC)

CHUNK_BYTES = 64 * 1024  # plaintext per frame: small enough to stream, big enough to amortise
MAX_FRAME_BYTES = CHUNK_BYTES + STREAM_ABYTES  # a reader refuses anything larger before decrypting
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a manifest lists files and keys; 4 MiB is far beyond need
MAX_MANIFEST_DEPTH = 8
MAX_RECIPIENTS = 16
MAX_FILES = 100_000

# Argon2id for passphrase mode. MODERATE (256 MiB, 3 passes) is the default: a backup
# medium may be attacked offline for years. Tests pass the minimum to stay fast.
PASSPHRASE_OPSLIMIT = pwhash.argon2id.OPSLIMIT_MODERATE
PASSPHRASE_MEMLIMIT = pwhash.argon2id.MEMLIMIT_MODERATE
MIN_PASSPHRASE_CHARS = 12
# A manifest names its own Argon2id cost; a crafted file must not make a restore stall
# or exhaust memory, so anything beyond SENSITIVE (4 passes, 1 GiB) is refused.
MAX_PASSPHRASE_OPSLIMIT = pwhash.argon2id.OPSLIMIT_SENSITIVE
MAX_PASSPHRASE_MEMLIMIT = pwhash.argon2id.MEMLIMIT_SENSITIVE

RECOVERY_PUBLIC_PREFIX = "opr1:"  # how recovery public keys are written for people and config
RECOVERY_SECRET_HEADER = "OUTPOST-BACKUP-RECOVERY-KEY-1"


class BackupError(DomainError):
    """A backup could not be made, read or restored."""


class BackupCorrupt(BackupError):
    """The file is not an intact Outpost backup (truncated, tampered, or not a backup)."""


class BackupKeyError(BackupError):
    """The key or passphrase offered does not open this backup."""


class BackupSchemaError(BackupError):
    """The backup's database schema is newer than this software understands."""


# ------------------------------------------------------------------ recovery keys
def key_id(public: bytes) -> str:
    return hashlib.sha256(b"outpost-recovery-key\x00" + public).hexdigest()[:16]


def format_public(public: bytes) -> str:
    return RECOVERY_PUBLIC_PREFIX + public.hex()


def parse_public(text: str) -> bytes:
    t = text.strip()
    if not t.startswith(RECOVERY_PUBLIC_PREFIX):
        raise BackupError(f"a recovery public key starts with {RECOVERY_PUBLIC_PREFIX!r}")
    try:
        raw = bytes.fromhex(t[len(RECOVERY_PUBLIC_PREFIX) :])
    except ValueError:
        raise BackupError("recovery public key: not hexadecimal after the prefix") from None
    if len(raw) != 32:
        raise BackupError(f"recovery public key must be 32 bytes, got {len(raw)}")
    return raw


def new_recovery_key() -> tuple[bytes, bytes]:
    """(private, public) X25519 pair for an offline workstation."""
    sk = PrivateKey.generate()
    return bytes(sk), bytes(sk.public_key)


def recovery_key_file(private: bytes) -> str:
    public = bytes(PrivateKey(private).public_key)
    return (
        f"# Outpost backup recovery key. Whoever holds this file can read every backup\n"
        f"# sealed to it. Keep it offline (see docs/backups.md).\n"
        f"# public key: {format_public(public)}\n"
        f"# key id: {key_id(public)}\n"
        f"{RECOVERY_SECRET_HEADER}:{private.hex()}\n"
    )


def parse_recovery_key_file(text: str) -> bytes:
    for line in text.splitlines():
        if line.startswith(RECOVERY_SECRET_HEADER + ":"):
            try:
                raw = bytes.fromhex(line.split(":", 1)[1].strip())
            except ValueError:
                break
            if len(raw) == 32:
                return raw
            break
    raise BackupKeyError(f"not a recovery key file (no valid {RECOVERY_SECRET_HEADER} line)")


# ------------------------------------------------------------------ key sealing
@dataclass(frozen=True, slots=True)
class PassphraseKek:
    """A key-encryption key derived from a passphrase, with the parameters to derive it again."""

    key: bytes = field(repr=False)
    salt: bytes
    opslimit: int
    memlimit: int


def derive_kek(
    passphrase: str,
    salt: bytes,
    opslimit: int = PASSPHRASE_OPSLIMIT,
    memlimit: int = PASSPHRASE_MEMLIMIT,
) -> PassphraseKek:
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise BackupError(f"a backup passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
    if len(salt) != pwhash.argon2id.SALTBYTES:
        raise BackupCorrupt("passphrase salt has the wrong length")
    key = pwhash.argon2id.kdf(SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit, memlimit)
    return PassphraseKek(key, salt, opslimit, memlimit)


def seal_file_key(
    file_key: bytes, recipients: Sequence[bytes], kek: PassphraseKek | None
) -> list[dict[str, Any]]:
    """The manifest's `keys` list: one entry per recipient, plus the passphrase wrap."""
    if not recipients and kek is None:
        raise BackupError(
            "no recovery key and no passphrase configured: a backup nobody can open is not made "
            "(add one with `outpost backup recipients add`)"
        )
    if len(recipients) > MAX_RECIPIENTS:
        raise BackupError(f"at most {MAX_RECIPIENTS} recovery keys")
    out: list[dict[str, Any]] = [
        {"type": "x25519", "id": key_id(pub), "sealed": SealedBox(PublicKey(pub)).encrypt(file_key)}
        for pub in recipients
    ]
    if kek is not None:
        out.append(
            {
                "type": "passphrase",
                "salt": kek.salt,
                "ops": kek.opslimit,
                "mem": kek.memlimit,
                "wrapped": bytes(SecretBox(kek.key).encrypt(file_key)),
            }
        )
    return out


def open_with_recovery_key(manifest: Manifest, private: bytes) -> bytes:
    sk = PrivateKey(private)
    kid = key_id(bytes(sk.public_key))
    entries = [k for k in manifest.keys if k.get("type") == "x25519"]
    for k in entries:
        if k.get("id") == kid:
            try:
                return _check_file_key(SealedBox(sk).decrypt(k["sealed"]))
            except (CryptoError, TypeError, KeyError):
                raise BackupKeyError(f"recovery key {kid} is listed but its sealed key does not open") from None
    listed = ", ".join(str(k.get("id")) for k in entries) or "none"
    raise BackupKeyError(f"this backup is not sealed to recovery key {kid} (sealed to: {listed})")


def open_with_passphrase(manifest: Manifest, passphrase: str) -> bytes:
    for k in manifest.keys:
        if k.get("type") == "passphrase":
            ops, mem = k.get("ops"), k.get("mem")
            if not (
                isinstance(ops, int) and isinstance(mem, int)
                and pwhash.argon2id.OPSLIMIT_MIN <= ops <= MAX_PASSPHRASE_OPSLIMIT
                and pwhash.argon2id.MEMLIMIT_MIN <= mem <= MAX_PASSPHRASE_MEMLIMIT
            ):  # fmt: skip
                raise BackupCorrupt(f"passphrase cost out of range (ops {ops!r}, mem {mem!r}): not made by Outpost")
            try:
                kek = derive_kek(passphrase, k["salt"], ops, mem)
                return _check_file_key(SecretBox(kek.key).decrypt(k["wrapped"]))
            except CryptoError:
                raise BackupKeyError("wrong passphrase for this backup") from None
            except (KeyError, TypeError, ValueError):
                raise BackupCorrupt("passphrase entry in the manifest is malformed") from None
    raise BackupKeyError("this backup has no passphrase; use --recovery-key")


def _check_file_key(key: bytes) -> bytes:
    if len(key) != FILE_KEY_BYTES:
        raise BackupCorrupt("sealed file key has the wrong length")
    return key


# ------------------------------------------------------------------ manifest
MANIFEST_FIELDS = (
    "format", "id", "appliance", "site", "created", "software", "schema", "files",
    "plain_bytes", "body_bytes", "body_sha256", "keys", "signer", "counts", "label",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    id: str
    appliance: str
    site: str
    created: int
    software: str
    schema: str
    files: tuple[FileEntry, ...]
    plain_bytes: int
    body_bytes: int
    body_sha256: str
    keys: tuple[dict[str, Any], ...]
    signer: bytes  # the appliance's Ed25519 audit public key
    counts: Mapping[str, int]
    label: str = ""
    format: int = FORMAT_VERSION

    def to_cbor(self) -> bytes:
        return cbor2.dumps(
            {
                "format": self.format,
                "id": self.id,
                "appliance": self.appliance,
                "site": self.site,
                "created": self.created,
                "software": self.software,
                "schema": self.schema,
                "files": [[f.path, f.size, f.sha256] for f in self.files],
                "plain_bytes": self.plain_bytes,
                "body_bytes": self.body_bytes,
                "body_sha256": self.body_sha256,
                "keys": list(self.keys),
                "signer": self.signer,
                "counts": dict(self.counts),
                "label": self.label,
            },
            canonical=True,
        )

    def summary(self) -> dict[str, Any]:
        """What people and the admin API are shown: no sealed key material."""
        return {
            "id": self.id,
            "appliance": self.appliance,
            "site": self.site,
            "created": self.created,
            "software": self.software,
            "schema": self.schema,
            "files": len(self.files),
            "plain_bytes": self.plain_bytes,
            "body_bytes": self.body_bytes,
            "body_sha256": self.body_sha256,
            "opens_with": [
                f"recovery key {k.get('id')}" if k.get("type") == "x25519" else "passphrase"
                for k in self.keys
            ],
            "signer": self.signer.hex(),
            "counts": dict(self.counts),
            "label": self.label,
        }


def _depth(v: object, limit: int) -> None:
    stack: list[tuple[object, int]] = [(v, 0)]
    while stack:
        x, d = stack.pop()
        if d > limit:
            raise BackupCorrupt(f"manifest nested deeper than {limit}")
        if isinstance(x, dict):
            stack.extend((y, d + 1) for y in list(x.keys()) + list(x.values()))
        elif isinstance(x, list):
            stack.extend((y, d + 1) for y in x)


def decode_manifest(raw: bytes) -> Manifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BackupCorrupt(f"manifest of {len(raw)} bytes exceeds {MAX_MANIFEST_BYTES}")
    try:
        doc = cbor2.loads(raw)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise BackupCorrupt(f"manifest is not valid CBOR: {exc}") from None
    if not isinstance(doc, dict):
        raise BackupCorrupt("manifest is not a CBOR map")
    _depth(doc, MAX_MANIFEST_DEPTH)
    missing = [f for f in MANIFEST_FIELDS if f not in doc]
    if missing:
        raise BackupCorrupt(f"manifest lacks {', '.join(missing)}")
    if doc["format"] != FORMAT_VERSION or isinstance(doc["format"], bool):
        raise BackupCorrupt(f"manifest format {doc['format']!r}; this software reads {FORMAT_VERSION}")

    def want(name: str, typ: type | tuple[type, ...]) -> Any:
        v = doc[name]
        if not isinstance(v, typ) or isinstance(v, bool):
            raise BackupCorrupt(f"manifest field {name!r} has the wrong type")
        return v

    files_raw = want("files", list)
    if len(files_raw) > MAX_FILES:
        raise BackupCorrupt(f"manifest lists more than {MAX_FILES} files")
    files: list[FileEntry] = []
    for i, f in enumerate(files_raw):
        if (
            not isinstance(f, list)
            or len(f) != 3
            or not isinstance(f[0], str)
            or not isinstance(f[1], int)
            or not isinstance(f[2], str)
        ):
            raise BackupCorrupt(f"manifest file entry {i} is malformed")
        files.append(FileEntry(f[0], f[1], f[2]))
    keys = want("keys", list)
    if not keys or len(keys) > MAX_RECIPIENTS + 1 or not all(isinstance(k, dict) for k in keys):
        raise BackupCorrupt("manifest key list is empty or malformed")
    counts = want("counts", dict)
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in counts.items()):
        raise BackupCorrupt("manifest counts are malformed")
    signer = want("signer", bytes)
    if len(signer) != 32:
        raise BackupCorrupt("manifest signer key is not 32 bytes")
    return Manifest(
        id=want("id", str),
        appliance=want("appliance", str),
        site=want("site", str),
        created=want("created", int),
        software=want("software", str),
        schema=want("schema", str),
        files=tuple(files),
        plain_bytes=want("plain_bytes", int),
        body_bytes=want("body_bytes", int),
        body_sha256=want("body_sha256", str),
        keys=tuple(keys),
        signer=signer,
        counts=dict(counts),
        label=want("label", str),
    )


def sign_manifest(key: Ed25519PrivateKey, manifest_bytes: bytes) -> bytes:
    return key.sign(SIGNATURE_DOMAIN + manifest_bytes)


def encode_trailer(manifest_bytes: bytes, signature: bytes) -> bytes:
    if len(signature) != SIGNATURE_BYTES:
        raise BackupError("signature must be 64 bytes")
    return manifest_bytes + signature + struct.pack(">I", len(manifest_bytes)) + END_MAGIC


def prefix(stream_header: bytes) -> bytes:
    return MAGIC + bytes([FORMAT_VERSION]) + stream_header


@dataclass(frozen=True, slots=True)
class Trailer:
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    body_end: int  # offset where the manifest starts == length of the body


def parse_trailer(file_size: int, tail: bytes) -> tuple[int, int]:
    """From the file's last TRAILER_FIXED_BYTES: (manifest offset, manifest length)."""
    if file_size < PREFIX_BYTES + STREAM_HEADER_BYTES + TRAILER_FIXED_BYTES:
        raise BackupCorrupt(f"file of {file_size} bytes is too short to be a backup (truncated?)")
    if not tail.endswith(END_MAGIC):
        raise BackupCorrupt("no end marker: the file is truncated or not an Outpost backup")
    (mlen,) = struct.unpack(">I", tail[SIGNATURE_BYTES : SIGNATURE_BYTES + 4])
    if mlen > MAX_MANIFEST_BYTES:
        raise BackupCorrupt(f"manifest length {mlen} exceeds {MAX_MANIFEST_BYTES}")
    start = file_size - TRAILER_FIXED_BYTES - mlen
    if start < PREFIX_BYTES + STREAM_HEADER_BYTES:
        raise BackupCorrupt("manifest length points before the body: file is damaged")
    return start, mlen


def check_prefix(head: bytes) -> bytes:
    """The stream header, after checking magic and version."""
    if not head.startswith(MAGIC):
        raise BackupCorrupt("not an Outpost backup (bad magic)")
    if len(head) < PREFIX_BYTES + STREAM_HEADER_BYTES:
        raise BackupCorrupt("file too short for a backup header")
    if head[len(MAGIC)] != FORMAT_VERSION:
        raise BackupCorrupt(f"backup format {head[len(MAGIC)]}; this software reads {FORMAT_VERSION}")
    return head[PREFIX_BYTES : PREFIX_BYTES + STREAM_HEADER_BYTES]


def verify_signature(manifest_bytes: bytes, signature: bytes, expected_signer: bytes | None) -> Manifest:
    """Decode and check the signature; when the caller knows the appliance key, require it."""
    m = decode_manifest(manifest_bytes)
    if expected_signer is not None and m.signer != expected_signer:
        raise BackupCorrupt(
            f"signed by key {m.signer.hex()[:16]}…, not by the expected appliance key "
            f"{expected_signer.hex()[:16]}…"
        )
    try:
        Ed25519PublicKey.from_public_bytes(m.signer).verify(signature, SIGNATURE_DOMAIN + manifest_bytes)
    except InvalidSignature:
        raise BackupCorrupt("manifest signature does not verify: the manifest was altered") from None
    return m


# ------------------------------------------------------------------ stream cipher
class StreamSealer:
    """Plaintext in, frames out. `push` buffers to CHUNK_BYTES; `finish` emits the final frame."""

    def __init__(self, file_key: bytes, ad: bytes) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, file_key)
        self._ad = ad
        self._buf = bytearray()
        self.finished = False

    def _frame(self, chunk: bytes, tag: int) -> bytes:
        ct = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, self._ad, tag)
        return struct.pack(">I", len(ct)) + ct

    def push(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while len(self._buf) > CHUNK_BYTES:  # keep >=1 byte back so the final frame is never empty
            out += self._frame(bytes(self._buf[:CHUNK_BYTES]), TAG_MESSAGE)
            del self._buf[:CHUNK_BYTES]
        return bytes(out)

    def finish(self) -> bytes:
        if self.finished:
            raise BackupError("stream already finished")
        self.finished = True
        return self._frame(bytes(self._buf), TAG_FINAL)


class StreamOpener:
    """Frames in, plaintext out; refuses oversize frames, tampering, and data after the final tag."""

    def __init__(self, file_key: bytes, header: bytes, ad: bytes) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, file_key)
        self._ad = ad
        self._buf = bytearray()
        self.finished = False
        self.offset = 0  # body bytes consumed, for error messages

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while len(self._buf) >= 4:
            (n,) = struct.unpack(">I", self._buf[:4])
            if self.finished:
                raise BackupCorrupt(f"data after the final frame at body offset {self.offset}")
            if n > MAX_FRAME_BYTES or n < STREAM_ABYTES:
                raise BackupCorrupt(f"frame of {n} bytes at body offset {self.offset} is out of range")
            if len(self._buf) < 4 + n:
                break
            ct = bytes(self._buf[4 : 4 + n])
            try:
                pt, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, ct, self._ad)
            except CryptoError:
                raise BackupCorrupt(
                    f"frame at body offset {self.offset} fails authentication: ciphertext altered"
                ) from None
            del self._buf[: 4 + n]
            self.offset += 4 + n
            out += pt
            if tag == TAG_FINAL:
                self.finished = True
        return bytes(out)

    def close(self) -> None:
        if self._buf and not self.finished:
            raise BackupCorrupt(f"body ends inside a frame at offset {self.offset}: truncated")
        if self._buf:
            raise BackupCorrupt(f"data after the final frame at body offset {self.offset}")
        if not self.finished:
            raise BackupCorrupt("body ends without its final frame: truncated")
