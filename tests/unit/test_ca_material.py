"""The checks a ca-material bundle's issuing CA must pass before the CA installs it.

Pure: certificates built in memory with the CA's own builders, `now` fixed.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from outpost_server.ca import certs
from outpost_server.ca.material import (
    CAMaterial,
    MaterialError,
    check_intermediate,
    parse_material,
)
from outpost_server.ca.names import NameConstraints, parse_names

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
SITE = "alpha"
LEAF_NAMES = parse_names(["outpost.alpha.internal", "10.20.0.5"])
SITE_NC = NameConstraints.build(names=LEAF_NAMES)


class Site:
    """A site's root, its current issuing CA and a pending request key."""

    def __init__(self) -> None:
        self.root_key = certs.new_key()
        self.root = certs.build_root(self.root_key, SITE, NOW - dt.timedelta(days=400))
        self.current = certs.build_intermediate(
            self.root, self.root_key, certs.new_key(), SITE, SITE_NC, NOW - dt.timedelta(days=400)
        )
        self.pending = certs.new_key()

    def from_request(
        self, key: object = None, constraints: NameConstraints = SITE_NC, now: dt.datetime = NOW
    ) -> x509.Certificate:
        csr = certs.build_intermediate_csr(key or self.pending, SITE, constraints, now)  # type: ignore[arg-type]
        return certs.issue_intermediate_from_csr(csr, self.root, self.root_key, now)

    def check(self, material: CAMaterial, *, pending: bool = True) -> object:
        return check_intermediate(
            material,
            root=self.root,
            site_constraints=SITE_NC,
            leaf_names=LEAF_NAMES,
            pending=self.pending.public_key() if pending else None,
            current=self.current,
            now=NOW,
        )


@pytest.fixture(scope="module")
def site() -> Site:
    return Site()


def test_a_certificate_for_the_pending_request_passes(site: Site) -> None:
    cert = site.from_request()
    checked = site.check(CAMaterial(cert, None, site.root))
    assert checked.key_source == "pending request"  # type: ignore[attr-defined]
    assert checked.constraints == SITE_NC  # type: ignore[attr-defined]
    summary = checked.summary()  # type: ignore[attr-defined]
    assert summary["serial"] == certs.serial_hex(cert.serial_number)
    assert summary["replaces"] == certs.serial_hex(site.current.serial_number)


def test_a_certificate_with_its_key_carried_passes(site: Site) -> None:
    key = certs.new_key()
    cert = certs.build_intermediate(site.root, site.root_key, key, SITE, SITE_NC, NOW)
    payloads = {"intermediate.pem": certs.pem(cert), "intermediate-key.pem": certs.key_pem(key)}
    checked = site.check(parse_material(payloads), pending=False)
    assert checked.key_source == "carried in bundle"  # type: ignore[attr-defined]


def test_the_current_issuing_ca_counts_as_already_installed(site: Site) -> None:
    checked = site.check(CAMaterial(site.current, None, None), pending=False)
    assert checked.already_installed  # type: ignore[attr-defined]


def test_a_certificate_from_another_root_is_refused_as_root_rollover(site: Site) -> None:
    other = Site()
    cert = other.from_request(key=site.pending)
    with pytest.raises(MaterialError) as exc:
        site.check(CAMaterial(cert, None, None))
    assert str(exc.value) == (
        f"intermediate.pem: root rollover is not supported: the certificate is issued by "
        f"{other.root.subject.rfc4514_string()}, not this site's root "
        f"{certs.fingerprint(site.root)}"
    )


def test_a_root_payload_that_is_not_the_sites_root_is_refused(site: Site) -> None:
    other = Site()
    with pytest.raises(MaterialError, match=r"^root\.pem: root rollover is not supported"):
        site.check(CAMaterial(site.from_request(), None, other.root))


def test_a_server_certificate_is_refused_as_not_a_ca(site: Site) -> None:
    leaf = certs.build_leaf(
        site.root, site.root_key, site.pending, SITE, LEAF_NAMES, certs.LEAF_LIFETIME, NOW
    )
    with pytest.raises(MaterialError) as exc:
        site.check(CAMaterial(leaf, None, None))
    assert str(exc.value) == (
        "intermediate.pem: not a CA certificate (basicConstraints CA is not true)"
    )


