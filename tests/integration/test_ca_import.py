"""The CA on disk: request a new issuing CA, import the certificate signed offline.

Also the kill safety of the install: a process killed at the journal's
failpoints leaves a CA that the next lock holder finishes, never a key and a
certificate that do not belong together.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from outpost_server.ca import CAError, OfflineCA, certs
from outpost_server.ca.authority import INTER_NEXT, PENDING_KEY
from outpost_server.ca.keystore import ScryptParams
from outpost_server.ca.material import CAMaterial, MaterialError

from .test_ca_authority import snapshot

NOW = dt.datetime(2030, 3, 1, 12, 0, tzinfo=dt.UTC)
PASS = b"correct horse battery staple"
FAST = ScryptParams(n=2**10, r=8, p=1)
NAMES = ["outpost.alpha.internal", "10.1.2.3"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ca(tmp_path: Path) -> OfflineCA:
    ca, _ = OfflineCA.init(
        tmp_path / "data" / "ca", site="alpha", names=NAMES, passphrase=PASS, now=NOW,
        actor="test", kdf=FAST,
    )  # fmt: skip
    return ca


def sign_request(ca: OfflineCA, csr_pem: bytes, now: dt.datetime = NOW) -> x509.Certificate:
    """What the offline station does with the root key from the safe."""
    root = x509.load_pem_x509_certificate((ca.dir / "root.pem").read_bytes())
    root_key = ca.unlock_root(PASS)
    return certs.issue_intermediate_from_csr(x509.load_pem_x509_csr(csr_pem), root, root_key, now)


def served_chain(ca: OfflineCA) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(ca.current_leaf().leaf_chain.read_bytes())


def assert_consistent(ca: OfflineCA, issuing: x509.Certificate) -> None:
    """Key and certificate belong together, and the served leaf chains to the root through it."""
    cert = x509.load_pem_x509_certificate((ca.dir / "intermediate.pem").read_bytes())
    key = serialization.load_pem_private_key((ca.dir / "intermediate-key.pem").read_bytes(), None)
    assert cert == issuing
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    leaf, inter = served_chain(ca)
    assert inter == issuing
    root = x509.load_pem_x509_certificate((ca.dir / "root.pem").read_bytes())
    PolicyBuilder().store(Store([root])).time(NOW).build_server_verifier(
        x509.IPAddress(__import__("ipaddress").ip_address("10.1.2.3"))
    ).verify(leaf, [inter])
    crl = x509.load_der_x509_crl((ca.dir / "crl.der").read_bytes())
    assert crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]


def test_request_keeps_a_pending_key_and_import_installs_it(ca: OfflineCA) -> None:
    csr_pem, events = ca.request_intermediate(NOW, actor="admin")
    assert [e.action for e in events] == ["ca.intermediate.request"]
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert (
        csr.subject.rfc4514_string()
        == "CN=Outpost issuing CA (alpha) 2030-03-01,OU=alpha,O=Outpost"
    )
    key_file = ca.dir / PENDING_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pending = ca.status(NOW).pending_intermediate
    assert pending is not None
    assert pending["key_sha256"] == certs.key_fingerprint(csr.public_key())  # type: ignore[arg-type]

    cert = sign_request(ca, csr_pem)
    old_leaf = ca.current_leaf()
    checked, events = ca.import_intermediate(CAMaterial(cert, None, None), NOW, actor="admin")
    assert checked.key_source == "pending request"
    assert [e.action for e in events] == ["ca.intermediate.import", "ca.leaf.renew", "ca.crl.sign"]
    assert_consistent(ca, cert)
    assert ca.current_leaf().generation == old_leaf.generation + 1
    assert not key_file.exists() and not (ca.dir / INTER_NEXT).exists()
    assert ca.status(NOW).pending_intermediate is None
    assert ca.status(NOW).intermediate.serial == certs.serial_hex(cert.serial_number)

    # Repeating the import (a re-approval) changes nothing and says so.
    before = snapshot(ca.dir)
    checked, events = ca.import_intermediate(CAMaterial(cert, None, None), NOW, actor="admin")
    assert checked.already_installed and [e.action for e in events] == ["ca.intermediate.import"]
    assert "nothing changed" in events[0].detail
    assert snapshot(ca.dir) == before


def test_a_new_request_replaces_the_pending_one(ca: OfflineCA) -> None:
    first, _ = ca.request_intermediate(NOW, actor="admin")
    second, events = ca.request_intermediate(NOW, actor="admin")
    assert "replaces the request of 2030-03-01T12:00" in events[0].detail
    before = snapshot(ca.dir)
    with pytest.raises(MaterialError, match="not the pending request's"):
        ca.import_intermediate(CAMaterial(sign_request(ca, first), None, None), NOW)
    assert snapshot(ca.dir) == before
    ca.import_intermediate(CAMaterial(sign_request(ca, second), None, None), NOW)


def test_a_refused_import_leaves_the_ca_byte_identical(ca: OfflineCA, tmp_path: Path) -> None:
    other, _ = OfflineCA.init(
        tmp_path / "other", site="alpha", names=NAMES, passphrase=PASS, now=NOW, actor="t",
        kdf=FAST,
    )  # fmt: skip
    csr_pem, _ = ca.request_intermediate(NOW, actor="admin")
    foreign = sign_request(other, csr_pem)
    before = snapshot(ca.dir)
    with pytest.raises(MaterialError, match="root rollover is not supported"):
        ca.import_intermediate(CAMaterial(foreign, None, None), NOW)
    assert snapshot(ca.dir) == before


def test_an_unattended_ca_refuses_a_request_nobody_could_sign(tmp_path: Path) -> None:
    ca, _ = OfflineCA.init(
        tmp_path / "ca", site="alpha", names=NAMES, passphrase=None, now=NOW, actor="server"
    )
    with pytest.raises(CAError, match="root key was discarded at unattended init"):
        ca.request_intermediate(NOW, actor="admin")
    assert not (ca.dir / PENDING_KEY).exists()


CHILD = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from cryptography import x509
    from outpost_server.ca import OfflineCA
    from outpost_server.ca.material import CAMaterial
    ca = OfflineCA.open(Path(sys.argv[1]))
    cert = x509.load_pem_x509_certificate(Path(sys.argv[2]).read_bytes())
    ca.import_intermediate(CAMaterial(cert, None, None), dt.datetime.fromisoformat(sys.argv[3]))
    print("finished without being killed")
    """
)


