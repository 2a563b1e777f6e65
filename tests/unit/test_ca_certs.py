"""Certificate and CRL builders, verified with cryptography's X.509 path validation (pure)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from outpost_server.ca import certs
from outpost_server.ca.names import NameConstraints, parse_names

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SITE_NAMES = ["outpost.alpha.internal", "10.1.2.3", "fd00::3"]


@pytest.fixture(scope="module")
def pki() -> dict[str, object]:
    root_key, inter_key, leaf_key = certs.new_key(), certs.new_key(), certs.new_key()
    root = certs.build_root(root_key, "alpha", NOW)
    names = parse_names(SITE_NAMES)
    inter = certs.build_intermediate(
        root, root_key, inter_key, "alpha", NameConstraints.build(names=names), NOW
    )
    leaf = certs.build_leaf(inter, inter_key, leaf_key, "alpha", names, certs.LEAF_LIFETIME, NOW)
    return {"root": root, "inter": inter, "inter_key": inter_key, "leaf": leaf}


def _verify(
    root: x509.Certificate,
    inter: x509.Certificate,
    leaf: x509.Certificate,
    subject: x509.GeneralName,
    at: dt.datetime = NOW,
) -> list[x509.Certificate]:
    verifier = PolicyBuilder().store(Store([root])).time(at).build_server_verifier(subject)  # type: ignore[arg-type]
    return verifier.verify(leaf, [inter])


@pytest.mark.parametrize(
    "subject",
    [
        x509.DNSName("outpost.alpha.internal"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.IPAddress(ipaddress.ip_address("fd00::3")),
    ],
)
def test_chain_verifies_for_dns_and_ip_sans(pki: dict, subject: x509.GeneralName) -> None:
    chain = _verify(pki["root"], pki["inter"], pki["leaf"], subject)
    assert [c.subject for c in chain] == [
        pki["leaf"].subject,
        pki["inter"].subject,
        pki["root"].subject,
    ]


def test_wrong_name_and_wrong_root_fail(pki: dict) -> None:
    with pytest.raises(VerificationError):
        _verify(pki["root"], pki["inter"], pki["leaf"], x509.DNSName("other.alpha.internal"))
    other_key = certs.new_key()
    other_root = certs.build_root(other_key, "alpha", NOW)
    with pytest.raises(VerificationError):
        _verify(other_root, pki["inter"], pki["leaf"], x509.DNSName("outpost.alpha.internal"))


def test_expired_leaf_fails(pki: dict) -> None:
    later = pki["leaf"].not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(VerificationError):
        _verify(
            pki["root"], pki["inter"], pki["leaf"], x509.DNSName("outpost.alpha.internal"), later
        )


@pytest.mark.parametrize("name", ["www.example.com", "8.8.8.8", "2001:db8::1"])
def test_leaf_outside_name_constraints_is_rejected_by_verifiers(pki: dict, name: str) -> None:
    # The CA refuses to sign these (authority tests); here we prove a client would
    # reject one even if the intermediate key were stolen and used directly.
    (n,) = parse_names([name])
    rogue = certs.build_leaf(
        pki["inter"], pki["inter_key"], certs.new_key(), "alpha", [n], certs.LEAF_LIFETIME, NOW
    )
    subject = x509.DNSName(n) if isinstance(n, str) else x509.IPAddress(n)
    with pytest.raises(VerificationError, match="name constraint"):
        _verify(pki["root"], pki["inter"], rogue, subject)


def test_profile(pki: dict) -> None:
    root, inter, leaf = pki["root"], pki["inter"], pki["leaf"]
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    bc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    nc = inter.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in inter.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (
        leaf.not_valid_after_utc - leaf.not_valid_before_utc
        <= certs.LEAF_LIFETIME + certs.CLOCK_SKEW_ALLOWANCE
    )
    assert leaf.not_valid_before_utc == NOW - certs.CLOCK_SKEW_ALLOWANCE
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert " " in str(cn)  # never host-name-like (see certs.leaf_subject)


def test_leaf_never_outlives_its_issuer(pki: dict) -> None:
    late = pki["inter"].not_valid_after_utc - dt.timedelta(days=10)
    leaf = certs.build_leaf(
        pki["inter"],
        pki["inter_key"],
        certs.new_key(),
        "alpha",
        parse_names(["10.1.2.3"]),
        certs.LEAF_LIFETIME,
        late,
    )
    assert leaf.not_valid_after_utc == pki["inter"].not_valid_after_utc


def test_crl_lists_revoked_serial_and_verifies_against_intermediate(pki: dict) -> None:
    serial = pki["leaf"].serial_number
    crl = certs.build_crl(
        pki["inter"],
        pki["inter_key"],
        [certs.Revocation(serial, x509.ReasonFlags.key_compromise, NOW)],
        7,
        NOW,
    )
    assert crl.is_signature_valid(pki["inter"].public_key())
    assert not crl.is_signature_valid(pki["root"].public_key())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.next_update_utc == NOW + certs.CRL_LIFETIME
