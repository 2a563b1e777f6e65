"""A system-update bundle is approved for install, never applied by the server.

Approval re-verifies, consumes the sequence and records the update's version
and digests in one transaction; the server changes nothing else (no policy,
key, trust store or slot). The root-run installer then reports what it wrote.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.bundle_env import ALL_IN, Env, bundle, make_env, trust_doc

from outpost_appliance import sysupdate
from outpost_server.bundles.service import ApprovalRefused, Medium
from outpost_server.errors import Conflict, InvalidInput
from outpost_server.state.bundles import BundleStatus

STICK = Medium(label="UPDATE", serial="1234", device="/dev/sdb1")
FILES = {"root": b"R" * 5000, "kernel": b"K" * 300, "initrd": b"I" * 700}
NAMES = {"root": "root.erofs", "kernel": "vmlinuz", "initrd": "initrd.img"}


def update_doc(version: int = 200) -> dict[str, object]:
    return {
        "format": sysupdate.UPDATE_FORMAT,
        "version": version,
        "files": {
            role: {"name": NAMES[role], "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for role, d in FILES.items()
        },
    }


def update_bundle(seq: int, doc: object = None, *signers: str) -> bytes:
    payload = json.dumps(doc if doc is not None else update_doc()).encode()
    return bundle("system-update", seq, {"system-update.json": payload}, *(signers or ("A", "B")))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    su = [*ALL_IN, "system-update"]
    thresholds = {"ca-material": 2, "enrolment-keys": 1, "policy": 2, "trust-store": 2,
                  "system-update": 2}  # fmt: skip
    return make_env(
        tmp_path, trust=trust_doc({"A": su, "B": su, "C": ["enrolment-keys"]}, thresholds)
    )


def stage(env: Env, data: bytes) -> int:
    out = env.service.intake_files([("update.opb", data)], STICK, "usb-watcher")
    assert out.staged, [r.reason for r in out.rejected]
    return out.staged[0].id


def test_approval_records_the_update_consumes_the_sequence_and_applies_nothing(env: Env) -> None:
    bid = stage(env, update_bundle(4))
    preview = env.service.preview(bid)
    assert preview["system_update"]["version"] == 200
    before = env.snapshot()
    got = env.service.approve(bid, "cli:alice")
    assert got.bundle.status is BundleStatus.APPROVED
    assert got.keys == () and got.policy is None and got.trust is None
    assert got.bundle.result["version"] == 200
    assert got.bundle.result["files"]["root"]["sha256"] == hashlib.sha256(FILES["root"]).hexdigest()
    after = env.snapshot()
    assert after["seqs"] == {"system-update": 4}  # consumed: cannot be approved again
    assert {k: v for k, v in after.items() if k != "seqs"} == {
        k: v for k, v in before.items() if k != "seqs"
    }
    assert env.actions()[-1] == "bundle.approve.install"
    assert "bundle.apply" not in env.actions()

    with pytest.raises(Conflict, match=f"bundle {bid} is approved, not staged"):
        env.service.approve(bid, "cli:alice")
    # the same bytes again on another stick: refused at intake as a replay
    again = env.service.intake_files([("copy.opb", update_bundle(4))], STICK, "usb-watcher")
    assert [r.reason for r in again.rejected] == [
        "replayed: sequence 4 for system-update, already accepted 4"
    ]


def test_the_installer_reports_are_audited_and_only_installed_changes_the_status(env: Env) -> None:
    bid = stage(env, update_bundle(1))
    env.service.approve(bid, "cli:alice")
    b = env.service.record_install(bid, "cli:root", "started", {"slot": "b", "version": 200})
    assert b.status is BundleStatus.APPROVED
    b = env.service.record_install(bid, "cli:root", "failed", {"slot": "b", "reason": "medium"})
    assert b.status is BundleStatus.APPROVED
    b = env.service.record_install(
        bid, "cli:root", "installed", {"slot": "b", "version": 200, "root_sha256": "ab" * 32}
    )
    assert b.status is BundleStatus.INSTALLED
    assert b.result["installed"] == {"slot": "b", "version": 200, "root_sha256": "ab" * 32}
    assert b.result["version"] == 200  # what was approved stays recorded
    assert env.actions()[-3:] == [
        "system.update.started",
        "system.update.failed",
        "system.update.installed",
    ]
    # a re-run after an interruption may report again
    assert (
        env.service.record_install(bid, "cli:root", "installed", {"slot": "b"}).status
        == "installed"
    )
    with pytest.raises(InvalidInput, match="phase must be one of"):
        env.service.record_install(bid, "cli:root", "done", {})


def test_install_reports_for_anything_but_an_approved_update_are_refused(env: Env) -> None:
    staged = stage(env, update_bundle(1))
    with pytest.raises(Conflict, match=f"bundle {staged} is staged, not approved for install"):
        env.service.record_install(staged, "cli:root", "installed", {})
    env.service.reject(staged, "cli:alice", "not this one")
    with pytest.raises(Conflict, match="is rejected, not approved for install"):
        env.service.record_install(staged, "cli:root", "installed", {})
    pol = stage(env, bundle("policy", 1, {"policy.hujson": b"{}"}, "A", "B"))
    with pytest.raises(Conflict, match="is policy, not system-update"):
        env.service.record_install(pol, "cli:root", "installed", {})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "x", "version": 1, "files": {}}, "unknown update format"),
        ({**update_doc(), "version": 0}, "version must be an integer"),
    ],
)
def test_an_authentic_bundle_with_a_bad_update_document_is_refused_at_approval(
    env: Env, doc: dict[str, object], message: str
) -> None:
    bid = stage(env, update_bundle(1, doc))
    before = env.snapshot()
    with pytest.raises(ApprovalRefused, match=f"system-update payload refused: .*{message}"):
        env.service.approve(bid, "cli:alice")
    assert env.snapshot() == before  # sequence not consumed
    assert env.ledger.get(bid).status is BundleStatus.STAGED


def test_below_threshold_or_untrusted_signers_cannot_get_an_update_approved(env: Env) -> None:
    out = env.service.intake_files([("u.opb", update_bundle(1, None, "A"))], STICK, "usb")
    assert [r.reason for r in out.rejected] == [
        "below-threshold: 1 of 2 required signatures for system-update"
    ]
    out = env.service.intake_files([("u.opb", update_bundle(1, None, "C"))], STICK, "usb")
    assert next(r.reason for r in out.rejected).startswith("not-authorised: key")
