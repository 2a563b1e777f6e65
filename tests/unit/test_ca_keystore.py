"""Passphrase-encrypted root key container (pure, in memory)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization

from outpost_server.ca import certs
from outpost_server.ca.keystore import (
    MIN_PASSPHRASE_CHARS,
    ROOT_KEY_KDF,
    ScryptParams,
    WrongPassphrase,
    decrypt_private_key,
    encrypt_private_key,
    is_encrypted,
)
from outpost_server.errors import InvalidInput

FAST = ScryptParams(n=2**10, r=8, p=1)  # tests only: the format, not the cost
PASS = b"correct horse battery staple"
OPENSSL_SCRYPT_MAXMEM = 32 * 1024 * 1024  # OpenSSL 3 default limit when decrypting


def test_round_trip_and_standard_container() -> None:
    key = certs.new_key()
    pem = encrypt_private_key(key, PASS, FAST)
    assert is_encrypted(pem)
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    assert bytes.fromhex("06092a864886f70d01050d") in der  # PBES2
    assert bytes.fromhex("06092b06010401da47040b") in der  # scrypt
    assert decrypt_private_key(pem, PASS).private_numbers() == key.private_numbers()


def test_cannot_load_without_or_with_wrong_passphrase() -> None:
    pem = encrypt_private_key(certs.new_key(), PASS, FAST)
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        decrypt_private_key(pem, b"not the passphrase at all")
    with pytest.raises(InvalidInput):  # WrongPassphrase is an InvalidInput for the API edge
        decrypt_private_key(pem, b"")


def test_short_passphrase_is_refused() -> None:
    with pytest.raises(InvalidInput, match=str(MIN_PASSPHRASE_CHARS)):
        encrypt_private_key(certs.new_key(), b"x" * (MIN_PASSPHRASE_CHARS - 1), FAST)


def test_default_parameters_stay_within_openssl_limit() -> None:
    k = ROOT_KEY_KDF
    memory = 128 * k.r * (k.n + 2) + 128 * k.r * k.p
    assert memory <= OPENSSL_SCRYPT_MAXMEM
    assert k.n * k.r * k.p >= 2**14 * 8 * 16  # the work factor docs/ca.md promises
