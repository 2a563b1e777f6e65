"""Approving ca-material bundles: the bundle service with the server's real CA glue.

The CA lives in a temporary data directory (files), the ledger in a temporary
database; the two cannot share a transaction, so these tests pin the order:
CA install first, ledger second, a repeated approval completing idempotently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from tests.bundle_env import NOW, Env, bundle, make_env

from outpost_server.bundles.service import ApprovalRefused, Medium
from outpost_server.ca import OfflineCA, certs
from outpost_server.ca.keystore import ScryptParams
from outpost_server.ca.service import ServerCertificates
from outpost_server.errors import Conflict
from outpost_server.state.bundles import BundleStatus

PASS = b"correct horse battery staple"
FAST = ScryptParams(n=2**10, r=8, p=1)
CA_NOW = dt.datetime.fromtimestamp(NOW, dt.UTC)
NAMES = ["outpost.alpha.internal", "10.1.2.3"]


class Site:
    def __init__(self, tmp: Path) -> None:
        self.env: Env = make_env(tmp)
        data = tmp / "data"
        self.ca, _ = OfflineCA.init(
            data / "ca", site="alpha", names=NAMES, passphrase=PASS, now=CA_NOW, actor="t",
            kdf=FAST,
        )  # fmt: skip
        self.certs = ServerCertificates(
            data / "tls", "alpha", NAMES, self.ca.current_leaf(), None, clock=lambda: CA_NOW
        )
        self.env.service.ca = self.certs
        self.root = x509.load_pem_x509_certificate((self.ca.dir / "root.pem").read_bytes())
        self.root_key = self.ca.unlock_root(PASS)

    def tree(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.ca.dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.ca.dir.rglob("*"))
            if p.is_file() and p.name != ".lock"
        }

    def stage(self, payloads: dict[str, bytes], seq: int = 1) -> int:
        out = self.env.service.intake_files(
            [(f"ca-{seq}.opb", bundle("ca-material", seq, payloads, "A", "B"))],
            Medium(label="USB"),
            "usb",
        )
        assert out.staged, [b.reason for b in out.rejected]
        return out.staged[0].id

    def from_request(self) -> bytes:
        csr_pem, _ = self.ca.request_intermediate(CA_NOW, actor="admin")
        csr = x509.load_pem_x509_csr(csr_pem)
        return certs.pem(certs.issue_intermediate_from_csr(csr, self.root, self.root_key, CA_NOW))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_approving_a_signed_request_installs_it_and_records_serial_and_expiry(site: Site) -> None:
    cert_pem = site.from_request()
    bid = site.stage({"intermediate.pem": cert_pem, "root.pem": certs.pem(site.root)})
    preview = site.env.service.preview(bid)["ca_material"]
    assert preview["key_source"] == "pending request"
    gen = site.certs.files.generation
    applied = site.env.service.approve(bid, "cli:root")
    cert = x509.load_pem_x509_certificate(cert_pem)
    result = applied.bundle.result["intermediate"]
    assert applied.bundle.status is BundleStatus.APPLIED
    assert result["serial"] == certs.serial_hex(cert.serial_number)
    assert result["not_after"] == cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    assert site.certs.files.generation == gen + 1  # the running server adopted the new leaf
    chain = x509.load_pem_x509_certificates(site.certs.files.leaf_chain.read_bytes())
    assert chain[1] == cert
    actions = site.env.actions()
    assert actions[-4:] == [
        "ca.intermediate.import",
        "ca.leaf.renew",
        "ca.crl.sign",
        "bundle.apply",
    ]
    assert site.env.audit[-1][2]["after"]["intermediate"]["serial"] == result["serial"]


def test_approving_a_certificate_with_its_key_carried_installs_that_key(site: Site) -> None:
    key = certs.new_key()
    nc = site.certs.constraints()
    cert = certs.build_intermediate(site.root, site.root_key, key, "alpha", nc, CA_NOW)
    bid = site.stage(
        {"intermediate.pem": certs.pem(cert), "intermediate-key.pem": certs.key_pem(key)}
    )
    applied = site.env.service.approve(bid, "cli:root")
    assert applied.bundle.result["intermediate"]["key_source"] == "carried in bundle"
    assert (site.ca.dir / "intermediate-key.pem").read_bytes() == certs.key_pem(key)


def test_a_refusal_changes_neither_the_ca_nor_the_ledger(site: Site) -> None:
    cert_pem = site.from_request()
    site.ca.request_intermediate(CA_NOW, actor="admin")  # replaces the pending key
    bid = site.stage({"intermediate.pem": cert_pem})
    before_ca, before_db = site.tree(), site.env.snapshot()
    with pytest.raises(ApprovalRefused, match="not the pending request's"):
        site.env.service.approve(bid, "cli:root")
    assert site.tree() == before_ca and site.env.snapshot() == before_db
    assert site.env.ledger.get(bid).status is BundleStatus.STAGED
    assert site.env.actions()[-1] == "bundle.approve.refused"


def test_a_failed_transaction_after_the_install_is_completed_by_approving_again(
    site: Site,
) -> None:
    cert_pem = site.from_request()
    bid = site.stage({"intermediate.pem": cert_pem})

    def fail() -> None:
        raise Conflict("database is locked")

    with pytest.raises(ApprovalRefused, match="apply refused: database is locked"):
        site.env.service.approve(bid, "cli:root", before_commit=fail)
    # The CA is already on the new intermediate; the bundle is still staged, its
    # sequence unspent.
    assert site.ca.status(CA_NOW).intermediate.serial == certs.serial_hex(
        x509.load_pem_x509_certificate(cert_pem).serial_number
    )
    assert site.env.ledger.get(bid).status is BundleStatus.STAGED
    assert "ca-material" not in site.env.ledger.last_seqs()
    tree = site.tree()
    applied = site.env.service.approve(bid, "cli:root")
    assert applied.bundle.status is BundleStatus.APPLIED
    assert applied.bundle.result["intermediate"]["key_source"] == "already installed"
    assert site.tree() == tree  # nothing in the CA changed the second time
    assert site.env.ledger.last_seqs()["ca-material"] == 1


def test_a_disk_error_during_the_install_is_refused_and_leaves_the_bundle_staged(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    bid = site.stage({"intermediate.pem": site.from_request()})

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(site.certs, "install_intermediate", disk_full)
    with pytest.raises(ApprovalRefused, match="install failed: No space left on device"):
        site.env.service.approve(bid, "cli:root")
    assert site.env.ledger.get(bid).status is BundleStatus.STAGED
    assert "ca-material" not in site.env.ledger.last_seqs()
