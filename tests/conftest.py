"""Shared fixtures: where ../shared is, and a running server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("OUTPOST_SHARED") or REPO.parent / "shared").resolve()


@pytest.fixture
def shared() -> Path:
    d = shared_dir()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (set OUTPOST_SHARED or place ../shared beside the repo)")
    return d
