"""Pure builders for the root, the issuing intermediate, leaves and the CRL.

Everything takes `now`; nothing reads a clock or touches files.

Algorithm: ECDSA P-256 with SHA-256 for every key and signature. It is the
one choice every Tailscale client platform verifies natively (Go crypto/x509,
Windows CNG, Apple Security, Android/BoringSSL) and the one derper itself uses
for its self-signed certificates; Ed25519 is not accepted in TLS certificate
chains by Windows or Apple, and RSA would only make keys and handshakes larger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import InvalidInput
from .names import IPAddress, NameConstraints, general_name

# Lifetimes. The root must be carried by hand to every client, so it lives
# long; its key leaves the box after `ca init`. The intermediate's key stays on
# the box, so it lives shorter and is rotated with the root key brought back.
# Leaves follow the CA/Browser limit that Apple platforms enforce (398 days).
ROOT_LIFETIME = dt.timedelta(days=7305)  # 20 years
INTERMEDIATE_LIFETIME = dt.timedelta(days=1826)  # 5 years
LEAF_LIFETIME = dt.timedelta(days=397)
MIN_LEAF_LIFETIME = dt.timedelta(days=1)  # shorter leaves would churn faster than renewal runs
# Air-gapped sites run without NTP: certificates start this far in the past so
# a client whose clock lags the appliance's by up to a day still accepts them.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(days=1)
CRL_LIFETIME = dt.timedelta(days=30)  # nextUpdate; refreshed well before (authority.py)

SITE_MAX_CHARS = 32  # keeps "Outpost issuing CA (<site>) YYYY-MM-DD" under the 64-char CN limit
_SIG = hashes.SHA256()


@dataclass(frozen=True)
class CertInfo:
    """What a person needs to recognise a certificate."""

    subject: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    sha256: str

    @classmethod
    def of(cls, cert: x509.Certificate, now: dt.datetime) -> CertInfo:
        left = cert.not_valid_after_utc - now
        return cls(
            subject=cert.subject.rfc4514_string(),
            serial=serial_hex(cert.serial_number),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            days_left=left.days,
            sha256=fingerprint(cert),
        )


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def fingerprint(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo (hex), to tell keys apart in state and messages."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


CURVE = ec.SECP256R1()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, site: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Outpost"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def leaf_subject(site: str) -> x509.Name:
    # Not a host name on purpose: OpenSSL applies DNS name constraints to a
    # host-name-like CN, and every verifier we care about uses the SANs only.
    return _name(f"Outpost server ({site})", site)


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def build_root(key: ec.EllipticCurvePrivateKey, site: str, now: dt.datetime) -> x509.Certificate:
    name = _name(f"Outpost root CA ({site}) {now:%Y-%m-%d}", site)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + ROOT_LIFETIME)
        # pathlen 1: exactly one intermediate level below the root.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _SIG)
    )


def intermediate_subject(site: str, now: dt.datetime) -> x509.Name:
    return _name(f"Outpost issuing CA ({site}) {now:%Y-%m-%d}", site)


def build_intermediate(
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    site: str,
    constraints: NameConstraints,
    now: dt.datetime,
) -> x509.Certificate:
    return build_intermediate_for(
        root, root_key, key.public_key(), intermediate_subject(site, now), constraints, now
    )


def build_intermediate_for(  # noqa: PLR0917 - the certificate's fields
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    constraints: NameConstraints,
    now: dt.datetime,
    lifetime: dt.timedelta = INTERMEDIATE_LIFETIME,
) -> x509.Certificate:
    """The issuing CA for a public key: on the box (`build_intermediate`) or from a
    request signed at the offline station (`issue_intermediate_from_csr`)."""
    not_after = min(now + lifetime, root.not_valid_after_utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        # EKU in a CA limits what it may sign for (Go, Windows and Apple chain
        # it): TLS server (and client, for a future admin mTLS) only.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
    )
    ext = constraints.extension()
    if ext is not None:
        b = b.add_extension(ext, critical=True)  # RFC 5280: name constraints MUST be critical
    return b.sign(root_key, _SIG)


def build_intermediate_csr(
    key: ec.EllipticCurvePrivateKey, site: str, constraints: NameConstraints, now: dt.datetime
) -> x509.CertificateSigningRequest:
    """PKCS#10 request for a new issuing CA, made on the appliance (the key stays there).

    It asks for what the appliance's own intermediates carry: CA with path
    length 0 and the site's name constraints, so the offline station can
    issue the same certificate without knowing the site.
    """
    b = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(intermediate_subject(site, now))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    ext = constraints.extension()
    if ext is not None:
        b = b.add_extension(ext, critical=True)
    return b.sign(key, _SIG)


def issue_intermediate_from_csr(
    csr: x509.CertificateSigningRequest,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    lifetime: dt.timedelta = INTERMEDIATE_LIFETIME,
) -> x509.Certificate:
    """The offline station's side: an intermediate for the request's key and subject.

    The name constraints are the ones the request carries (the appliance put
    its own there); the appliance refuses a certificate wider than its site's.
    """
    if not csr.is_signature_valid:
        raise InvalidInput("the request's signature does not verify (damaged or altered)")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != CURVE.name:
        raise InvalidInput(f"the request's key is not ECDSA {CURVE.name}")
    if root_key.public_key().public_numbers() != _ec(root).public_numbers():
        raise InvalidInput("that root key does not belong to that root certificate")
    try:
        ext = csr.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        raise InvalidInput(
            "the request carries no name constraints; make it with "
            "`outpost ca request-intermediate` on the appliance"
        ) from None
    constraints = NameConstraints.from_extension(ext)
    if not dt.timedelta(days=1) <= lifetime <= INTERMEDIATE_LIFETIME:
        raise InvalidInput(f"lifetime must be 1 to {INTERMEDIATE_LIFETIME.days} days")
    return build_intermediate_for(root, root_key, pub, csr.subject, constraints, now, lifetime)


def _ec(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise InvalidInput(f"{cert.subject.rfc4514_string()} does not have an ECDSA key")
    return pub


def build_leaf(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    site: str,
    names: Sequence[IPAddress | str],
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> x509.Certificate:
    # A leaf never outlives its issuer: verifiers reject the chain from then on.
    not_after = min(now + lifetime, issuer.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(leaf_subject(site))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, _SIG)
    )


@dataclass(frozen=True)
class Revocation:
    serial: int
    reason: x509.ReasonFlags
    at: dt.datetime


def build_crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[Revocation],
    number: int,
    now: dt.datetime,
) -> x509.CertificateRevocationList:
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - CLOCK_SKEW_ALLOWANCE)
        .next_update(now + CRL_LIFETIME)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for r in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.at)
        if r.reason is not x509.ReasonFlags.unspecified:
            # RFC 5280 5.3.1: omit the reason code rather than write "unspecified".
            entry = entry.add_extension(x509.CRLReason(r.reason), critical=False)
        b = b.add_revoked_certificate(entry.build())
    return b.sign(issuer_key, _SIG)
