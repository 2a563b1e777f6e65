"""Applying a bundle is all or nothing, also when the process is killed -9 inside the transaction.

The apply runs in a child process whose `before_commit` hook sends itself
SIGKILL after every row of the bundle (keys or policy, sequence bump, status)
has been written to the open transaction. The parent then reopens the database
and finds the state exactly as before, the bundle still staged; a second child
without the hook applies all of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

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
