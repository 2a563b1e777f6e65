"""Audit chain, crash-safe store and signed exports: tampering is found at the exact entry."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_appliance import audit_verify
from outpost_server.audit import AuditCorrupt, AuditLog, ExportSigning, check_export
from outpost_server.audit.chain import GENESIS_HASH, make_entry, verify_chain
from outpost_server.bundles import cbor
from outpost_server.bundles import format as fmt
from outpost_server.errors import InvalidInput

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"audit").digest())
APP = "outpost-test"
T0 = 1_800_000_000


def filled(tmp_path: Path, n: int = 10, every: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log", appliance_id=APP, audit_key=KEY, checkpoint_every=every)
    for i in range(n):
        log.append(
            "alice",
            "node.rename",
            {"before": {"name": f"n{i}"}, "after": {"name": f"m{i}"}},
            T0 + i,
        )
    return log


# -- the chain itself --


def test_entries_link_each_hash_to_the_next_prev_hash(tmp_path: Path) -> None:
    log = filled(tmp_path)
    es = log.entries()
    assert es[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(es))
    assert log.verify().entries == 10


def test_entries_returns_the_requested_inclusive_range(tmp_path: Path) -> None:
    assert [e.seq for e in filled(tmp_path).entries(3, 5)] == [3, 4, 5]


def test_details_with_floats_are_refused() -> None:
    with pytest.raises(InvalidInput, match="details must be"):
        make_entry(1, T0, "a", "x", {"ratio": 0.5}, GENESIS_HASH)


def _chain(n: int = 6) -> list[Any]:
    out = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        e = make_entry(i, T0 + i, "bob", "policy.apply", {"n": i}, prev)
        out.append(e)
        prev = e.hash
    return out


def test_edited_entry_is_named() -> None:
    es = _chain()
    es[3] = type(es[3])(**{**{f: getattr(es[3], f) for f in es[3].__slots__}, "actor": "mallory"})
    with pytest.raises(AuditCorrupt, match=r"^entry 4: hash does not match contents \(edited\)$"):
        verify_chain(es, 1, GENESIS_HASH)


def test_deleted_entry_is_named() -> None:
    es = _chain()
    del es[2]
    with pytest.raises(AuditCorrupt, match=r"^entry 3: missing \(deleted\)$"):
        verify_chain(es, 1, GENESIS_HASH)


def test_reordered_entries_are_named_at_the_first_misplaced_position() -> None:
    es = _chain()
    es[1], es[2] = es[2], es[1]
    with pytest.raises(
        AuditCorrupt, match=r"^entry 2: out of order \(found entry 3 in its place\)$"
    ):
        verify_chain(es, 1, GENESIS_HASH)


def test_rehashed_edit_breaks_the_link_to_the_next_entry() -> None:
    es = _chain()
    e = es[2]
    es[2] = make_entry(e.seq, e.time, "mallory", e.action, e.details, e.prev_hash)
    with pytest.raises(
        AuditCorrupt, match=r"^entry 4: prev_hash does not match the previous entry"
    ):
        verify_chain(es, 1, GENESIS_HASH)


# -- crash safety of the file --


def test_torn_final_record_is_cut_off_and_the_log_still_verifies(tmp_path: Path) -> None:
    log = filled(tmp_path, 5)
    log.close()
    path = tmp_path / "audit.log"
    good = path.read_bytes()
    for cut in (1, 3, 7, 40):  # a crash mid-write leaves a prefix of the next record
        path.write_bytes(good + good[8 : 8 + cut])
        log = AuditLog(path, appliance_id=APP, audit_key=KEY)
        assert log.recovered_tail_bytes == cut
        assert log.verify().entries == 5
        log.append("alice", "after.crash", {}, T0 + 100)
        assert log.verify().entries == 6
        log.close()
        path.write_bytes(good)


def test_final_record_with_bad_checksum_is_treated_as_torn(tmp_path: Path) -> None:
    filled(tmp_path, 3).close()
    path = tmp_path / "audit.log"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    log = AuditLog(path, appliance_id=APP, audit_key=KEY)
    assert log.last_seq == 2 and log.recovered_tail_bytes > 0
    log.verify()


def test_zero_filled_tail_after_a_crash_is_cut_off(tmp_path: Path) -> None:
    filled(tmp_path, 3).close()
    path = tmp_path / "audit.log"
    path.write_bytes(path.read_bytes() + bytes(4096))
    assert AuditLog(path, appliance_id=APP, audit_key=KEY).last_seq == 3


def test_damage_before_the_last_record_is_refused_not_repaired(tmp_path: Path) -> None:
    filled(tmp_path, 3).close()
    path = tmp_path / "audit.log"
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's body
    path.write_bytes(bytes(data))
    with pytest.raises(AuditCorrupt, match="fails its checksum and is not the last"):
        AuditLog(path, appliance_id=APP, audit_key=KEY)
    assert path.read_bytes() == bytes(data)


def test_second_writer_process_is_locked_out(tmp_path: Path) -> None:
    log = filled(tmp_path, 1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            AuditLog(tmp_path / "audit.log", appliance_id=APP, audit_key=KEY)
            os._exit(0)
        except AuditCorrupt:
            os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    log.close()


def test_checkpoint_that_no_longer_matches_rewritten_history_is_detected(tmp_path: Path) -> None:
    log = filled(tmp_path, 8, every=4)
    cps = log._checkpoints
    assert [c.seq for c in cps] == [4, 8]
    forged = type(cps[0])(APP, 4, bytes(32), cps[0].time, cps[0].signature)
    log._checkpoints[0] = forged
    with pytest.raises(AuditCorrupt, match="entry 4: signed checkpoint does not match"):
        log.verify()


# -- exports and outpost-audit-verify --


def _tamper(bundle: bytes, edit: Any) -> bytes:
    frame = fmt.parse_frame(bundle)
    payload = cbor.decode(bundle[frame.payload_offset :], max_depth=16)
    assert isinstance(payload, dict)
    edit(payload)
    return fmt.assemble(frame.manifest_bytes, frame.signature_bytes, [cbor.encode(payload)])


def _export(tmp_path: Path) -> bytes:
    return filled(tmp_path, 10, every=4).export(3, 9, ExportSigning(seq=1, now=T0 + 50))


def _pub() -> bytes:
    return KEY.public_key().public_bytes_raw()


def test_intact_export_verifies_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.opb"
    path.write_bytes(_export(tmp_path))
    assert audit_verify.main([str(path), "--key", _pub().hex()]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK appliance {APP}: entries 3..9 (7) intact, 2 signed checkpoint(s)")


def _fails(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "t.opb"
    path.write_bytes(data)
    assert audit_verify.main([str(path), "--key", _pub().hex()]) == 1
    return capsys.readouterr().out.strip()


@pytest.mark.parametrize("index", range(7))
def test_editing_any_exported_entry_is_reported_at_that_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int
) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["entries"][index]["actor"] = "mallory"

    out = _fails(tmp_path, _tamper(_export(tmp_path), edit), capsys)
    assert out == f"FAIL entry {3 + index}: hash does not match contents (edited)"


@pytest.mark.parametrize("index", range(1, 6))
def test_deleting_any_inner_exported_entry_is_reported_at_that_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int
) -> None:
    out = _fails(tmp_path, _tamper(_export(tmp_path), lambda p: p["entries"].pop(index)), capsys)
    assert out == f"FAIL entry {3 + index}: missing (deleted)"


def test_deleting_the_first_exported_entry_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _fails(tmp_path, _tamper(_export(tmp_path), lambda p: p["entries"].pop(0)), capsys)
    assert out == "FAIL entry 3: missing (deleted)"


@pytest.mark.parametrize("index", range(6))
def test_swapping_adjacent_exported_entries_is_reported_at_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int
) -> None:
    def swap(p: dict[str, Any]) -> None:
        e = p["entries"]
        e[index], e[index + 1] = e[index + 1], e[index]

    out = _fails(tmp_path, _tamper(_export(tmp_path), swap), capsys)
    assert out == f"FAIL entry {3 + index}: out of order (found entry {4 + index} in its place)"


def test_dropping_entries_from_the_end_is_reported_as_truncation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _fails(tmp_path, _tamper(_export(tmp_path), lambda p: p["entries"].pop()), capsys)
    assert out == "FAIL entry 9: missing (export truncated)"


def test_truncated_export_file_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _fails(tmp_path, _export(tmp_path)[:-10], capsys)
    assert out.startswith("FAIL bundle: truncated: payloads declare")


def test_export_signed_by_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.opb"
    path.write_bytes(_export(tmp_path))
    other = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw()
    assert audit_verify.main([str(path), "--key", other.hex()]) == 1
    assert (
        capsys.readouterr().out
        == f"FAIL bundle: unknown-signer: key {fmt.key_id_for(_pub())} is not in the trust store\n"
    )


def test_consistently_rewritten_export_fails_the_signature(tmp_path: Path) -> None:
    data = _export(tmp_path)
    frame = fmt.parse_frame(data)
    p = cbor.decode(data[frame.payload_offset :], max_depth=16)
    assert isinstance(p, dict)
    body = cbor.encode(p)
    m = fmt.decode_manifest(frame.manifest_bytes)
    m2 = fmt.manifest_for(
        m.kind, m.appliance, m.seq, m.created, m.expires, {"audit.cbor": body + b""}
    )
    rebuilt = fmt.assemble(m2.to_cbor(), frame.signature_bytes, [body])
    assert check_export(rebuilt, _pub()).to_seq == 9  # identical content: still valid
    p["checkpoints"] = []
    body = cbor.encode(p)
    m3 = fmt.manifest_for(m.kind, m.appliance, m.seq, m.created, m.expires, {"audit.cbor": body})
    with pytest.raises(AuditCorrupt, match="bundle: bad-signature"):
        check_export(fmt.assemble(m3.to_cbor(), frame.signature_bytes, [body]), _pub())


def test_export_range_outside_the_log_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"outside 1\.\.10"):
        filled(tmp_path).export(5, 11, ExportSigning(seq=1, now=T0))
