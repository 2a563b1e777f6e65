"""The recorded Tailscale control-plane set: no crash, no regression.

Source: /work/shared/conformance/policy (captures from Tailscale's hosted
control plane, via Headscale's testdata; see that directory's README). The
data is read in place and never copied into this repository.

Not every case can pass: the hosted service makes the first-registered of
several HA subnet routers primary, and the recorded topology does not carry
registration order (see `outpost_server.policy.conformance` and
docs/policy.md); two more cases record capture artefacts. The floor below
guards against regressions.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from outpost_server.policy.conformance import run_conformance

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "policy"
MIN_PASSED = 511


def test_every_recorded_case_passes() -> None:
    if not CASES.is_dir():
        pytest.skip(f"policy conformance cases not found at {CASES}")
    out = io.StringIO()
    passed, failed = run_conformance(CASES, out)
    report = out.getvalue()
    assert report.rstrip().splitlines()[-1] == f"{passed} passed, {failed} failed"
    assert ": crashed:" not in report, report
    assert passed >= MIN_PASSED, report
