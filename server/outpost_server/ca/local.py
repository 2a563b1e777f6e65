"""Local TLS material for the relay and the HTTPS listener.

A minimal offline CA: an ECDSA P-256 root created on first start and a leaf
for the appliance's names and IP addresses. Clients trust the root (carried
to them on removable media; tests pass it as SSL_CERT_FILE). Tailscale
clients dialling DERP by IP literal send no SNI and verify the chain with an
empty DNS name (reference derp-stun-offline.md §3.3), so the chain must
verify against the root; we still put every IP in the SANs for other tools.

This is the seed of the offline CA issue (root key encryption, intermediate,
renewal by the scheduler, revocation) and deliberately small.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_LIFETIME_DAYS = 3650
LEAF_LIFETIME_DAYS = 397  # the longest lifetime common TLS stacks accept for a leaf
LEAF_RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class TLSFiles:
    root_cert: Path
    leaf_chain: Path
    leaf_key: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Outpost"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def ensure_tls(directory: Path, site: str, names: list[str]) -> TLSFiles:
    """Create the root once, and a leaf whenever names change or it nears expiry."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TLSFiles(directory / "root.pem", directory / "server-chain.pem", directory / "server-key.pem")
    root_key_path = directory / "root-key.pem"
    now = dt.datetime.now(dt.UTC)
    if not files.root_cert.exists() or not root_key_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"Outpost root CA ({site})"))
            .issuer_name(_name(f"Outpost root CA ({site})"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=ROOT_LIFETIME_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(
            root_key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        _write_public(files.root_cert, cert.public_bytes(serialization.Encoding.PEM))
        files.leaf_chain.unlink(missing_ok=True)
    root_cert = x509.load_pem_x509_certificate(files.root_cert.read_bytes())
    root_key = serialization.load_pem_private_key(root_key_path.read_bytes(), None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)

    sans: list[x509.GeneralName] = []
    for n in sorted(set(names)):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    if files.leaf_chain.exists() and files.leaf_key.exists():
        leaf = x509.load_pem_x509_certificates(files.leaf_chain.read_bytes())[0]
        current = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        fresh = leaf.not_valid_after_utc - now > dt.timedelta(days=LEAF_RENEW_BEFORE_DAYS)
        if current == set(sans) and fresh and leaf.issuer == root_cert.subject:
            return files
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0] if names else site))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_LIFETIME_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    _write_private(
        files.leaf_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    _write_public(
        files.leaf_chain,
        leaf.public_bytes(serialization.Encoding.PEM) + root_cert.public_bytes(serialization.Encoding.PEM),
    )
    return files
