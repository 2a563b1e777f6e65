"""`outpost ca ...` end to end on a temporary data directory (no server needed)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from outpost_appliance import cli
from outpost_server.ca import authority
from outpost_server.ca.keystore import ScryptParams

PASS = "correct horse battery staple"  # noqa: S105 - test passphrase


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OUTPOST_DATA_DIR", str(tmp_path / "data"))
    # The real default KDF costs seconds per call; the CLI path is what is under test.
    monkeypatch.setattr(authority, "ROOT_KEY_KDF", ScryptParams(n=2**10, r=8, p=1))
    (tmp_path / "pass").write_text(PASS + "\n")
    return tmp_path


def run(*argv: str) -> int:
    return cli.main(["ca", *argv])


def test_full_lifecycle(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pf = str(data / "pass")
    assert (
        run(
            "init",
            "--site",
            "alpha",
            "--name",
            "outpost.alpha.internal,10.1.2.3",
            "--passphrase-file",
            pf,
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ca.init" in out and "Root SHA-256" in out

    assert run("status") == 0
    out = capsys.readouterr().out
    assert (
        "Root key:         on box, encrypted" in out and "outpost.alpha.internal, 10.1.2.3" in out
    )

    assert run("init", "--site", "alpha", "--name", "10.1.2.3", "--passphrase-file", pf) != 0
    assert "already exists" in capsys.readouterr().err

    assert (
        run("issue", "--name", "printer.alpha.internal", "--days", "30", "--out", str(data / "p"))
        == 0
    )
    assert (data / "p" / "key.pem").stat().st_mode & 0o777 == 0o600
    serial = json.loads(_json("status"))["issued_count"]
    assert serial == 2

    usb = data / "usb"
    assert run("export-root", str(usb), "--with-key") == 0
    assert (usb / "outpost-root-key.pem").exists()
    # Not on a terminal and no --yes: refuses, key stays.
    assert run("remove-root-key", "--export-dir", str(usb), "--passphrase-file", pf) == 1
    assert (data / "data" / "ca" / "root-key.pem").exists()
    wrong = data / "wrong"
    wrong.write_text("definitely not it\n")
    assert (
        run("remove-root-key", "--export-dir", str(usb), "--passphrase-file", str(wrong), "--yes")
        == 2
    )
    assert "wrong passphrase" in capsys.readouterr().err
    assert run("remove-root-key", "--export-dir", str(usb), "--passphrase-file", pf, "--yes") == 0
    assert not (data / "data" / "ca" / "root-key.pem").exists()

    assert run("revoke", "abcdef", "--yes") == 2
    assert "no certificate with serial abcdef" in capsys.readouterr().err
    leaf_serial = json.loads(_json("status"))["leaf"]["serial"]
    assert run("revoke", leaf_serial, "--reason", "key-compromise", "--yes") == 0
    assert "ca.revoke" in capsys.readouterr().out

    assert run("renew") == 0
    assert "Nothing due" in capsys.readouterr().out
    assert run("renew", "--force") == 0
    assert "ca.leaf.renew" in capsys.readouterr().out
    assert (
        run(
            "renew",
            "--intermediate",
            "--root-key",
            str(usb / "outpost-root-key.pem"),
            "--passphrase-file",
            pf,
            "--yes",
        )
        == 0
    )
    assert "ca.intermediate.issue" in capsys.readouterr().out


def test_status_without_ca(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("status") == 2
    assert "outpost ca init" in capsys.readouterr().err


def _json(*argv: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run(*argv, "--json") == 0
    return buf.getvalue()
