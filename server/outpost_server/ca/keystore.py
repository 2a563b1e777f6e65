"""Passphrase-encrypted private keys: PKCS#8 PBES2 with scrypt and AES-256-CBC.

`cryptography`'s BestAvailableEncryption writes PBES2 with PBKDF2-HMAC-SHA256
at 2048 iterations: cheap to brute-force for a key that may spend years on a
USB stick in a drawer. We write the same standard container (RFC 8018 PBES2,
"ENCRYPTED PRIVATE KEY" PEM) with the scrypt KDF (RFC 7914 section 7) instead,
which `cryptography` and stock OpenSSL (`openssl pkey -in root-key.pem`) both
read - so an operator can recover the root on any machine without Outpost.

Parameters: N=2^14, r=8 needs 16 MiB, the most OpenSSL 3 accepts by default
(its 32 MiB scrypt memory limit rejects N=2^15, r=8 when decrypting); we raise
the work with p=16 instead (p costs time, not memory), about 2-4 s per unlock
on a small appliance - acceptable for a key used a few times a year.
"""

from __future__ import annotations

import base64
import os
import textwrap
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import InvalidInput

MIN_PASSPHRASE_CHARS = 12  # the root key may be brute-forced offline from lost media
SALT_BYTES = 16
AES_KEY_BYTES = 32

_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


class WrongPassphrase(InvalidInput):
    """The passphrase does not decrypt the key."""


@dataclass(frozen=True)
class ScryptParams:
    n: int
    r: int
    p: int


ROOT_KEY_KDF = ScryptParams(n=2**14, r=8, p=16)


def check_passphrase_policy(passphrase: bytes) -> None:
    if len(passphrase.decode("utf-8", "replace")) < MIN_PASSPHRASE_CHARS:
        raise InvalidInput(
            f"the root key passphrase must have at least {MIN_PASSPHRASE_CHARS} characters "
            "(the encrypted key may be copied off lost media and attacked offline)"
        )


# ---------------------------------------------------------------- tiny DER
def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        rest = part
        chunk = [rest & 0x7F]
        rest >>= 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def encrypt_private_key(
    key: ec.EllipticCurvePrivateKey, passphrase: bytes, kdf: ScryptParams
) -> bytes:
    """PEM "ENCRYPTED PRIVATE KEY" (PKCS#8 EncryptedPrivateKeyInfo, PBES2/scrypt/AES-256-CBC)."""
    check_passphrase_policy(passphrase)
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(SALT_BYTES), os.urandom(16)
    aes_key = Scrypt(salt=salt, length=AES_KEY_BYTES, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    der = _seq(
        _seq(
            _oid(_OID_PBES2),
            _seq(
                _seq(
                    _oid(_OID_SCRYPT), _seq(_tlv(0x04, salt), _int(kdf.n), _int(kdf.r), _int(kdf.p))
                ),
                _seq(_oid(_OID_AES256_CBC), _tlv(0x04, iv)),
            ),
        ),
        _tlv(0x04, ciphertext),
    )
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    head, tail = "-----BEGIN ENCRYPTED PRIVATE KEY-----", "-----END ENCRYPTED PRIVATE KEY-----"
    return f"{head}\n{body}\n{tail}\n".encode()


def decrypt_private_key(pem: bytes, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, passphrase)
    except (ValueError, TypeError) as exc:
        raise WrongPassphrase(
            "wrong passphrase for the root key (or the key file is damaged)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("the root key file does not hold an ECDSA key")
    return key


def is_encrypted(pem: bytes) -> bool:
    return pem.lstrip().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
