"""The allocator settings apply on glibc, once per process."""

from __future__ import annotations

import ctypes.util

import pytest

from outpost_server import heap


def test_tune_allocator_applies_on_glibc_and_is_idempotent() -> None:
    name = ctypes.util.find_library("c")
    if name is None or not hasattr(ctypes.CDLL(name), "gnu_get_libc_version"):
        pytest.skip("not glibc")
    assert heap.tune_allocator() is True
    assert heap.tune_allocator() is True
