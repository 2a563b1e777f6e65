"""Image tests: the built root filesystem (fast, part of `make test`) and a
qemu boot of the disk image (`make image-test`, OUTPOST_IMAGE_BOOT=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "image" / "build"


def _skip_unless_can_build() -> None:
    if os.geteuid() != 0:
        pytest.skip("image tests need root (chroot and file ownership in the built root)")
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (`make image-deps` installs it with apt)")


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The appliance root directory, built once per input hash (cached in .cache/image)."""
    _skip_unless_can_build()
    done = subprocess.run(
        ["nice", "-n", "10", sys.executable, str(REPO / "image" / "build.py"), "rootfs"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"rootfs build failed:\n{done.stderr[-4000:]}")
    root = Path(done.stdout.strip().splitlines()[-1])
    assert (root / "usr/lib/os-release").is_file()
    return root


@pytest.fixture(scope="session")
def built_image() -> dict[str, object]:
    """The disk image `make image` built, with its build record."""
    if os.environ.get("OUTPOST_IMAGE_BOOT", "") in ("", "0"):
        pytest.skip("boot test runs under `make image-test` (OUTPOST_IMAGE_BOOT=1), ~1 min")
    _skip_unless_can_build()
    for tool in ("qemu-system-x86_64", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make qemu-deps`)")
    info_path = BUILD / "build-info.json"
    if not info_path.is_file():
        pytest.fail("no image: run `make image` first (make image-test does)")
    info = json.loads(info_path.read_text())
    info["path"] = BUILD / "outpost.img"
    return info
