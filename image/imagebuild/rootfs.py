"""The wheelhouse and the root filesystem.

Two cached stages, keyed by the hash of what goes into them:

* base: mmdebstrap of Debian (kernel, systemd, Python, tools). Slow (about
  2 min); its key is the package list, the suite and the setup files.
* root: a copy of the base plus our overlay, the service user and the venv
  installed from the wheelhouse (customize.sh). Its key adds the wheelhouse
  and the overlay, so a code change rebuilds only this stage.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from .sources import debian_sources

SUITE = "bookworm"
PYTHON_VERSION = "3.11"  # bookworm's python3: the wheelhouse must match it
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-timesyncd",
    "systemd-boot",
    "systemd-boot-efi",
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "python3",
    "python3-venv",
    "iproute2",
    "nftables",
    "e2fsprogs",
    "dosfstools",
    "mtools",  # the USB watcher reads FAT sticks in user space, never mounting them
    "procps",
    "kbd",
    "console-setup-linux",  # PSF fonts for the console (Terminus, with box drawing)
)
IMAGE_DIR = Path(__file__).resolve().parent.parent
REPO = IMAGE_DIR.parent


def done_marker(path: Path) -> Path:
    """A stage is complete when its marker exists (beside it: never inside a root)."""
    return path.with_name(path.name + ".complete")


def cached(path: Path) -> bool:
    """True if the stage at `path` finished; a marker left without its directory is dropped."""
    if done_marker(path).exists() and path.is_dir():
        return True
    done_marker(path).unlink(missing_ok=True)
    return False


def log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw: object) -> None:
    log("$ " + " ".join(argv))
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def digest(*parts: bytes | str | Path) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
            for f in files:
                h.update(str(f.relative_to(p if p.is_dir() else p.parent)).encode())
                h.update(f"{f.stat().st_mode & 0o777:o}".encode())
                h.update(f.read_bytes())
        else:
            h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ wheelhouse
def project_sources_digest() -> str:
    parts: list[Path] = [REPO / "pyproject.toml", REPO / "README.md"]
    for d in ("server", "appliance", "tui"):
        parts += sorted(
            p for p in (REPO / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def build_wheelhouse(cache: Path, pip: list[str], epoch: int) -> Path:
    """The project wheel and every dependency as cp311 manylinux/pure wheels.

    pip is this machine's, with its own index configuration; --only-binary
    means nothing is compiled, --platform/--python-version that the wheels are
    for the image's interpreter, not the build machine's.
    """
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = cache / f"wheelhouse-{digest(project_sources_digest(), *deps)}"
    if cached(out):
        log(f"wheelhouse cached: {out}")
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp), str(REPO)], env=env)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    run(
        [
            *pip,
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            "--abi",
            "cp311",
            "--abi",
            "abi3",
            "--abi",
            "none",
            *platform_args,
            "--dest",
            str(tmp),
            *deps,
        ],
        env=env,
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    done_marker(out).touch()
    return out


# ---------------------------------------------------------------------- rootfs
def build_base(cache: Path, epoch: int) -> Path:
    setup = IMAGE_DIR / "overlay" / "etc" / "initramfs-tools" / "hooks" / "outpost"
    out = cache / f"base-{digest(SUITE, *PACKAGES, setup)}"
    if cached(out):
        log(f"base root cached: {out}")
        return out
    sources = cache / "debian.sources"
    sources.write_text(debian_sources(SUITE))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--format=directory",
            '--aptopt=APT::Install-Recommends "false"',
            f"--include={','.join(PACKAGES)}",
            # The EROFS module must be in the initramfs the kernel package builds.
            f'--setup-hook=mkdir -p "$1/etc/initramfs-tools/hooks" && '
            f'install -m 0755 {setup} "$1/etc/initramfs-tools/hooks/outpost"',
            SUITE,
            str(tmp),
            str(sources),
        ],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    done_marker(out).touch()
    return out


def build_root(cache: Path, base: Path, wheelhouse: Path, version: str, epoch: int) -> Path:
    key = digest(
        base.name, wheelhouse.name, IMAGE_DIR / "overlay", IMAGE_DIR / "customize.sh", version
    )
    out = cache / f"root-{key}"
    if cached(out):
        log(f"root cached: {out}")
        return out
    for old in cache.glob("root-*"):  # one root at a time: each is ~900 MB
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted build
    run(["cp", "-a", "--reflink=auto", str(base), str(tmp)])
    run([str(IMAGE_DIR / "customize.sh"), str(tmp), str(wheelhouse), version, str(epoch)])
    tmp.rename(out)
    done_marker(out).touch()
    return out
