"""The server's bundle service on a real database: trust init, staging, approval, atomic apply.

Every rejection the issue lists has its own test here, through the service the
admin API and the USB watcher use: the message is exact, nothing is applied and
the state (policies, keys, trust store, sequences) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.bundle_env import (
    APP,
    KEYS,
    KID,
    NOW,
    POLICY,
    Env,
    bundle,
    key_entry,
    keys_payload,
    make_env,
    policy_bundle,
    trust_bundle,
    trust_doc,
    trust_of,
)

from outpost_server.bundles import format as fmt
from outpost_server.bundles.errors import Check
from outpost_server.bundles.service import ApprovalRefused, Medium
from outpost_server.bundles.trust import TrustStoreError
from outpost_server.errors import Conflict, InvalidInput
from outpost_server.policy.errors import PolicyError
from outpost_server.state.bundles import BundleStatus

STICK = Medium(label="OUTPOST", serial="0781-5581-1234", device="/dev/sdb1")


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def stage_one(env: Env, data: bytes, name: str = "b.opb") -> int:
    out = env.service.intake_files([(name, data)], STICK, "usb-watcher")
    assert [b.file_name for b in out.staged] == [name], [b.reason for b in out.rejected]
    return out.staged[0].id


def refused_at_intake(env: Env, data: bytes) -> str:
    """Intake the file; it must be recorded as rejected and nothing may change."""
    before = env.snapshot()
    out = env.service.intake_files([("x.opb", data)], STICK, "usb-watcher")
    assert out.staged == [] and len(out.rejected) == 1
    rec = out.rejected[0]
    assert rec.status is BundleStatus.REJECTED and rec.kind == "" and rec.seq is None
    assert env.ledger.get(rec.id).reason == rec.reason
    with pytest.raises(Conflict, match="rejected, not staged"):
        env.service.approve(rec.id, "cli:root")  # a rejected bundle can never be applied
    assert env.snapshot() == before
    assert ("usb-watcher", "bundle.rejected") in [(a, b) for a, b, _ in env.audit]
    return rec.reason


# --------------------------------------------------------------------- trust init
def test_first_trust_store_is_installed_once_and_audited(tmp_path: Path) -> None:
    env = make_env(tmp_path, install=False)
    assert env.service.trust() is None
    env.service.init_trust(json.dumps(trust_doc()).encode(), "console:root")
    assert set(trust_of(env).signers) == {KID["A"], KID["B"], KID["C"]}
    assert env.actions() == ["bundles.trust.init"]
    with pytest.raises(Conflict, match="already installed"):
        env.service.init_trust(json.dumps(trust_doc()).encode(), "console:root")
    assert len(env.ledger.trust_history()) == 1 and env.actions() == ["bundles.trust.init"]


def test_a_broken_trust_file_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    env = make_env(tmp_path, install=False)
    with pytest.raises(
        TrustStoreError, match=r"threshold for policy must be 1\.\.1 \(its signers\), got 2"
    ):
        env.service.init_trust(
            json.dumps(
                trust_doc({"A": ["policy", "trust-store"]}, {"policy": 2, "trust-store": 1})
            ).encode(),
            "console:root",
        )
    with pytest.raises(TrustStoreError, match="or it could never be rotated"):
        env.service.init_trust(
            json.dumps(trust_doc({"A": ["policy"]}, {"policy": 1})).encode(), "console:root"
        )
    with pytest.raises(TrustStoreError, match="not JSON"):
        env.service.init_trust(b"{nope", "console:root")
    assert env.service.trust() is None and env.audit == []


def test_without_a_trust_store_everything_is_refused_with_instructions(tmp_path: Path) -> None:
    env = make_env(tmp_path, install=False)
    out = env.service.intake_files([("p.opb", policy_bundle(1, "A", "B"))], STICK, "usb")
    assert [r.reason for r in out.rejected] == [
        "no-trust-store: no trust store is installed; provision one at the console with "
        "`outpost bundles trust init FILE`"
    ]


# ------------------------------------------------------------ staging and applying
def test_a_good_policy_bundle_is_staged_not_applied_then_applied_on_approval(env: Env) -> None:
    before = env.snapshot()
    bid = stage_one(env, policy_bundle(1, "A", "B"))
    staged = env.ledger.get(bid)
    assert (staged.status, staged.kind, staged.seq) == ("staged", "policy", 1)
    assert staged.signers == tuple(sorted((KID["A"], KID["B"])))
    assert (staged.medium_label, staged.medium_serial) == ("OUTPOST", "0781-5581-1234")
    assert env.snapshot() == before  # staging applies nothing
    applied = env.service.approve(bid, "cli:alice")
    assert applied.bundle.status is BundleStatus.APPLIED
    assert applied.bundle.decided_by == "cli:alice"
    cur = env.store.current_policy()
    assert cur is not None and cur.text == POLICY.decode() and cur.author == "cli:alice"
    assert env.policy.policy is not None  # the live policy switched after the commit
    assert env.ledger.last_seqs() == {"policy": 1}
    entry = next(d for _, a, d in env.audit if a == "bundle.apply")
    assert entry["before"] == {"policy_version": None}
    assert entry["after"] == {"policy_version": cur.id}
    with pytest.raises(Conflict, match=f"bundle {bid} is applied, not staged"):
        env.service.approve(bid, "cli:alice")


def test_enrolment_keys_from_a_bundle_work_for_enrolment(env: Env) -> None:
    env.store.create_user("alice")
    payload = keys_payload(
        key_entry("0123456789ab", "s3cret-one", reusable=True),
        key_entry("ba9876543210", "s3cret-two", user="alice", tags=[], ephemeral=True),
    )
    bid = stage_one(env, bundle("enrolment-keys", 3, payload, "C"))
    applied = env.service.approve(bid, "console:root")
    assert [k.prefix for k in applied.keys] == ["0123456789ab", "ba9876543210"]
    key = env.store.check_enrolment_key("opk-0123456789ab-s3cret-one", datetime(2026, 1, 1))
    assert key.tags == ("tag:sensor",) and key.reusable and not key.ephemeral
    other = env.store.check_enrolment_key("opk-ba9876543210-s3cret-two", datetime(2026, 1, 1))
    assert other.user_id == env.store.user_by_name("alice").id and other.ephemeral
    assert env.ledger.last_seqs() == {"enrolment-keys": 3}


def test_keys_for_an_unknown_user_refuse_the_whole_bundle(env: Env) -> None:
    payload = keys_payload(
        key_entry("0123456789ab", "a"), key_entry("ba9876543210", "b", user="nobody", tags=[])
    )
    bid = stage_one(env, bundle("enrolment-keys", 1, payload, "C"))
    before = env.snapshot()
    with pytest.raises(ApprovalRefused, match="no user named 'nobody'"):
        env.service.approve(bid, "cli:root")
    assert env.snapshot() == before  # not even the first, valid key
    assert env.ledger.get(bid).status is BundleStatus.STAGED
    assert env.actions()[-1] == "bundle.approve.refused"


def test_a_key_prefix_already_in_use_refuses_the_whole_bundle(env: Env) -> None:
    existing, _ = env.store.create_enrolment_key(user_id=None, tags=["tag:x"])
    payload = keys_payload(key_entry("0123456789ab", "a"), key_entry(existing.prefix, "b"))
    bid = stage_one(env, bundle("enrolment-keys", 1, payload, "C"))
    before = env.snapshot()
    with pytest.raises(ApprovalRefused, match=f"prefix already exists: {existing.prefix}"):
        env.service.approve(bid, "cli:root")
    assert env.snapshot() == before


def test_a_policy_that_fails_to_compile_is_refused_and_nothing_applied(env: Env) -> None:
    bad = b'{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}'
    bid = stage_one(env, policy_bundle(1, "A", "B", text=bad))
    before = env.snapshot()
    with pytest.raises(ApprovalRefused, match="policy payload refused") as exc:
        env.service.approve(bid, "cli:root")
    assert "group:nope" in str(exc.value)
    assert env.snapshot() == before and env.ledger.get(bid).status is BundleStatus.STAGED
    with pytest.raises(PolicyError):  # the same verdict `outpost policy set` would give
        env.policy.check(bad.decode())


def test_ca_material_is_refused_on_a_server_without_a_ca(env: Env) -> None:
    bid = stage_one(env, bundle("ca-material", 1, {"intermediate.pem": b"-----BEGIN"}, "A", "B"))
    before = env.snapshot()
    with pytest.raises(
        ApprovalRefused, match="no certificate authority to import CA material into"
    ):
        env.service.approve(bid, "cli:root")
    assert env.snapshot() == before


def test_rejecting_needs_a_reason_and_records_it(env: Env) -> None:
    bid = stage_one(env, policy_bundle(1, "A", "B"))
    with pytest.raises(InvalidInput, match="reason is required"):
        env.service.reject(bid, "cli:root", "  ")
    b = env.service.reject(bid, "cli:root", "not during the exercise")
    assert (b.status, b.reason, b.decided_by) == ("rejected", "not during the exercise", "cli:root")
    assert env.ledger.last_seqs() == {}
    with pytest.raises(Conflict):
        env.service.approve(bid, "cli:root")


def test_the_same_file_twice_is_staged_once(env: Env) -> None:
    data = policy_bundle(1, "A", "B")
    bid = stage_one(env, data)
    out = env.service.intake_files([("again.opb", data)], STICK, "usb")
    assert out.staged == [] and out.rejected == []
    assert [(r.name, r.reason) for r in out.ignored] == [
        ("again.opb", f"already staged as bundle {bid}")
    ]


# -------------------------------------------------- approval re-verifies the bytes
def test_approval_refuses_a_bundle_overtaken_by_a_later_sequence(env: Env) -> None:
    first = stage_one(env, policy_bundle(1, "A", "B"), "one.opb")
    second = stage_one(env, policy_bundle(2, "A", "B"), "two.opb")
    env.service.approve(second, "cli:root")
    before = env.snapshot()
    with pytest.raises(ApprovalRefused) as exc:
        env.service.approve(first, "cli:root")
    assert str(exc.value) == (
        f"bundle {first} not applied: replayed: sequence 1 for policy, already accepted 2 "
        f"(bundle {first} is now rejected)"
    )
    assert env.snapshot() == before and env.ledger.get(first).status is BundleStatus.REJECTED


def test_approval_refuses_a_bundle_that_expired_while_staged(env: Env) -> None:
    bid = stage_one(env, policy_bundle(1, "A", "B", expires=NOW + 100))
    env.now[0] = NOW + 100
    before = env.snapshot()
    with pytest.raises(ApprovalRefused, match=f"expired: expired {NOW + 100}, now {NOW + 100}"):
        env.service.approve(bid, "cli:root")
    assert env.snapshot() == before and env.ledger.get(bid).status is BundleStatus.EXPIRED


def test_approval_refuses_when_a_signer_was_retired_since_staging(env: Env) -> None:
    bid = stage_one(
        env, bundle("enrolment-keys", 1, keys_payload(key_entry("0123456789ab", "x")), "C")
    )
    rotate = trust_doc(
        {
            "A": ["ca-material", "enrolment-keys", "policy", "trust-store"],
            "B": ["ca-material", "enrolment-keys", "policy", "trust-store"],
        },
        retired=["C"],
    )
    tid = stage_one(env, trust_bundle(1, rotate, "A", "B"), "rotate.opb")
    env.service.approve(tid, "cli:root")
    assert KID["C"] in trust_of(env).retired
    before = env.snapshot()
    with pytest.raises(
        ApprovalRefused, match=f"unknown-signer: key {KID['C']} is not in the trust"
    ):
        env.service.approve(bid, "cli:root")
    assert env.snapshot() == before and env.ledger.get(bid).status is BundleStatus.STAGED


def test_a_rotation_and_bundles_by_the_new_key_on_one_stick(env: Env) -> None:
    """SPEC §7: the new store is what the rest of the medium is verified against."""
    rotate = trust_doc(
        {
            "A": ["ca-material", "enrolment-keys", "policy", "trust-store"],
            "B": ["ca-material", "enrolment-keys", "policy", "trust-store"],
            "C": ["enrolment-keys"],
            "E": ["policy"],
        },
        {"ca-material": 2, "enrolment-keys": 1, "policy": 1, "trust-store": 2},
    )
    out = env.service.intake_files(
        [
            ("z-policy.opb", policy_bundle(1, "E")),
            ("a-rotate.opb", trust_bundle(1, rotate, "A", "B")),
        ],
        STICK,
        "usb",
    )
    assert [b.kind for b in out.staged] == ["trust-store", "policy"] and out.rejected == []
    trust_id, policy_id = (b.id for b in out.staged)
    with pytest.raises(ApprovalRefused, match=f"unknown-signer: key {KID['E']}"):
        env.service.approve(policy_id, "cli:root")  # the rotation is not approved yet
    env.service.approve(trust_id, "cli:root")
    env.service.approve(policy_id, "cli:root")
    assert env.ledger.last_seqs() == {"trust-store": 1, "policy": 1}
    assert [t.source for t in env.ledger.trust_history()] == ["console-init", f"bundle {trust_id}"]


def test_a_rotation_that_drops_a_signer_without_retiring_it_is_refused(env: Env) -> None:
    rotate = trust_doc(
        {
            "A": ["ca-material", "enrolment-keys", "policy", "trust-store"],
            "B": ["ca-material", "enrolment-keys", "policy", "trust-store"],
        }
    )
    out = env.service.intake_files([("r.opb", trust_bundle(1, rotate, "A", "B"))], STICK, "usb")
    assert [r.reason for r in out.rejected] == [
        f"trust-store update refused: signers removed without being retired: ['{KID['C']}']"
    ]


def test_staged_bundles_past_their_expiry_are_closed_when_listed(env: Env) -> None:
    bid = stage_one(env, policy_bundle(1, "A", "B", expires=NOW + 10))
    env.now[0] = NOW + 11
    assert [b.status for b in env.service.list_bundles()] == ["expired"]
    assert env.ledger.get(bid).reason == f"expired: expired {NOW + 10}, now {NOW + 11}"


# ---------------------------------------------- every refusal the issue lists
def test_unsigned_bundle_is_refused(env: Env) -> None:
    assert refused_at_intake(env, policy_bundle(1)) == "unsigned: bundle carries no signatures"


def test_bundle_signed_by_an_unknown_key_is_refused(env: Env) -> None:
    assert (
        refused_at_intake(env, policy_bundle(1, "A", "D"))
        == f"unknown-signer: key {KID['D']} is not in the trust store"
    )


def test_bundle_below_threshold_is_refused(env: Env) -> None:
    assert (
        refused_at_intake(env, policy_bundle(1, "A"))
        == "below-threshold: 1 of 2 required signatures for policy"
    )


def test_bundle_for_another_appliance_is_refused(env: Env) -> None:
    assert (
        refused_at_intake(env, policy_bundle(1, "A", "B", appliance="outpost-site-8"))
        == "wrong-appliance: bundle is for appliance outpost-site-8"
    )


def test_expired_bundle_is_refused(env: Env) -> None:
    data = policy_bundle(1, "A", "B", created=NOW - 100, expires=NOW - 1)
    assert refused_at_intake(env, data) == f"expired: expired {NOW - 1}, now {NOW}"


def test_replayed_bundle_is_refused(env: Env) -> None:
    data = policy_bundle(1, "A", "B")
    env.service.approve(stage_one(env, data), "cli:root")
    assert refused_at_intake(env, data) == "replayed: sequence 1 for policy, already accepted 1"
    # and a new bundle with an old sequence number, too
    other = policy_bundle(1, "A", "B", text=b'{"acls": []}')
    assert refused_at_intake(env, other) == "replayed: sequence 1 for policy, already accepted 1"


def test_replay_protection_survives_a_restart(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.service.approve(stage_one(env, policy_bundle(5, "A", "B")), "cli:root")
    env.store.engine.dispose()
    again = make_env(tmp_path, install=False)
    assert again.ledger.last_seqs() == {"policy": 5}
    assert (
        refused_at_intake(again, policy_bundle(4, "A", "B"))
        == "replayed: sequence 4 for policy, already accepted 5"
    )


def test_digest_mismatch_is_refused(env: Env) -> None:
    data = bytearray(policy_bundle(1, "A", "B"))
    data[-3] ^= 0x20
    assert (
        refused_at_intake(env, bytes(data))
        == "digest-mismatch: payload policy.hujson does not match its sha256"
    )


def test_truncated_file_is_refused(env: Env) -> None:
    data = policy_bundle(1, "A", "B")
    assert (
        refused_at_intake(env, data[:-10])
        == f"truncated: payloads declare {len(POLICY)} bytes, file has {len(POLICY) - 10}"
    )
    assert refused_at_intake(env, data[:9]) == "truncated: header needs 17 bytes, file has 9"


def _signed_manifest(manifest: bytes) -> bytes:
    sigs = [fmt.Signature(KID[n], KEYS[n].sign(fmt.signed_message(manifest))) for n in ("A", "B")]
    return fmt.assemble(manifest, fmt.encode_signatures(sigs), [])


def test_cbor_bomb_deep_nesting_is_refused(env: Env) -> None:
    assert (
        refused_at_intake(env, _signed_manifest(b"\x81" * 5000 + b"\x00"))
        == "malformed-cbor: nesting deeper than 3"
    )


def test_cbor_bomb_huge_length_is_refused(env: Env) -> None:
    # a byte string claiming 2**64-1 bytes, and an array claiming 2**32 items
    assert (
        refused_at_intake(env, _signed_manifest(b"\x5b" + b"\xff" * 8))
        == "malformed-cbor: declared length 18446744073709551615 exceeds the 0 bytes that remain"
    )
    assert (
        refused_at_intake(env, _signed_manifest(b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00"))
        == "malformed-cbor: declared count 4294967296 exceeds the 0 bytes that remain"
    )


def test_junk_and_symlinks_on_a_medium_are_ignored_and_nothing_applied(
    env: Env, tmp_path: Path
) -> None:
    root = tmp_path / "medium"
    root.mkdir()
    (root / "README.txt").write_text("junk")
    (root / "zeros.opb").write_bytes(bytes(4096))
    (root / "shadow.opb").symlink_to("/etc/shadow")
    (root / "up").symlink_to("..")
    (root / ".hidden.opb").write_bytes(policy_bundle(1, "A", "B"))
    for i in range(40):
        (root / f"junk{i}.bin").write_bytes(hashlib.sha256(bytes([i])).digest())
    before = env.snapshot()
    out = env.service.intake_root(root, STICK, "usb")
    assert out.staged == []
    assert [(r.file_name, r.reason) for r in out.rejected] == [
        ("zeros.opb", "bad-magic: not an Outpost bundle")
    ]
    assert sorted((r.name, r.reason) for r in out.ignored) == [
        ("shadow.opb", "symlink (not followed)"),
        ("up", "symlink (not followed)"),
    ]
    assert env.snapshot() == before


def test_every_step_names_its_actor_in_the_audit_log(env: Env) -> None:
    bid = stage_one(env, policy_bundle(1, "A", "B"))
    env.service.approve(bid, "console:alice")
    assert [(a, act) for a, act, _ in env.audit] == [
        ("console:root", "bundles.trust.init"),
        ("usb-watcher", "bundles.intake"),
        ("usb-watcher", "bundle.staged"),
        ("console:alice", "bundle.apply"),
    ]
    assert APP  # the service verified against this appliance id


# ------------------------------------------------------------------ properties
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bit=st.integers(min_value=0), junk=st.binary(max_size=300))
def test_any_bit_flip_or_random_bytes_is_rejected_and_changes_nothing(
    env: Env, bit: int, junk: bytes
) -> None:
    good = policy_bundle(1, "A", "B")
    flipped = bytearray(good)
    flipped[(bit // 8) % len(good)] ^= 1 << (bit % 8)
    before = env.snapshot()
    out = env.service.intake_files([("f.opb", bytes(flipped)), ("j.opb", junk)], STICK, "usb")
    assert out.staged == [] and len(out.rejected) == 2
    for r in out.rejected:
        assert r.reason.split(":")[0] in {c.value for c in Check}, r.reason
    assert env.snapshot() == before


def test_two_files_with_one_name_in_one_intake_cannot_swap_bytes(env: Env) -> None:
    good, other = policy_bundle(1, "A", "B"), policy_bundle(2, "A", "B")
    out = env.service.intake_files([("a.opb", good), ("a.opb", other)], STICK, "usb")
    [staged] = out.staged
    assert staged.seq == 1 and env.ledger.data(staged.id) == good
    assert [(r.name, r.reason) for r in out.ignored] == [
        ("a.opb", "duplicate file name in one intake")
    ]
