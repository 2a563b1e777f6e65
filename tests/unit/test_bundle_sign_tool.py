"""`outpost-sign` end to end in a temp dir: keygen, create, sign twice, verify, inspect."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from outpost_appliance import sign

NOW = 1_800_000_000


def test_keygen_create_sign_verify_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = []
    for label in ("alice", "bob"):
        assert sign.main(["keygen", "--out", str(tmp_path / "keys"), "--label", label]) == 0
    for pub in sorted((tmp_path / "keys").glob("*.pub")):
        entry = json.loads(pub.read_text())
        entry["kinds"] = ["policy"]
        keys.append(entry)
        key_file = pub.with_suffix(".key")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    store = {
        "format": "outpost-trust-store-v1",
        "signers": keys,
        "thresholds": {"policy": 2},
        "retired": [],
    }
    (tmp_path / "trust.json").write_text(json.dumps(store))
    (tmp_path / "policy.hujson").write_text("{}")
    bundle = str(tmp_path / "p.opb")
    assert (
        sign.main(
            [
                "create",
                "policy",
                "--appliance",
                "app1",
                "--seq",
                "3",
                "--expires",
                "7d",
                "--created",
                str(NOW),
                "--payload",
                f"policy.hujson={tmp_path / 'policy.hujson'}",
                "--out",
                bundle,
            ]
        )
        == 0
    )
    verify = [
        "verify",
        bundle,
        "--trust",
        str(tmp_path / "trust.json"),
        "--appliance",
        "app1",
        "--now",
        str(NOW),
    ]
    capsys.readouterr()
    assert sign.main(verify) == 1
    assert capsys.readouterr().err.strip() == "REJECTED unsigned: bundle carries no signatures"
    for pub in sorted((tmp_path / "keys").glob("*.pub")):
        assert sign.main(["sign", bundle, "--key", str(pub.with_suffix(".key"))]) == 0
    assert sign.main(verify) == 0
    assert sign.main([*verify, "--last-seq", "3"]) == 1
    assert "REJECTED replayed: sequence 3 for policy" in capsys.readouterr().err
    assert sign.main(["inspect", bundle]) == 0
    out = capsys.readouterr().out
    assert (
        "kind        policy" in out
        and "sequence    3" in out
        and "policy.hujson  2 bytes  sha256 44136fa3" in out
    )


def test_inspect_of_an_invalid_bundle_shows_what_parses_and_the_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.opb").write_bytes(b"\x89OPB\r\n\x1a\n\x01" + b"\x00\x00\x00\x05\x00\x00\x00\x01")
    assert sign.main(["inspect", str(tmp_path / "x.opb")]) == 0
    assert (
        "INVALID     truncated: file ends inside the manifest or signature block"
        in capsys.readouterr().out
    )


def test_durations_are_parsed_strictly() -> None:
    assert sign.parse_duration("7d") == 7 * 86400
    assert sign.parse_duration("90s") == 90
    with pytest.raises(sign.UsageError):
        sign.parse_duration("7 days")


def test_enrolment_key_adds_a_hashed_key_and_prints_the_secret_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from outpost_server.bundles import payloads as pl  # noqa: PLC0415

    keys = tmp_path / "keys.json"
    assert (
        sign.main(
            [
                "enrolment-key",
                "--keys",
                str(keys),
                "--tags",
                "tag:sensor",
                "--reusable",
                "--expires",
                "30d",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out.split()[0]
    assert sign.main(["enrolment-key", "--keys", str(keys), "--user", "alice"]) == 0
    second = capsys.readouterr().out.split()[0]
    parsed = pl.parse_keys({"keys.json": keys.read_bytes()})
    assert [k.reusable for k in parsed] == [True, False]
    for text, entry in zip((first, second), parsed, strict=True):
        _, prefix, secret = text.split("-", 2)
        assert prefix == entry.prefix
        assert hashlib.sha256(secret.encode()).digest() == entry.secret_sha256
        assert secret not in keys.read_text()  # the file never holds a usable key
    assert parsed[0].tags == ("tag:sensor",) and parsed[1].user == "alice"
    assert sign.main(["enrolment-key", "--keys", str(keys)]) == 2
    assert "a key needs --user or --tags" in capsys.readouterr().err
    keys.write_text("{not json")
    assert sign.main(["enrolment-key", "--keys", str(keys), "--user", "bob"]) == 2
    assert keys.read_text() == "{not json"  # a broken file is never overwritten


def _issuing_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root and an issuing CA made elsewhere (cert.pem, key.pem, root.pem)."""
    import datetime as dt  # noqa: PLC0415

    from outpost_server.ca import certs  # noqa: PLC0415
    from outpost_server.ca.names import NameConstraints  # noqa: PLC0415

    now = dt.datetime.fromtimestamp(NOW, dt.UTC)
    root_key, key = certs.new_key(), certs.new_key()
    root = certs.build_root(root_key, "alpha", now)
    cert = certs.build_intermediate(root, root_key, key, "alpha", NameConstraints.build(), now)
    paths = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "root.pem"
    paths[0].write_bytes(certs.pem(cert))
    paths[1].write_bytes(certs.key_pem(key))
    paths[2].write_bytes(certs.pem(root))
    return paths


def test_ca_material_with_a_carried_key_is_packaged_and_inspect_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key, root = _issuing_ca(tmp_path)
    out = tmp_path / "ca.opb"
    argv = ["create", "ca-material", "--appliance", "a1", "--seq", "1", "--expires", "7d"]
    argv += ["--created", str(NOW), "--out", str(out), "--intermediate", str(cert)]
    assert sign.main([*argv, "--intermediate-key", str(key), "--root-cert", str(root)]) == 0
    assert "carries the issuing CA's private key" in capsys.readouterr().err
    assert sign.main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "intermediate-key.pem" in shown and "root.pem" in shown
    assert "key       carried in this bundle" in shown
    assert "WARNING: this bundle carries the issuing CA's private key" in shown


def test_ca_material_refuses_a_key_that_is_not_the_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _, _ = _issuing_ca(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key, _ = _issuing_ca(tmp_path / "other")
    argv = ["create", "ca-material", "--appliance", "a1", "--seq", "1", "--expires", "7d"]
    argv += ["--out", str(tmp_path / "ca.opb"), "--intermediate", str(cert)]
    assert sign.main([*argv, "--intermediate-key", str(other_key)]) == 2
    assert "--intermediate-key is not the key of --intermediate" in capsys.readouterr().err
    assert not (tmp_path / "ca.opb").exists()


def test_ca_material_needs_a_request_or_a_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["create", "ca-material", "--appliance", "a1", "--seq", "1", "--expires", "7d"]
    assert sign.main([*argv, "--out", str(tmp_path / "ca.opb")]) == 2
    assert "ca-material needs --csr REQ --root-cert ROOT --root-key KEY" in capsys.readouterr().err
