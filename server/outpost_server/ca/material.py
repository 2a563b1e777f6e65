"""CA material from a `ca-material` bundle: what it must be before the CA installs it.

Sans-IO: PEM bytes, the site's root, constraints and keys in; a checked
value or `InvalidInput` out. Nothing here reads a clock or a file, so the
same checks run when an administrator previews a bundle, when approval plans
it, and again under the CA's lock just before the install.

A `ca-material` bundle carries a new issuing CA (intermediate) for this
site (offline-bundles/SPEC.md, docs/ca.md "Renewing the issuing CA offline"):

    intermediate.pem      the certificate (required)
    intermediate-key.pem  its private key, only when it was made elsewhere
                          (the preferred flow keeps the key on the box: the
                          appliance made a request, `outpost ca request-intermediate`)
    root.pem              the root that signed it, for reference; must be this site's

Root rollover (a certificate from another root) is refused: clients trust
exactly one root, and replacing it means visiting every client.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import InvalidInput
from . import certs
from .certs import serial_hex
from .names import IPAddress, NameConstraints

INTERMEDIATE_PAYLOAD = "intermediate.pem"
INTERMEDIATE_KEY_PAYLOAD = "intermediate-key.pem"
ROOT_PAYLOAD = "root.pem"
PAYLOADS = (INTERMEDIATE_PAYLOAD, INTERMEDIATE_KEY_PAYLOAD, ROOT_PAYLOAD)
MAX_PEM_BYTES = 64 * 1024  # one P-256 certificate or key is about 1 KiB; bounds the parsers

KeySource = Literal["pending request", "carried in bundle", "already installed"]


class MaterialError(InvalidInput):
    """CA material the appliance will not install; the message names the payload."""


@dataclass(frozen=True)
class CAMaterial:
    """The parsed payloads of a ca-material bundle (not yet checked against the site)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None
    root: x509.Certificate | None


