"""Applying a bundle is all or nothing, also when the process is killed -9 inside the transaction.

The apply runs in a child process whose `before_commit` hook sends itself
SIGKILL after every row of the bundle (keys or policy, sequence bump, status)
has been written to the open transaction. The parent then reopens the database
and finds the state exactly as before, the bundle still staged; a second child
without the hook applies all of it.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_server.audit import AuditLog
from outpost_server.bundles.service import Medium
from tests.bundle_env import (
    REPO_ROOT,
    Env,
    bundle,
    key_entry,
    keys_payload,
    make_env,
    policy_bundle,
)

KEY_COUNT = 200  # enough rows that a partial write would be visible

CHILD = """
import json, os, signal, sys
from pathlib import Path
from tests.bundle_env import make_env
env = make_env(Path(sys.argv[1]), install=False)
kill = sys.argv[3] == "kill"
def hook():
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
applied = env.service.approve(int(sys.argv[2]), "cli:root", before_commit=hook)
print(json.dumps({"status": applied.bundle.status.value, "keys": len(applied.keys)}))
"""


def run_child(tmp: Path, bundle_id: int, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp), str(bundle_id), mode],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


def reopen(tmp: Path) -> Env:
    return make_env(tmp, install=False)


def stage(env: Env, data: bytes) -> int:
    out = env.service.intake_files([("b.opb", data)], Medium(label="T"), "usb")
    assert out.staged, [r.reason for r in out.rejected]
    return out.staged[0].id


def test_kill_9_inside_an_enrolment_keys_apply_leaves_all_old_then_all_new(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    entries = [key_entry(f"{i:012x}", f"secret-{i}") for i in range(KEY_COUNT)]
    bid = stage(env, bundle("enrolment-keys", 7, keys_payload(*entries), "C"))
    before = env.snapshot()
    env.store.engine.dispose()

    killed = run_child(tmp_path, bid, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    after_kill = reopen(tmp_path)
    assert after_kill.snapshot() == before  # no key, no sequence, no status change
    assert after_kill.ledger.get(bid).status == "staged"
    after_kill.store.engine.dispose()

    done = run_child(tmp_path, bid, "commit")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "applied", "keys": KEY_COUNT}
    final = reopen(tmp_path)
    assert len(final.store.enrolment_keys()) == KEY_COUNT
    assert final.ledger.last_seqs() == {"enrolment-keys": 7}
    assert final.ledger.get(bid).status == "applied"


def test_kill_9_inside_a_policy_apply_leaves_no_policy_version(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    bid = stage(env, policy_bundle(3, "A", "B"))
    before = env.snapshot()
    env.store.engine.dispose()
    assert run_child(tmp_path, bid, "kill").returncode == -signal.SIGKILL
    again = reopen(tmp_path)
    assert again.snapshot() == before and again.store.current_policy() is None
    again.store.engine.dispose()
    assert run_child(tmp_path, bid, "commit").returncode == 0
    final = reopen(tmp_path)
    assert final.store.current_policy() is not None and final.ledger.last_seqs() == {"policy": 3}


AUDIT_CHILD = """
import hashlib, sys, time
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from outpost_server.audit import AuditLog
key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"crash").digest())
log = AuditLog(Path(sys.argv[1]), appliance_id="crash-test", audit_key=key, checkpoint_every=16)
i = 0
while True:
    i += 1
    details = {"node": f"n{i}", "pad": "x" * (i % 700)}
    log.append("cli:root", "node.delete", details, 1_800_000_000 + i)
    if i == 50:
        print("ready", flush=True)
"""


def test_kill_9_during_audit_appends_leaves_a_log_that_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", AUDIT_CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # mid-stream: appends (write + fsync) are in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"crash").digest())
    log = AuditLog(path, appliance_id="crash-test", audit_key=key, checkpoint_every=16)
    report = log.verify()  # raises AuditCorrupt at the first bad entry if anything is torn
    assert report.entries >= 50 and report.checkpoints >= 3
    entry = log.append(
        "server", "audit.recovered", {"discarded_bytes": log.recovered_tail_bytes}, 1
    )
    assert entry.seq == report.entries + 1 and log.verify().entries == entry.seq