@pytest.mark.parametrize("point", ["ca.install.after-key", "ca.install.after-state"])
def test_an_install_killed_midway_is_finished_by_the_next_lock_holder(
    ca: OfflineCA, tmp_path: Path, point: str
) -> None:
    csr_pem, _ = ca.request_intermediate(NOW, actor="admin")
    cert = sign_request(ca, csr_pem)
    (tmp_path / "cert.pem").write_bytes(certs.pem(cert))
    old = x509.load_pem_x509_certificate((ca.dir / "intermediate.pem").read_bytes())
    env = {**os.environ, "OUTPOST_FAILPOINT": point, "PYTHONPATH": str(REPO / "server")}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(ca.dir), str(tmp_path / "cert.pem"), NOW.isoformat()],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert (ca.dir / INTER_NEXT).exists()  # killed with the journal written
    if point == "ca.install.after-key":
        key = serialization.load_pem_private_key(
            (ca.dir / "intermediate-key.pem").read_bytes(), None
        )
        # The window the journal exists for: the old certificate with the new key.
        assert key.public_key().public_numbers() != old.public_key().public_numbers()  # type: ignore[union-attr]
        assert served_chain(ca)[1] == old  # still serving the old, valid chain
    # Any operation that takes the lock finishes (or tidies up) the install first.
    ca.renew_if_due(NOW)
    assert_consistent(ca, cert)
    assert not (ca.dir / INTER_NEXT).exists() and not (ca.dir / PENDING_KEY).exists()
    assert ca.status(NOW).pending_intermediate is None
    checked, _ = ca.import_intermediate(CAMaterial(cert, None, None), NOW)
    assert checked.already_installed