def test_an_expired_certificate_is_refused(site: Site) -> None:
    old = NOW - dt.timedelta(days=2000)
    cert = site.from_request(now=old)
    with pytest.raises(MaterialError) as exc:
        site.check(CAMaterial(cert, None, None))
    assert str(exc.value) == (
        f"intermediate.pem: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


def test_a_carried_key_that_is_not_the_certificates_is_refused(site: Site) -> None:
    cert = certs.build_intermediate(site.root, site.root_key, certs.new_key(), SITE, SITE_NC, NOW)
    material = CAMaterial(cert, certs.new_key(), None)
    with pytest.raises(MaterialError) as exc:
        site.check(material)
    assert str(exc.value) == (
        "intermediate-key.pem: does not match the public key of intermediate.pem"
    )


def test_a_certificate_for_another_request_is_refused(site: Site) -> None:
    older = certs.new_key()
    cert = site.from_request(key=older)
    with pytest.raises(MaterialError) as exc:
        site.check(CAMaterial(cert, None, None))
    assert str(exc.value).startswith(
        "intermediate.pem: the certificate's key is not the pending request's (request key "
        f"{certs.key_fingerprint(site.pending.public_key())}, certificate key "
        f"{certs.key_fingerprint(older.public_key())})"
    )


def test_no_pending_request_and_no_key_in_the_bundle_is_refused(site: Site) -> None:
    with pytest.raises(MaterialError) as exc:
        site.check(CAMaterial(site.from_request(), None, None), pending=False)
    assert str(exc.value) == (
        "intermediate.pem: no pending request and no key in the bundle: run `outpost ca "
        "request-intermediate` and have the request signed, or carry intermediate-key.pem"
    )


def test_name_constraints_wider_than_the_sites_are_refused(site: Site) -> None:
    wider = NameConstraints.build(
        names=LEAF_NAMES,
        permit_dns=[*SITE_NC.dns, "example.com"],
        permit_ip=[*map(str, SITE_NC.ip), "8.8.8.0/24"],
    )
    with pytest.raises(MaterialError) as exc:
        site.check(CAMaterial(site.from_request(constraints=wider), None, None))
    assert str(exc.value) == (
        f"intermediate.pem: name constraints are wider than the site's ({SITE_NC.describe()}): "
        "it also permits example.com, 8.8.8.0/24"
    )


def test_an_unconstrained_certificate_is_wider_than_a_constrained_site(site: Site) -> None:
    key = certs.new_key()
    cert = certs.build_intermediate(
        site.root, site.root_key, key, SITE, NameConstraints((), ()), NOW
    )
    with pytest.raises(MaterialError, match=r"it also permits any DNS name, any IP address$"):
        site.check(CAMaterial(cert, key, None))


def test_narrower_constraints_that_leave_out_the_servers_names_are_refused(site: Site) -> None:
    narrow = NameConstraints.build(permit_dns=["alpha.internal"], permit_ip=["10.99.0.0/16"])
    with pytest.raises(MaterialError, match=r"leave out the server's names 10\.20\.0\.5$"):
        site.check(CAMaterial(site.from_request(constraints=narrow), None, None))


def test_narrower_constraints_that_keep_the_servers_names_pass(site: Site) -> None:
    narrow = NameConstraints.build(permit_dns=["alpha.internal"], permit_ip=["10.20.0.0/16"])
    checked = site.check(CAMaterial(site.from_request(constraints=narrow), None, None))
    assert checked.constraints == narrow  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("payloads", "message"),
    [
        ({"ca.crt": b"x"}, "carries intermediate.pem and optionally"),
        ({"intermediate.pem": b"junk"}, "intermediate.pem: not a PEM certificate"),
        (
            {"intermediate.pem": b"x" * (64 * 1024 + 1)},
            "intermediate.pem: larger than 65536 bytes",
        ),
    ],
)
def test_payloads_that_do_not_parse_are_refused_by_name(
    payloads: dict[str, bytes], message: str
) -> None:
    with pytest.raises(MaterialError, match=message):
        parse_material(payloads)


def test_a_carried_key_of_another_curve_is_refused(site: Site) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    payloads = {
        "intermediate.pem": certs.pem(site.current),
        "intermediate-key.pem": certs.key_pem(p384),
    }
    with pytest.raises(MaterialError, match=r"intermediate-key\.pem: not an ECDSA secp256r1 key"):
        parse_material(payloads)


def test_a_request_without_name_constraints_is_not_signed(site: Site) -> None:
    csr = certs.build_intermediate_csr(site.pending, SITE, NameConstraints((), ()), NOW)
    with pytest.raises(Exception, match="carries no name constraints"):
        certs.issue_intermediate_from_csr(csr, site.root, site.root_key, NOW)


def test_a_request_is_signed_as_the_appliance_signs_its_own_issuing_ca(site: Site) -> None:
    cert = site.from_request()
    own = site.current
    for ext in (x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage, x509.NameConstraints):
        assert cert.extensions.get_extension_for_class(ext) == (
            own.extensions.get_extension_for_class(ext)
        )
    assert cert.subject == certs.intermediate_subject(SITE, NOW)
    cert.verify_directly_issued_by(site.root)
