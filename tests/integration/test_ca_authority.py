"""The file-based CA: init, renewal, revocation, root key export/removal, bad input."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from outpost_server.ca import CAError, OfflineCA, WrongPassphrase, ensure_tls
from outpost_server.ca.authority import EXPORT_ROOT_KEY, LEAF_RENEW_BEFORE
from outpost_server.ca.keystore import ScryptParams
from outpost_server.errors import Conflict, InvalidInput, NotFound

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PASS = b"correct horse battery staple"
FAST = ScryptParams(n=2**10, r=8, p=1)  # the format is what matters here, not the cost
UNSPECIFIED = "0.0.0.0"  # noqa: S104 - a name, nothing binds to it
NAMES = ["outpost.alpha.internal", "10.1.2.3", "127.0.0.1"]


def make_ca(directory: Path, passphrase: bytes | None = PASS) -> OfflineCA:
    ca, events = OfflineCA.init(
        directory, site="alpha", names=NAMES, passphrase=passphrase, now=NOW, actor="test", kdf=FAST
    )
    assert [e.action for e in events] == [
        "ca.init",
        "ca.intermediate.issue",
        "ca.leaf.renew",
        "ca.crl.sign",
    ]
    return ca


@pytest.fixture
def ca(tmp_path: Path) -> OfflineCA:
    return make_ca(tmp_path / "data" / "ca")


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def chain_of(ca: OfflineCA) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate]:
    files = ca.current_leaf()
    leaf, *inters = x509.load_pem_x509_certificates(files.leaf_chain.read_bytes())
    return leaf, inters, x509.load_pem_x509_certificate(files.root_cert.read_bytes())


def verify(ca: OfflineCA, subject: x509.GeneralName, at: dt.datetime = NOW) -> None:
    leaf, inters, root = chain_of(ca)
    PolicyBuilder().store(Store([root])).time(at).build_server_verifier(subject).verify(
        leaf, inters
    )  # type: ignore[arg-type]


# --------------------------------------------------------------------- init
def test_init_layout_permissions_and_chain(ca: OfflineCA) -> None:
    d = ca.dir
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for private in ["root-key.pem", "intermediate-key.pem", "state.json", "leaves/000001/key.pem"]:
        assert stat.S_IMODE((d / private).stat().st_mode) == 0o600, private
    verify(ca, x509.DNSName("outpost.alpha.internal"))
    verify(ca, x509.IPAddress(ipaddress.ip_address("10.1.2.3")))
    files = ca.current_leaf()
    assert files.generation == 1 and files.serial
    assert not list(d.parent.glob(".ca.init-*"))


def test_root_key_is_encrypted_and_needs_the_passphrase(ca: OfflineCA) -> None:
    pem = (ca.dir / "root-key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    with pytest.raises(WrongPassphrase):
        ca.unlock_root(b"wrong passphrase, clearly")
    root = x509.load_pem_x509_certificate((ca.dir / "root.pem").read_bytes())
    assert ca.unlock_root(PASS).public_key() == root.public_key()


def test_openssl_reads_the_root_key_for_recovery(ca: OfflineCA) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    ok = subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(ca.dir / "root-key.pem"),
            "-passin",
            f"pass:{PASS.decode()}",
            "-noout",
        ],
        capture_output=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(ca.dir / "root-key.pem"),
            "-passin",
            "pass:wrong passphrase!!",
            "-noout",
        ],
        capture_output=True,
        check=False,
    )
    assert bad.returncode != 0


def test_init_twice_is_refused_and_changes_nothing(ca: OfflineCA) -> None:
    before = snapshot(ca.dir)
    with pytest.raises(Conflict, match="already exists"):
        make_ca(ca.dir)
    assert snapshot(ca.dir) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": []}, "at least one"),
        ({"names": [UNSPECIFIED]}, "unspecified"),
        ({"passphrase": b"short"}, "at least"),
        ({"site": ""}, "site name"),
        ({"names": ["8.8.8.8"], "permit_ip": ["10.0.0.0/8"], "permit_dns": ["lan"]}, None),
    ],
)
def test_init_bad_input_creates_nothing(tmp_path: Path, kwargs: dict, match: str | None) -> None:
    args: dict = {
        "site": "alpha",
        "names": NAMES,
        "passphrase": PASS,
        "now": NOW,
        "actor": "t",
        "kdf": FAST,
    }
    args.update(kwargs)
    if match is None:  # a site name outside the operator's ranges is added, not refused
        ca, _ = OfflineCA.init(tmp_path / "ca", **args)
        assert "8.8.8.8/32" in ca.status(NOW).name_constraints
        return
    with pytest.raises(InvalidInput, match=match):
        OfflineCA.init(tmp_path / "ca", **args)
    assert not (tmp_path / "ca").exists()
    assert list(tmp_path.iterdir()) == []


def test_naive_now_is_refused(ca: OfflineCA) -> None:
    with pytest.raises(InvalidInput, match="timezone"):
        ca.renew_if_due(dt.datetime(2026, 3, 1))


def test_open_missing_ca(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="ca init"):
        OfflineCA.open(tmp_path / "nothing")


# ------------------------------------------------------------------ renewal
def test_renewal_swaps_leaf_only_when_due_and_keeps_old_files(ca: OfflineCA) -> None:
    first = ca.current_leaf()
    due = ca.status(NOW).renew_due_at
    assert due is not None
    assert first.not_after is not None and due <= first.not_after - LEAF_RENEW_BEFORE
    # (the CRL, 30 days old by then, is re-signed; the leaf is not yet due)
    assert [e.action for e in ca.renew_if_due(due - dt.timedelta(minutes=1))] == ["ca.crl.sign"]
    assert ca.current_leaf() == first  # still served until the new one is in place

    events = ca.renew_if_due(due)
    assert [e.action for e in events] == ["ca.leaf.renew"]
    second = ca.current_leaf()
    assert second.generation == first.generation + 1
    assert second.serial != first.serial and second.leaf_chain != first.leaf_chain
    assert (
        first.leaf_chain.exists() and first.leaf_key.exists()
    )  # a listener mid-reload still finds them
    verify(ca, x509.DNSName("outpost.alpha.internal"), due)
    assert f"replaces {first.serial}" in events[0].detail

    later = due + dt.timedelta(days=300)
    ca.renew_if_due(later)
    assert not first.leaf_chain.parent.exists()  # pruned after two newer generations
    assert second.leaf_chain.exists()


def test_changed_names_renew_now_and_constraints_apply(ca: OfflineCA) -> None:
    gen = ca.current_leaf().generation
    ca.renew_if_due(NOW, names=["10.1.2.4", "outpost.alpha.internal"])
    assert ca.current_leaf().generation == gen + 1
    verify(ca, x509.IPAddress(ipaddress.ip_address("10.1.2.4")))
    before = snapshot(ca.dir)
    with pytest.raises(InvalidInput, match="name constraints"):
        ca.renew_if_due(NOW, names=["8.8.8.8"])
    assert snapshot(ca.dir) == before


def test_crl_is_resigned_before_next_update(ca: OfflineCA) -> None:
    next_update = x509.load_der_x509_crl(ca.crl_bytes()).next_update_utc
    assert next_update is not None
    assert ca.renew_if_due(next_update - dt.timedelta(days=11)) == []
    events = ca.renew_if_due(next_update - dt.timedelta(days=9))
    assert [e.action for e in events] == ["ca.crl.sign"]
    assert x509.load_der_x509_crl(ca.crl_bytes()).next_update_utc > next_update  # type: ignore[operator]


def test_expired_intermediate_refuses_to_issue(ca: OfflineCA) -> None:
    after = ca.status(NOW).intermediate.not_after + dt.timedelta(days=1)
    with pytest.raises(CAError, match="renew --intermediate"):
        ca.renew(after)


# -------------------------------------------------------------- extra leaves
def test_issue_extra_leaf(ca: OfflineCA) -> None:
    leaf = ca.issue(["printer.alpha.internal", "10.1.2.9"], dt.timedelta(days=90), NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=90)
    assert leaf.events[0].action == "ca.leaf.issue" and leaf.events[0].serial == leaf.serial
    root = x509.load_pem_x509_certificate((ca.dir / "root.pem").read_bytes())
    inter = x509.load_pem_x509_certificates(leaf.chain_pem)[1]
    PolicyBuilder().store(Store([root])).time(NOW).build_server_verifier(
        x509.DNSName("printer.alpha.internal")
    ).verify(cert, [inter])
    assert ca.status(NOW).issued_count == 2


@pytest.mark.parametrize(
    ("names", "days", "match"),
    [
        (["www.example.com"], 30, "name constraints"),
        (["printer.lan"], 398, "lifetime"),
        (["printer.lan"], 0, "lifetime"),
    ],
)
def test_issue_bad_input_changes_nothing(
    ca: OfflineCA, names: list[str], days: int, match: str
) -> None:
    before = snapshot(ca.dir)
    with pytest.raises(InvalidInput, match=match):
        ca.issue(names, dt.timedelta(days=days), NOW)
    assert snapshot(ca.dir) == before


# --------------------------------------------------------------- revocation
def test_revoke_lists_serial_in_crl_signed_by_intermediate(ca: OfflineCA) -> None:
    extra = ca.issue(["printer.lan"], dt.timedelta(days=30), NOW)
    number = (
        x509.load_der_x509_crl(ca.crl_bytes())
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
    )
    events = ca.revoke(extra.serial, "key-compromise", NOW)
    assert [e.action for e in events] == ["ca.revoke", "ca.crl.sign"]
    inter = x509.load_pem_x509_certificate((ca.dir / "intermediate.pem").read_bytes())
    for crl in (
        x509.load_der_x509_crl(ca.crl_bytes("der")),
        x509.load_pem_x509_crl(ca.crl_bytes("pem")),
    ):
        assert crl.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
        assert crl.issuer == inter.subject
        assert crl.get_revoked_certificate_by_serial_number(int(extra.serial, 16)) is not None
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    assert ca.status(NOW).revoked_count == 1
    before = snapshot(ca.dir)
    with pytest.raises(Conflict, match="already revoked"):
        ca.revoke(extra.serial, "superseded", NOW)
    assert snapshot(ca.dir) == before


def test_revoking_the_server_leaf_replaces_it(ca: OfflineCA) -> None:
    old = ca.current_leaf()
    events = ca.revoke(old.serial, "key-compromise", NOW)
    assert [e.action for e in events] == ["ca.revoke", "ca.leaf.renew", "ca.crl.sign"]
    assert ca.current_leaf().serial != old.serial
    assert x509.load_der_x509_crl(ca.crl_bytes()).get_revoked_certificate_by_serial_number(
        int(old.serial, 16)
    )


@pytest.mark.parametrize(
    ("serial", "reason", "exc", "match"),
    [
        ("1234abcd", "superseded", NotFound, "no certificate"),
        ("zz", "superseded", InvalidInput, "not a certificate serial"),
        (None, "because", InvalidInput, "unknown revocation reason"),
        ("inter", "superseded", InvalidInput, "issuing CA itself"),
    ],
)
def test_revoke_bad_input_changes_nothing(
    ca: OfflineCA, serial: str | None, reason: str, exc: type[Exception], match: str
) -> None:
    st = ca.status(NOW)
    target = {None: st.leaf.serial if st.leaf else "", "inter": st.intermediate.serial}.get(
        serial, serial
    )
    before = snapshot(ca.dir)
    with pytest.raises(exc, match=match):
        ca.revoke(str(target), reason, NOW)
    assert snapshot(ca.dir) == before


# ----------------------------------------------------- root key off the box
def test_export_then_remove_root_key_then_renew_intermediate_from_media(
    ca: OfflineCA, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    with pytest.raises(NotFound, match="export-root"):
        ca.remove_root_key(usb, PASS, NOW)
    ca.export_root(usb, NOW, include_key=False)
    with pytest.raises(NotFound):
        ca.remove_root_key(usb, PASS, NOW)
    events = ca.export_root(usb, NOW, include_key=True)
    assert events[0].action == "ca.root.export"
    assert (usb / "outpost-root.pem").read_bytes() == (ca.dir / "root.pem").read_bytes()
    assert x509.load_der_x509_certificate((usb / "outpost-root.cer").read_bytes())

    with pytest.raises(WrongPassphrase):
        ca.remove_root_key(usb, b"wrong passphrase, clearly", NOW)
    assert (ca.dir / "root-key.pem").exists()

    events = ca.remove_root_key(usb, PASS, NOW)
    assert events[0].action == "ca.root.remove-key"
    st = ca.status(NOW)
    assert not st.root_key_present and st.root_key_state.startswith("removed")
    assert st.exports[-1].with_key
    with pytest.raises(CAError):
        ca.remove_root_key(usb, PASS, NOW)
    with pytest.raises(CAError, match="not on this box"):
        ca.export_root(tmp_path / "usb2", NOW, include_key=True)

    old_inter = st.intermediate.serial
    events = ca.renew_intermediate(
        PASS, NOW + dt.timedelta(days=1000), root_key_file=usb / EXPORT_ROOT_KEY
    )
    assert [e.action for e in events] == ["ca.intermediate.issue", "ca.leaf.renew", "ca.crl.sign"]
    st2 = ca.status(NOW + dt.timedelta(days=1000))
    assert st2.intermediate.serial != old_inter and st2.root.serial == st.root.serial
    verify(ca, x509.DNSName("outpost.alpha.internal"), NOW + dt.timedelta(days=1000))


def test_export_does_not_overwrite_other_files(ca: OfflineCA, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / "outpost-root.pem").write_text("something else")
    with pytest.raises(Conflict, match="different content"):
        ca.export_root(usb, NOW, include_key=True)
    assert (usb / "outpost-root.pem").read_text() == "something else"


def test_remove_refuses_a_copy_of_another_key(ca: OfflineCA, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other")
    other.export_root(tmp_path / "usb", NOW, include_key=True)
    with pytest.raises(Conflict, match="not a copy"):
        ca.remove_root_key(tmp_path / "usb", PASS, NOW)
    assert (ca.dir / "root-key.pem").exists()


# ---------------------------------------------------------- server wrapper
def test_ensure_tls_creates_unattended_ca_and_is_idempotent(tmp_path: Path) -> None:
    tls = tmp_path / "data" / "tls"
    files = ensure_tls(tls, "outpost", ["127.0.0.1", UNSPECIFIED, "8.8.8.8"])
    assert files.leaf_chain.exists() and files.leaf_key.exists()
    assert (tls / "root.pem").read_bytes() == files.root_cert.read_bytes()
    ca = OfflineCA.open(tmp_path / "data" / "ca")
    st = ca.status(dt.datetime.now(dt.UTC))
    assert not st.root_key_present and st.root_key_state.startswith("not kept")
    assert UNSPECIFIED not in st.leaf_names
    assert (
        ensure_tls(tls, "outpost", ["127.0.0.1", UNSPECIFIED, "8.8.8.8"]).generation
        == files.generation
    )
    # A name outside the (now fixed) constraints is left out rather than breaking every client.
    again = ensure_tls(tls, "outpost", ["127.0.0.1", "8.8.8.8", "203.0.113.9"])
    assert again.generation == files.generation