@dataclass(frozen=True)
class CheckedIntermediate:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None  # carried in the bundle; None: the pending key
    key_source: KeySource
    constraints: NameConstraints
    replaces_serial: str

    @property
    def already_installed(self) -> bool:
        return self.key_source == "already installed"

    def summary(self) -> dict[str, Any]:
        return describe(self.cert) | {
            "key_source": self.key_source,
            "name_constraints": self.constraints.describe(),
            "replaces": self.replaces_serial,
        }


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """What an administrator needs to recognise the certificate (console, `bundles show`)."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_hex(cert.serial_number),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "sha256": certs.fingerprint(cert),
    }


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _pem(payloads: Mapping[str, bytes], name: str) -> bytes | None:
    raw = payloads.get(name)
    if raw is not None and len(raw) > MAX_PEM_BYTES:
        raise MaterialError(f"{name}: larger than {MAX_PEM_BYTES} bytes")
    return raw


def _one_cert(raw: bytes, name: str) -> x509.Certificate:
    try:
        found = x509.load_pem_x509_certificates(raw)
    except ValueError:
        raise MaterialError(f"{name}: not a PEM certificate") from None
    if len(found) != 1:
        raise MaterialError(f"{name}: holds {len(found)} certificates, expected exactly one")
    return found[0]


def parse_material(payloads: Mapping[str, bytes]) -> CAMaterial:
    unknown = sorted(set(payloads) - set(PAYLOADS))
    if unknown or INTERMEDIATE_PAYLOAD not in payloads:
        raise MaterialError(
            f"a ca-material bundle carries {INTERMEDIATE_PAYLOAD} and optionally "
            f"{INTERMEDIATE_KEY_PAYLOAD} and {ROOT_PAYLOAD} (found {sorted(payloads)})"
        )
    cert = _one_cert(_pem(payloads, INTERMEDIATE_PAYLOAD) or b"", INTERMEDIATE_PAYLOAD)
    key = None
    raw_key = _pem(payloads, INTERMEDIATE_KEY_PAYLOAD)
    if raw_key is not None:
        try:
            loaded = serialization.load_pem_private_key(raw_key, None)
        except (ValueError, TypeError):
            raise MaterialError(
                f"{INTERMEDIATE_KEY_PAYLOAD}: not an unencrypted PEM private key"
            ) from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != (
            certs.CURVE.name
        ):
            raise MaterialError(f"{INTERMEDIATE_KEY_PAYLOAD}: not an ECDSA {certs.CURVE.name} key")
        key = loaded
    raw_root = _pem(payloads, ROOT_PAYLOAD)
    root = None if raw_root is None else _one_cert(raw_root, ROOT_PAYLOAD)
    return CAMaterial(cert, key, root)


def _same_key(a: ec.EllipticCurvePublicKey, b: object) -> bool:
    return isinstance(b, ec.EllipticCurvePublicKey) and a.public_numbers() == b.public_numbers()


def check_intermediate(
    material: CAMaterial,
    *,
    root: x509.Certificate,
    site_constraints: NameConstraints,
    leaf_names: Sequence[IPAddress | str],
    pending: ec.EllipticCurvePublicKey | None,
    current: x509.Certificate,
    now: dt.datetime,
) -> CheckedIntermediate:
    """Everything that must hold before the CA changes anything; MaterialError says what not."""
    p = INTERMEDIATE_PAYLOAD
    cert = material.cert
    root_fp = certs.fingerprint(root)
    if material.root is not None and certs.fingerprint(material.root) != root_fp:
        raise MaterialError(
            f"{ROOT_PAYLOAD}: root rollover is not supported: the bundle carries root "
            f"{material.root.subject.rfc4514_string()} ({certs.fingerprint(material.root)}), "
            f"not this site's root {root_fp}"
        )
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise MaterialError(f"{p}: not a CA certificate (basicConstraints CA is not true)")
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise MaterialError(
            f"{p}: root rollover is not supported: the certificate is issued by "
            f"{cert.issuer.rfc4514_string()}, not this site's root {root_fp}"
        ) from None
    if bc.path_length != 0:
        raise MaterialError(
            f"{p}: path length must be 0 (an issuing CA signs server certificates, not CAs)"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not (usage.key_cert_sign and usage.crl_sign):
        raise MaterialError(f"{p}: key usage must allow certificate and CRL signing")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != certs.CURVE.name:
        raise MaterialError(f"{p}: the key is not ECDSA {certs.CURVE.name}")
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now >= end:
        raise MaterialError(f"{p}: expired on {end:%Y-%m-%d %H:%M} UTC")
    if now < start:
        raise MaterialError(
            f"{p}: not valid before {start:%Y-%m-%d %H:%M} UTC (now {now:%Y-%m-%d %H:%M})"
        )
    if end > root.not_valid_after_utc:
        raise MaterialError(
            f"{p}: valid until {end:%Y-%m-%d}, after the root expires "
            f"({root.not_valid_after_utc:%Y-%m-%d})"
        )
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        nc = None
    try:
        constraints = NameConstraints.from_extension(nc)
    except InvalidInput as exc:
        raise MaterialError(f"{p}: {exc}") from None
    wider = constraints.wider_than(site_constraints)
    if wider:
        raise MaterialError(
            f"{p}: name constraints are wider than the site's ({site_constraints.describe()}): "
            f"it also permits {', '.join(wider)}"
        )
    outside = [str(n) for n in leaf_names if not constraints.permits(n)]
    if outside:
        raise MaterialError(
            f"{p}: name constraints ({constraints.describe()}) leave out the server's names "
            f"{', '.join(outside)}"
        )
    replaces = serial_hex(current.serial_number)
    if cert == current:
        return CheckedIntermediate(cert, None, "already installed", constraints, replaces)
    if material.key is not None:
        if not _same_key(material.key.public_key(), pub):
            raise MaterialError(f"{INTERMEDIATE_KEY_PAYLOAD}: does not match the public key of {p}")
        return CheckedIntermediate(cert, material.key, "carried in bundle", constraints, replaces)
    if pending is None:
        raise MaterialError(
            f"{p}: no pending request and no key in the bundle: run `outpost ca "
            "request-intermediate` and have the request signed, or carry "
            f"{INTERMEDIATE_KEY_PAYLOAD}"
        )
    if not _same_key(pending, pub):
        raise MaterialError(
            f"{p}: the certificate's key is not the pending request's "
            f"(request key {certs.key_fingerprint(pending)}, certificate key "
            f"{certs.key_fingerprint(pub)}); was it made for an older request?"
        )
    return CheckedIntermediate(cert, None, "pending request", constraints, replaces)
